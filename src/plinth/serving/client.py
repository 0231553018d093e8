"""The deployments' SDK calls, reached as methods of ``plinth.Client``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from plinth.serving import schemas as s

if TYPE_CHECKING:
    from plinth.client import Transport


def _deployments(project: str, name: str | None = None) -> str:
    base = f"/api/v1/projects/{quote(project, safe='')}/deployments"
    return base if name is None else f"{base}/{quote(name, safe='')}"


class DeploymentCalls:
    _transport: Transport

    def create_deployment(
        self,
        project: str,
        name: str,
        model: str,
        *,
        replicas: int = 1,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        port: int | None = None,
        runtime: str = "local",
        record_sample: float = 0.0,
        device: str = "auto",
        reason: str = "",
    ) -> s.Deployment:
        """Serve ``model`` (``models:/PROJECT/NAME@ALIAS`` or ``/VERSION``) as ``name``;
        ``device``: where a pytorch model runs in each replica (auto, cpu, cuda, cuda:N)."""
        body = s.DeploymentCreate(
            name=name,
            model=model,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            port=port,
            runtime=runtime,
            record_sample=record_sample,
            device=device,
            reason=reason,
        ).model_dump()
        return s.Deployment(**self._transport.request("POST", _deployments(project), json=body))

    def update_deployment(self, project: str, name: str, **changes: Any) -> s.Deployment:
        """``canary=URI, weight=10``, ``shadow=URI`` (``shadow_off=True``),
        ``min_replicas`` / ``max_replicas``, or ``record_sample`` (the share of
        predictions recorded); ``reason`` is kept in the history."""
        url = _deployments(project, name)  # the server checks them (InvalidInput)
        return s.Deployment(**self._transport.request("PATCH", url, json=changes))

    def promote_deployment(self, project: str, name: str, *, reason: str = "") -> s.Deployment:
        url = f"{_deployments(project, name)}/promote"
        return s.Deployment(**self._transport.request("POST", url, json={"reason": reason}))

    def rollback_deployment(self, project: str, name: str, *, reason: str = "") -> s.Deployment:
        url = f"{_deployments(project, name)}/rollback"
        return s.Deployment(**self._transport.request("POST", url, json={"reason": reason}))

    def scale_deployment(
        self, project: str, name: str, replicas: int, *, reason: str = ""
    ) -> s.Deployment:
        url = f"{_deployments(project, name)}/scale"
        body = {"replicas": replicas, "reason": reason}
        return s.Deployment(**self._transport.request("POST", url, json=body))

    def get_deployment(self, project: str, name: str) -> s.Deployment:
        return s.Deployment(**self._transport.request("GET", _deployments(project, name)))

    def list_deployments(self, project: str) -> list[s.Deployment]:
        return [s.Deployment(**d) for d in self._transport.request("GET", _deployments(project))]

    def deployment_history(self, project: str, name: str) -> list[s.DeploymentEvent]:
        url = f"{_deployments(project, name)}/history"
        return [s.DeploymentEvent(**e) for e in self._transport.request("GET", url)]

    def deployment_records(
        self,
        project: str,
        name: str,
        *,
        limit: int = 100,
        since: datetime | float | str | None = None,
        version: int | None = None,
        shadow: bool | None = None,
        order: Literal["desc", "asc"] = "desc",
        cursor: str | None = None,
    ) -> s.PredictionRecords:
        """A page of the deployment's prediction records, newest first (``order="asc"``:
        oldest first). ``since``: predictions made at or after it (a datetime, seconds
        since the epoch, or ISO 8601 text; UTC without an offset). ``version``: only
        that version's answers; ``shadow``: only the shadow's (True) or only the
        answers returned (False). Pass ``next_cursor`` back as ``cursor`` for more."""
        params: dict[str, Any] = {"limit": limit, "order": order}
        if since is not None:
            params["since"] = since.isoformat() if isinstance(since, datetime) else since
        for key, value in (("version", version), ("shadow", shadow), ("cursor", cursor)):
            if value is not None:
                params[key] = value
        url = f"{_deployments(project, name)}/records"
        return s.PredictionRecords(**self._transport.request("GET", url, params=params))

    def delete_deployment(self, project: str, name: str, *, reason: str = "") -> None:
        url = _deployments(project, name)
        self._transport.request("DELETE", url, params={"reason": reason} if reason else None)
