"""Tracking's SDK calls, reached as methods of ``plinth.Client``."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

from plinth.core.blobs import CHUNK, file_digest
from plinth.errors import BlobMissing, InvalidInput
from plinth.tracking import history
from plinth.tracking import schemas as s
from plinth.transfer import Resent, download_verified, transfer_progress

if TYPE_CHECKING:
    import numpy as np

    from plinth.client import Transport


class TrackingCalls:
    _transport: Transport

    # runs -----------------------------------------------------------------------------

    def create_run(
        self,
        project: str,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        parent_id: str | None = None,
        *,
        id: str | None = None,
        start_time: float | None = None,
        batch: tuple[str, list[dict[str, Any]]] | None = None,
        status: str = "running",
        end_time: float | None = None,
    ) -> s.CreatedRun:
        """Create a run. Its ``id`` is chosen here (unless given), so the call is safe
        to retry: the same id again returns the run it made. A ``parent_id`` nests it
        under another run of the same project; ``start_time`` (seconds since the epoch)
        dates a run brought in from elsewhere. ``batch`` (an id and columnar series,
        within one batch's limits) is applied with the create, once by its id; an
        ended ``status`` (with ``end_time``, or now) makes the run's whole life one
        request."""
        body: dict[str, Any] = {
            "id": id or uuid.uuid4().hex,
            "project": project,
            "name": name,
            "params": params or {},
            "tags": tags or {},
            "parent_id": parent_id,
        }
        if start_time is not None:
            body["start_time"] = start_time
        if batch is not None:
            body["batch"] = {"batch_id": batch[0], "metrics": batch[1]}
        if status != "running":
            body["status"] = status
            if end_time is not None:
                body["end_time"] = end_time
        answer = self._transport.request("POST", "/api/v1/runs", json=body, retry=True)
        made = s.CreatedRun(**answer)
        if batch is not None and made.batch != batch[0]:
            # A server from before creates carried batches made the run without it
            self.send_batch(made.id, batch[0], batch[1])
        if status != "running" and made.status == "running":  # nor ended it
            return self.end_run(made.id, status, end_time=end_time)
        return made

    def get_run(self, run_id: str) -> s.Run:
        return s.Run(**self._transport.request("GET", f"/api/v1/runs/{_seg(run_id)}"))

    def end_run(
        self,
        run_id: str,
        status: str = "finished",
        *,
        last_batch: tuple[str, list[dict[str, Any]]] | None = None,
        end_time: float | None = None,
    ) -> s.EndedRun:
        """End a run. ``last_batch`` (an id and columnar series, within one batch's
        limits) is applied with the end, in the same transaction, once by its id;
        ``end_time`` (seconds since the epoch) dates the end of an imported run."""
        body: dict[str, Any] = {"status": status}
        if end_time is not None:
            body["end_time"] = end_time
        if last_batch is not None:
            body["batch"] = {"batch_id": last_batch[0], "metrics": last_batch[1]}
        url = f"/api/v1/runs/{_seg(run_id)}"
        ended = s.EndedRun(**self._transport.request("PATCH", url, json=body, retry=True))
        if last_batch is not None and ended.batch != last_batch[0]:
            # A server from before ends carried batches ended the run and dropped the
            # batch: run again, send it (once, by its id), end again.
            self.resume_run(run_id)
            self.send_batch(run_id, last_batch[0], last_batch[1])
            again = {"status": status}
            ended = s.EndedRun(**self._transport.request("PATCH", url, json=again, retry=True))
        return ended

    def resume_run(self, run_id: str) -> s.ResumedRun:
        """Set a run running again, whatever state it ended in (as MLflow does)."""
        url = f"/api/v1/runs/{_seg(run_id)}/resume"
        return s.ResumedRun(**self._transport.request("POST", url, retry=True))

    def delete_run(self, run_id: str) -> s.Run:
        """Delete a run: kept with all it logged, left out of searches, restorable
        with ``restore_run``."""
        return s.Run(**self._transport.request("DELETE", f"/api/v1/runs/{_seg(run_id)}"))

    def restore_run(self, run_id: str) -> s.Run:
        url = f"/api/v1/runs/{_seg(run_id)}/restore"
        return s.Run(**self._transport.request("POST", url, retry=True))

    def heartbeat(self, run_id: str) -> None:
        self._transport.request("POST", f"/api/v1/runs/{_seg(run_id)}/heartbeat", retry=True)

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Mapping[str, Any]] = (),
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        batch_id: str | None = None,
    ) -> bool:
        """Send one batch; retried safely. Returns False if it was a repeat.

        ``metrics`` are points ``{"key", "value", "step", "timestamp"}`` (step defaults
        to 0, timestamp to now). A batch within the server's limits (``schemas.py``:
        10,000 points, 1,000 series, params or tags) is all-or-nothing; a larger one
        is split into chunks that are each all-or-nothing and each applied once.
        """
        now = time.time()
        points = [
            (m["key"], m["value"], m.get("step", 0), m.get("timestamp", now)) for m in metrics
        ]
        return self.send_batch(
            run_id, batch_id or uuid.uuid4().hex, to_series(points), params, tags
        )

    def send_batch(
        self,
        run_id: str,
        batch_id: str,
        series: list[dict[str, Any]],
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> bool:
        """``log_batch`` with the metrics already in the wire's columnar form.

        A batch over the limits is sent as several, applied chunk by chunk: each
        chunk has an id of its own, derived from ``batch_id``, so resending the whole
        batch applies none of its chunks twice.
        """
        applied = False
        for i, (chunk_series, chunk_params, chunk_tags) in enumerate(
            split_batch(series, params or {}, tags or {})
        ):
            body = {
                "batch_id": chunk_id(batch_id, i),
                "metrics": chunk_series,
                "params": chunk_params,
                "tags": chunk_tags,
            }
            result = self._transport.request(
                "POST", f"/api/v1/runs/{_seg(run_id)}/batches", json=body, retry=True
            )
            applied = bool(result["applied"]) or applied
        return applied

    def search_runs(
        self,
        project: str,
        filter: str = "",
        order_by: str = "",
        limit: int = 100,
        page_token: str | None = None,
        lifecycle: str = "active",
    ) -> s.RunPage:
        """Runs of ``project`` matching ``filter``, in ``order_by`` order; deleted runs
        only with ``lifecycle="deleted"`` (or ``"all"``)."""
        query = {
            "project": project,
            "filter": filter,
            "order_by": order_by,
            "limit": limit,
            "page_token": page_token,
            "lifecycle": lifecycle,
        }
        data = self._transport.request("POST", "/api/v1/runs/search", json=query, retry=True)
        return s.RunPage(**data)

    @overload
    def metric_history(
        self,
        run_id: str,
        key: str,
        *,
        max_points: int | None = None,
        as_: Literal["list"] = "list",
    ) -> history.HistoryPoints: ...
    @overload
    def metric_history(
        self, run_id: str, key: str, *, max_points: int | None = None, as_: Literal["numpy"]
    ) -> np.ndarray: ...
    @overload
    def metric_history(
        self, run_id: str, key: str, *, max_points: int | None = None, as_: Literal["pandas"]
    ) -> Any: ...
    def metric_history(
        self, run_id: str, key: str, *, max_points: int | None = None, as_: str = "list"
    ) -> Any:
        """A metric's points by step, then time, sent as binary columns.

        ``as_="list"``: a sequence of ``HistoryPoint(step, timestamp, value)`` that also
        holds the columns (``.steps``, ``.timestamps``, ``.values``); ``"numpy"``: a
        structured array with fields ``step``, ``timestamp`` and ``value``; ``"pandas"``:
        a DataFrame with those columns. ``max_points`` thins the history on the server
        (2 to 100,000; see ``history.downsample`` for what it keeps).
        """
        history.check_shape(as_)
        if max_points is not None:
            history.check_max_points(max_points)
        params: dict[str, Any] = {"key": key}
        if max_points is not None:
            params["max_points"] = max_points
        url = f"/api/v1/runs/{_seg(run_id)}/metrics"
        headers = {"Accept": history.MEDIA_TYPE}
        with self._transport.stream("GET", url, params=params, headers=headers) as response:
            body = response.read()
        return history.shaped(history.from_binary(body), as_)

    # artifacts ------------------------------------------------------------------------

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[s.Artifact]:
        """A run's artifacts, or only those under ``path/`` when it is given."""
        params = {"path": path} if path else None
        url = f"/api/v1/runs/{_seg(run_id)}/artifacts"
        return [s.Artifact(**a) for a in self._transport.request("GET", url, params=params)]

    def log_artifact(
        self,
        run_id: str,
        local_path: str | os.PathLike[str],
        name: str | None = None,
        *,
        progress: bool | None = None,
    ) -> list[s.Artifact]:
        """Upload a file, or every file under a directory, as artifacts of a run.

        Without ``name`` a file or directory keeps its own name (that of the folder
        itself for ``.`` or ``out/``). Content the store already holds is not sent
        again: the file is hashed here and only named on the server when its digest is
        known there.
        """
        local = Path(local_path)
        if not local.exists():
            raise InvalidInput(f"no such file or directory: {local}")
        base = s.check_artifact_path(name.rstrip("/") if name else _own_name(local))
        pairs = _files_under(local, f"{base}/") if local.is_dir() else [(local, base)]
        return self._upload_all(run_id, pairs, progress)

    def log_artifacts(
        self,
        run_id: str,
        local_dir: str | os.PathLike[str],
        name: str | None = None,
        *,
        progress: bool | None = None,
    ) -> list[s.Artifact]:
        """Upload the files a directory holds, under ``name/`` or at the top (as
        MLflow's ``log_artifacts`` does; ``log_artifact`` keeps the folder's name)."""
        local = Path(local_dir)
        if not local.is_dir():
            raise InvalidInput(f"no such directory: {local}")
        prefix = f"{s.check_artifact_path(name.rstrip('/'))}/" if name else ""
        return self._upload_all(run_id, _files_under(local, prefix), progress)

    def _upload_all(
        self, run_id: str, pairs: list[tuple[Path, str]], progress: bool | None
    ) -> list[s.Artifact]:
        return [self._upload_one(run_id, path, name, progress) for path, name in pairs]

    def register_artifact(self, run_id: str, path: str, digest: str, size: int) -> s.Artifact:
        """Name content this run's project already holds (``BlobMissing``: upload it)."""
        body = {"path": path, "digest": digest, "size": size}
        url = f"/api/v1/runs/{_seg(run_id)}/artifacts"
        return s.Artifact(**self._transport.request("POST", url, json=body, retry=True))

    def _upload_one(self, run_id: str, path: Path, name: str, progress: bool | None) -> s.Artifact:
        s.check_artifact_path(name)
        size = path.stat().st_size
        with transfer_progress(f"hashing {name}", size, progress) as advance:
            info = file_digest(path, advance)
        try:
            return self.register_artifact(run_id, name, info.digest, info.size)
        except BlobMissing:
            pass
        url = f"/api/v1/runs/{_seg(run_id)}/artifacts"
        with transfer_progress(f"uploading {name}", size, progress) as advance:
            sent = Resent(advance)

            def chunks() -> Iterator[bytes]:  # read anew if it must be sent again
                counted = sent.again()
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        counted(len(chunk))
                        yield chunk

            data = self._transport.request(
                "PUT",
                f"{url}/{quote(name)}",
                content=chunks,
                headers={
                    "X-Plinth-Digest": info.digest,
                    "Content-Length": str(size),
                    "Content-Type": "application/octet-stream",
                },
            )
        return s.Artifact(**data)

    def download_artifact(
        self, run_id: str, name: str, dest: str | os.PathLike[str], *, progress: bool | None = None
    ) -> Path:
        """Download one artifact, or every artifact under ``name/``, into ``dest``.

        Each file is written to a temp file, checked against its digest, then renamed:
        a failed or corrupt download leaves nothing behind.
        """
        s.check_artifact_path(name)
        matches = [
            a
            for a in self.list_artifacts(run_id)
            if a.path == name or a.path.startswith(name + "/")
        ]
        if not matches:
            from plinth.errors import NotFound

            raise NotFound(f"run {run_id} has no artifact {name!r}")
        dest = Path(dest)
        root = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        for artifact in matches:
            target = dest.joinpath(*artifact.path.removeprefix(root).split("/"))
            self._download_one(run_id, artifact, target, progress)
        return dest / name.rsplit("/", 1)[-1]

    def _download_one(
        self, run_id: str, artifact: s.Artifact, target: Path, progress: bool | None
    ) -> None:
        s.check_artifact_path(artifact.path)
        url = f"/api/v1/runs/{_seg(run_id)}/artifacts/{quote(artifact.path)}"
        download_verified(
            self._transport, url, artifact.path, artifact.digest, artifact.size, target, progress
        )


def _own_name(local: Path) -> str:
    """The name a path has as the user sees it: ``.`` is the folder they are in."""
    name = Path(os.path.abspath(local)).name
    if not name:
        raise InvalidInput(f"{local} has no name of its own to log it under; pass a name")
    return name


def _files_under(folder: Path, prefix: str) -> list[tuple[Path, str]]:
    """Each file under a folder, with its artifact name: ``prefix`` + its relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [(p, prefix + p.relative_to(folder).as_posix()) for p in files]


def to_series(points: Iterable[tuple[str, float, int, float]]) -> list[dict[str, Any]]:
    """Points ``(key, value, step, timestamp)`` as one column-wise series per key."""
    columns: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for key, value, step, ts in points:
        if key not in columns:
            columns[key] = ([], [], [])
        steps, values, stamps = columns[key]
        steps.append(step)
        values.append(value)
        stamps.append(ts)
    return [
        {"key": k, "steps": c[0], "values": c[1], "timestamps": c[2]} for k, c in columns.items()
    ]


Chunk = tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]


def split_batch(
    series: list[dict[str, Any]], params: dict[str, Any], tags: dict[str, Any]
) -> list[Chunk]:
    """A batch's content as chunks within the server's limits: the first chunk takes
    the first slice of metrics, of params and of tags, and so on. A batch within the
    limits is one chunk, as it was."""
    metric_chunks = _series_chunks(series, s.MAX_BATCH_POINTS, s.MAX_BATCH_SERIES)
    param_chunks = _dict_chunks(params, s.MAX_BATCH_PARAMS)
    tag_chunks = _dict_chunks(tags, s.MAX_BATCH_TAGS)
    count = max(len(metric_chunks), len(param_chunks), len(tag_chunks), 1)
    return [
        (_nth(metric_chunks, i, []), _nth(param_chunks, i, {}), _nth(tag_chunks, i, {}))
        for i in range(count)
    ]


def chunk_id(batch_id: str, index: int) -> str:
    """The id of a batch's ``index``-th chunk: the batch's own for the first, so a
    batch that needs no split is sent as it always was; derived for the others."""
    if index == 0:
        return batch_id
    return hashlib.sha256(f"{batch_id}/{index}".encode()).hexdigest()[:32]


def _series_chunks(
    series: list[dict[str, Any]], max_points: int, max_series: int
) -> list[list[dict[str, Any]]]:
    """Columnar series cut into chunks of at most ``max_points`` points and
    ``max_series`` series; a long series is cut into slices."""
    chunks: list[list[dict[str, Any]]] = []
    chunk: list[dict[str, Any]] = []
    room = max_points
    for one in series:
        start, total = 0, len(one["steps"])
        while True:
            if len(chunk) == max_series or (room == 0 and total > start):
                chunks.append(chunk)
                chunk, room = [], max_points
            take = min(room, total - start)
            cut = slice(start, start + take)
            chunk.append({"key": one["key"], **{c: one[c][cut] for c in _COLUMNS}})
            start, room = start + take, room - take
            if start == total:
                break
    if chunk:
        chunks.append(chunk)
    return chunks


_COLUMNS = ("steps", "values", "timestamps")


def _dict_chunks(items: dict[str, Any], size: int) -> list[dict[str, Any]]:
    pairs = list(items.items())
    return [dict(pairs[i : i + size]) for i in range(0, len(pairs), size)]


def _nth(chunks: list[Any], index: int, empty: Any) -> Any:
    return chunks[index] if index < len(chunks) else empty


def _seg(value: str) -> str:
    return quote(value, safe="")
