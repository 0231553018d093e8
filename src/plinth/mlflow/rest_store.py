"""A running MLflow tracking server, read through its REST API for ``plinth import
mlflow --from http://host:5000``: the same questions ``SqlStore`` answers from MLflow's
database, and the artifacts downloaded (its proxied artifact API) to a temporary folder
while they are imported.

Only reads: searches (paged to the end, deleted experiments and runs included, so the
report can say what it left out), metric histories, and artifact listings and
downloads. ``MLFLOW_TRACKING_TOKEN`` (or ``--token``) goes as a bearer token, as
MLflow's client sends it.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlparse

import httpx

from plinth.errors import InvalidInput, ServiceUnavailable
from plinth.mlflow.importer import Experiment, Run, Version, local_dir

PAGE = 1000
HISTORY_PAGE = 25_000
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class RestStore:
    """An MLflow tracking server at ``url`` (``http://host:5000``, or with the path it
    is served under)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidInput(f"--from takes an MLflow server's http(s) URL; got {url[:200]!r}")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=TIMEOUT)
        self._runs: dict[str, dict[str, Any]] = {}  # run id → its data (params, tags, keys)
        self._versions: dict[tuple[str, int], dict[str, str]] = {}  # version → its tags
        self._logged_models: dict[str, tuple[str, str]] | None = None  # id → (run, location)
        try:
            self._call("POST", "experiments/search", {"max_results": 1})
        except InvalidInput as exc:
            raise InvalidInput(f"{url} is not an MLflow tracking server: {exc.message}") from None

    def close(self) -> None:
        self.http.close()

    # the MLflow API -----------------------------------------------------------------------

    def _call(
        self, method: str, endpoint: str, body: dict[str, Any], *, optional: bool = False
    ) -> Any:
        """The answer's JSON; with ``optional``, an endpoint the server lacks (MLflow 2
        has no logged models) answers as empty."""
        path = f"/api/2.0/mlflow/{endpoint}"
        try:
            if method == "GET":
                answer = self.http.get(path, params=body)
            else:
                answer = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"the MLflow server did not answer: {exc}") from None
        if optional and answer.status_code == 404 and "ENDPOINT_NOT_FOUND" in answer.text:
            return {}
        if answer.status_code >= 500:
            raise ServiceUnavailable(f"the MLflow server answered {answer.status_code}")
        if answer.status_code != 200:
            raise InvalidInput(f"{endpoint} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def _pages(
        self, method: str, endpoint: str, body: dict[str, Any], key: str, optional: bool = False
    ) -> Iterator[Any]:
        token = None
        while True:
            paged = {**body, **({"page_token": token} if token else {})}
            page = self._call(method, endpoint, paged, optional=optional)
            yield from page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return

    # what SqlStore answers ------------------------------------------------------------------

    def experiments(self) -> list[Experiment]:
        body = {"max_results": PAGE, "view_type": "ALL"}
        return [
            Experiment(
                str(e["experiment_id"]),
                e["name"],
                e.get("artifact_location"),
                e.get("lifecycle_stage") == "deleted",
                _pairs(e.get("tags", [])),
            )
            for e in self._pages("POST", "experiments/search", body, "experiments")
        ]

    def runs(self, experiment_id: str) -> list[Run]:
        body = {"experiment_ids": [experiment_id], "max_results": PAGE, "run_view_type": "ALL"}
        found = []
        for run in self._pages("POST", "runs/search", body, "runs"):
            info, data = run["info"], run.get("data", {})
            self._runs[info["run_id"]] = data
            found.append(
                Run(
                    info["run_id"],
                    experiment_id,
                    info.get("run_name"),
                    info.get("status", ""),
                    _seconds(info.get("start_time")),
                    _seconds(info.get("end_time")),
                    info.get("artifact_uri"),
                    info.get("lifecycle_stage") == "deleted",
                )
            )
        found.sort(key=lambda r: (r.start_time or 0, r.id))
        return found

    def metrics(self, run_id: str) -> list[tuple[str, float, int, float]]:
        points = []
        for key in sorted(m["key"] for m in self._runs.get(run_id, {}).get("metrics", [])):
            body = {"run_id": run_id, "metric_key": key, "max_results": HISTORY_PAGE}
            for p in self._pages("GET", "metrics/get-history", body, "metrics"):
                value = _float(p["value"])
                points.append((key, value, int(p.get("step", 0)), int(p["timestamp"]) / 1000))
        return points

    def params(self, run_id: str) -> dict[str, str]:
        return _pairs(self._runs.get(run_id, {}).get("params", []))

    def tags(self, run_id: str) -> dict[str, str]:
        return _pairs(self._runs.get(run_id, {}).get("tags", []))

    def logged_models(self, run_id: str) -> list[tuple[str, str]]:
        return [(m, location) for m, (owner, location) in self._logged().items() if owner == run_id]

    def logged_model_runs(self) -> dict[str, str]:
        return {m: owner for m, (owner, _) in self._logged().items()}

    def _logged(self) -> dict[str, tuple[str, str]]:
        if self._logged_models is None:
            experiments = [e.id for e in self.experiments() if not e.deleted]
            found: dict[str, tuple[str, str]] = {}
            for start in range(0, len(experiments), 100):
                body = {"experiment_ids": experiments[start : start + 100], "max_results": 100}
                models = self._pages("POST", "logged-models/search", body, "models", True)
                for model in models:
                    info = model["info"]
                    if info.get("source_run_id"):
                        found[info["model_id"]] = (info["source_run_id"], info["artifact_uri"])
            self._logged_models = found
        return self._logged_models

    def versions(self) -> list[Version]:
        found = []
        body = {"max_results": PAGE}
        for v in self._pages("GET", "model-versions/search", body, "model_versions"):
            number = int(v["version"])
            self._versions[(v["name"], number)] = _pairs(v.get("tags", []))
            found.append(
                Version(
                    v["name"],
                    number,
                    v.get("source", ""),
                    v.get("run_id") or None,
                    v.get("current_stage", ""),
                    v.get("description", ""),
                    v.get("status", ""),
                )
            )
        found.sort(key=lambda v: (v.name, v.version))
        return found

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return self._versions.get((name, version), {})

    def aliases(self) -> list[tuple[str, str, int]]:
        found = []
        body = {"max_results": PAGE}
        for model in self._pages("GET", "registered-models/search", body, "registered_models"):
            for alias in model.get("aliases", []):
                found.append((model["name"], alias["alias"], int(alias["version"])))
        return found

    def model_tags(self) -> dict[str, dict[str, str]]:
        body = {"max_results": PAGE}
        return {
            model["name"]: _pairs(model.get("tags", []))
            for model in self._pages("GET", "registered-models/search", body, "registered_models")
            if model.get("tags")
        }

    # artifacts ----------------------------------------------------------------------------

    @contextmanager
    def folder(self, uri: str, root: Path | None, layout: str) -> Iterator[Path | None]:
        """The artifacts at ``uri``: a local folder as it is, or those the server
        proxies (``mlflow-artifacts:/…``) downloaded to a temporary one."""
        local = local_dir(uri, root, layout)
        parsed = urlparse(uri)
        if local is not None or parsed.scheme != "mlflow-artifacts":
            yield local
            return
        where = Path(tempfile.mkdtemp(prefix="plinth-mlflow-import-"))
        try:
            self._download(parsed.path.strip("/"), where)
            yield where
        finally:
            shutil.rmtree(where, ignore_errors=True)

    def _download(self, remote: str, where: Path) -> None:
        """The files under ``remote`` (one listing per folder, as the server answers)
        streamed into ``where``."""
        artifacts = "/api/2.0/mlflow-artifacts/artifacts"
        with self._answer(artifacts, {"path": remote}) as listing:
            entries = json.loads(listing.read()).get("files", [])
        for entry in entries:
            name = PurePosixPath(entry["path"]).name  # one level: the server names children
            if not name or name in (".", "..") or "\\" in name:
                raise InvalidInput(f"the server listed an artifact named {entry['path']!r}")
            inner = f"{remote}/{name}"
            if entry.get("is_dir"):
                (where / name).mkdir()
                self._download(inner, where / name)
                continue
            with (
                self._answer(f"{artifacts}/{quote(inner)}") as answer,
                open(where / name, "wb") as out,
            ):
                for chunk in answer.iter_bytes(1 << 20):
                    out.write(chunk)

    @contextmanager
    def _answer(self, path: str, params: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """A GET's streamed answer; a server that does not answer is a 503, a refusal
        a clear error naming what was asked."""
        try:
            with self.http.stream("GET", path, params=params) as answer:
                if answer.status_code != 200:
                    raise InvalidInput(f"{path[:200]} answered {answer.status_code}")
                yield answer
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"the MLflow server did not answer: {exc}") from None


def _pairs(items: list[dict[str, Any]]) -> dict[str, str]:
    return {p["key"]: p.get("value", "") for p in items}


def _seconds(ms: Any) -> float | None:
    return None if ms in (None, "") else int(ms) / 1000


def _float(value: Any) -> float:
    if isinstance(value, str):  # NaN and the infinities, as MLflow's server writes them
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(
            value, float(value)
        )
    return float(value)
