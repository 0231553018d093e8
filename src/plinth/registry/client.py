"""The registry's SDK calls, reached as methods of ``plinth.Client``.

A model version is named by ``(project, name, version)`` or by a URI,
``models:/PROJECT/NAME/VERSION`` or ``models:/PROJECT/NAME@ALIAS``: every call that
reads a version takes either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from plinth.errors import InvalidInput
from plinth.registry import schemas as s
from plinth.registry.uri import ModelRef, check_alias, check_model_name, parse
from plinth.transfer import download_verified

if TYPE_CHECKING:
    from plinth.client import Transport
    from plinth.tracking.client import TrackingCalls


def _seg(value: str) -> str:
    return quote(value, safe="")


def _models(project: str) -> str:
    return f"/api/v1/projects/{_seg(project)}/models"


def _ref(uri_or_project: str, name: str | None, version: int | str | None) -> ModelRef:
    """A version named either way: a URI alone, or project, name and a version number
    or alias."""
    if name is None:
        if version is not None:
            raise InvalidInput("give a model URI alone, or a project, a name and a version")
        return parse(uri_or_project)
    check_model_name(name)
    if isinstance(version, int) or (isinstance(version, str) and version.isdecimal()):
        return ModelRef(uri_or_project, name, version=int(version))
    if isinstance(version, str):
        return ModelRef(uri_or_project, name, alias=check_alias(version))
    raise InvalidInput(f"which version of {name!r}? give a number or an alias")


class RegistryCalls:
    _transport: Transport

    @property
    def _tracking(self) -> TrackingCalls:
        return cast("TrackingCalls", self)  # the same Client: its tracking calls

    # register ---------------------------------------------------------------------------

    def log_model(
        self,
        run_id: str,
        model: Any,
        name: str,
        *,
        input_example: Any = None,
        flavor: str | None = None,
        artifact_path: str = "model",
        description: str = "",
        tags: dict[str, str] | None = None,
        **options: Any,
    ) -> s.ModelVersion:
        """Save ``model`` with its flavor (files and MLmodel.json, the signature
        inferred from ``input_example``), log the files as artifacts of the run under
        ``artifact_path``, and register them as the next version of ``name`` in the
        run's project."""
        from plinth.registry.flavors import save_model

        check_model_name(name)
        scratch = Path(tempfile.mkdtemp(prefix="plinth-model-"))
        try:
            save_model(model, scratch, input_example=input_example, flavor=flavor, **options)
            self._tracking.log_artifacts(run_id, scratch, artifact_path, progress=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return self.register_model(run_id, artifact_path, name, description=description, tags=tags)

    def register_model(
        self,
        run_id: str,
        artifact_path: str,
        name: str,
        *,
        project: str | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> s.ModelVersion:
        """Register files the run logged earlier under ``artifact_path`` (with their
        MLmodel.json) as the next version of ``name`` in the run's project. Sending it
        again registers nothing new: the same version comes back."""
        check_model_name(name)
        project = project or self._tracking.get_run(run_id).project
        body = {
            "run_id": run_id,
            "artifact_path": artifact_path,
            "description": description,
            "tags": tags or {},
        }
        url = f"{_models(project)}/{_seg(name)}/versions"
        return s.ModelVersion(**self._transport.request("POST", url, json=body, retry=True))

    # read -------------------------------------------------------------------------------

    def list_models(self, project: str) -> list[s.RegisteredModel]:
        return [s.RegisteredModel(**m) for m in self._transport.request("GET", _models(project))]

    def get_model(self, project: str, name: str) -> s.RegisteredModel:
        url = f"{_models(project)}/{_seg(check_model_name(name))}"
        return s.RegisteredModel(**self._transport.request("GET", url))

    def list_model_versions(self, project: str, name: str) -> list[s.ModelVersion]:
        url = f"{_models(project)}/{_seg(check_model_name(name))}/versions"
        return [s.ModelVersion(**v) for v in self._transport.request("GET", url)]

    def get_model_version(
        self, uri_or_project: str, name: str | None = None, version: int | str | None = None
    ) -> s.ModelVersion:
        """A version by URI (``models:/churn/churn@champion``) or by project, name and
        version number or alias."""
        ref = _ref(uri_or_project, name, version)
        base = f"{_models(ref.project)}/{_seg(ref.name)}"
        url = f"{base}/aliases/{ref.alias}" if ref.alias else f"{base}/versions/{ref.version}"
        return s.ModelVersion(**self._transport.request("GET", url))

    def model_card(
        self,
        uri_or_project: str,
        name: str | None = None,
        version: int | str | None = None,
        *,
        format: str = "markdown",
    ) -> str:
        """The version's model card, as Markdown or HTML."""
        found = self.get_model_version(uri_or_project, name, version)
        url = f"{_models(found.project)}/{_seg(found.name)}/versions/{found.version}/card"
        return self._transport.text("GET", url, params={"format": format})

    def download_model(
        self,
        uri_or_project: str,
        dest: str | os.PathLike[str],
        name: str | None = None,
        version: int | str | None = None,
        *,
        progress: bool | None = None,
    ) -> s.ModelVersion:
        """Write a version's files (MLmodel.json included) under ``dest``, each checked
        against its digest and the whole against the version's digest."""
        from plinth.registry.manifest import manifest_digest
        from plinth.tracking.schemas import check_artifact_path

        found = self.get_model_version(uri_or_project, name, version)
        base = f"{_models(found.project)}/{_seg(found.name)}/versions/{found.version}"
        files = [s.ModelFile(**f) for f in self._transport.request("GET", f"{base}/files")]
        if manifest_digest(files) != found.digest:
            raise InvalidInput(f"{found.uri}: its files do not match its digest")
        root = Path(dest)
        for f in files:
            check_artifact_path(f.path)
            target = root.joinpath(*f.path.split("/"))
            url = f"{base}/files/{quote(f.path)}"
            download_verified(self._transport, url, f.path, f.digest, f.size, target, progress)
        return found

    # change -----------------------------------------------------------------------------

    def update_model_version(
        self,
        uri_or_project: str,
        name: str | None = None,
        version: int | str | None = None,
        *,
        description: str | None = None,
        status: str | None = None,
        unsafe_pickle: bool | None = None,
        card: dict[str, str] | None = None,
    ) -> s.ModelVersion:
        """Describe, archive (``status="archived"``) or restore a version, or edit its
        card (``intended_use``, ``limitations``, …); ``unsafe_pickle=True`` lets a
        pickled model load in a serving worker, and takes a project admin."""
        found = self.get_model_version(uri_or_project, name, version)
        update = {
            "description": description,
            "status": status,
            "unsafe_pickle": unsafe_pickle,
            "card": card,
        }
        body = {k: v for k, v in update.items() if v is not None}
        url = f"{_models(found.project)}/{_seg(found.name)}/versions/{found.version}"
        return s.ModelVersion(**self._transport.request("PATCH", url, json=body, retry=True))

    def archive_model_version(
        self, uri_or_project: str, name: str | None = None, version: int | str | None = None
    ) -> s.ModelVersion:
        return self.update_model_version(uri_or_project, name, version, status="archived")

    def set_model_version_tag(
        self,
        uri_or_project: str,
        name: str | None = None,
        version: int | str | None = None,
        *,
        key: str,
        value: str,
    ) -> s.ModelVersion:
        found = self.get_model_version(uri_or_project, name, version)
        base = f"{_models(found.project)}/{_seg(found.name)}/versions/{found.version}"
        body = {"value": value}
        url = f"{base}/tags/{_seg(key)}"
        return s.ModelVersion(**self._transport.request("PUT", url, json=body, retry=True))

    def set_model_alias(
        self, project: str, name: str, alias: str, version: int, *, reason: str = ""
    ) -> s.AliasEvent:
        """Point ``alias`` at ``version``; the move is kept with who, when and why."""
        url = f"{_models(project)}/{_seg(check_model_name(name))}/aliases/{check_alias(alias)}"
        body = {"version": version, "reason": reason}
        return s.AliasEvent(**self._transport.request("PUT", url, json=body, retry=True))

    def delete_model_alias(
        self, project: str, name: str, alias: str, *, reason: str = ""
    ) -> s.AliasEvent:
        url = f"{_models(project)}/{_seg(check_model_name(name))}/aliases/{check_alias(alias)}"
        return s.AliasEvent(**self._transport.request("DELETE", url, params={"reason": reason}))

    def model_alias_history(
        self, project: str, name: str, alias: str | None = None
    ) -> list[s.AliasEvent]:
        """Every move of the model's aliases (or of one), newest first."""
        url = f"{_models(project)}/{_seg(check_model_name(name))}/alias-history"
        params = {"alias": check_alias(alias)} if alias else None
        return [s.AliasEvent(**e) for e in self._transport.request("GET", url, params=params)]
