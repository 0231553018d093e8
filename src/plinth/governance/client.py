"""Governance's SDK calls, reached as methods of ``plinth.Client``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from plinth.errors import PermissionDenied
from plinth.governance import schemas as s

if TYPE_CHECKING:
    from plinth.client import Transport
    from plinth.settings import Settings


class GovernanceCalls:
    _transport: Transport

    def lineage(self, uri: str, *, project: str | None = None) -> s.LineageGraph:
        """The lineage graph around a node: ``datasets:/PROJECT/NAME@3``, ``runs:/ID``,
        ``models:/PROJECT/NAME/3`` (upstream: what it came from; downstream: what came
        of it), in the projects you may read."""
        if project is None:
            kind, _, rest = uri.partition(":/")
            if kind == "runs":
                run = self._transport.request("GET", f"/api/v1/runs/{quote(rest, safe='')}")
                project = str(run["project"])
            else:
                project = rest.split("/", 1)[0]
        url = f"/api/v1/projects/{quote(project, safe='')}/lineage"
        return s.LineageGraph(**self._transport.request("GET", url, params={"uri": uri}))

    def audit_events(
        self,
        *,
        project: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> Iterator[s.AuditEvent]:
        """Audit events, oldest first, page by page; at most ``limit`` of them."""
        params: dict[str, Any] = {
            k: v
            for k, v in {
                "project": project,
                "actor": actor,
                "action": action,
                "since": since,
                "until": until,
            }.items()
            if v is not None
        }
        after, left = 0, limit
        while left is None or left > 0:
            page_size = 1000 if left is None else min(left, 1000)
            page = s.AuditPage(
                **self._transport.request(
                    "GET", "/api/v1/audit", params={**params, "after_id": after, "limit": page_size}
                )
            )
            yield from page.events
            if left is not None:
                left -= len(page.events)
            if page.next_after_id is None:
                return
            after = page.next_after_id

    def verify_audit(self) -> s.AuditVerdict:
        return s.AuditVerdict(**self._transport.request("GET", "/api/v1/audit/verify"))


class IdentityCalls:
    _transport: Transport
    settings: Settings

    def init_admin(self, name: str = "admin") -> s.NewUser:
        """Create the first admin of this client's local home and their first token.

        The one call that is not a request: the first admin is made over the home
        itself, never over HTTP, so a client of a server (``PLINTH_URL``) is refused;
        run ``plinth admin init`` where the server's home is. Other clients already
        open on this home need credentials within a second."""
        if self.settings.url:
            raise PermissionDenied(
                "the first admin is made where the home is, not over HTTP: run "
                "'plinth admin init' on the machine that holds the server's home"
            )
        from plinth.governance.identity import init_admin

        return init_admin(self.settings, name)

    def create_user(self, name: str, *, is_admin: bool = False) -> s.NewUser:
        return s.NewUser(
            **self._transport.request(
                "POST", "/api/v1/users", json={"name": name, "is_admin": is_admin}
            )
        )

    def create_token(
        self,
        name: str = "token",
        *,
        expires_in_days: float | None = None,
        project: str | None = None,
        role: str | None = None,
    ) -> s.NewToken:
        """A token for yourself; with ``project`` and ``role``, valid only there."""
        body = {"name": name, "expires_in_days": expires_in_days, "project": project, "role": role}
        return s.NewToken(**self._transport.request("POST", "/api/v1/tokens", json=body))

    def current_user(self) -> s.User:
        """Who this client's token (or the local home, before the first admin) is."""
        return s.User(**self._transport.request("GET", "/api/v1/users/me"))

    def list_tokens(self) -> list[s.Token]:
        return [s.Token(**t) for t in self._transport.request("GET", "/api/v1/tokens")]

    def revoke_token(self, token_id: str) -> s.Token:
        """Revoke a token by id, or by a unique prefix of 8 or more characters."""
        path = f"/api/v1/tokens/{quote(token_id, safe='')}"
        return s.Token(**self._transport.request("DELETE", path))

    def list_projects(self) -> list[s.Project]:
        """The projects you have a role in (a platform admin sees all)."""
        return [s.Project(**p) for p in self._transport.request("GET", "/api/v1/projects")]

    def create_project(self, name: str) -> s.Project:
        """An empty project; you become its admin."""
        data = self._transport.request("POST", "/api/v1/projects", json={"name": name})
        return s.Project(**data)

    def list_members(self, project: str) -> list[s.Member]:
        data = self._transport.request("GET", f"/api/v1/projects/{quote(project, safe='')}/members")
        return [s.Member(**m) for m in data]

    def add_member(self, project: str, user: str, role: str) -> s.Member:
        return s.Member(
            **self._transport.request(
                "POST",
                f"/api/v1/projects/{quote(project, safe='')}/members",
                json={"user": user, "role": role},
            )
        )

    def remove_member(self, project: str, user: str) -> None:
        self._transport.request(
            "DELETE", f"/api/v1/projects/{quote(project, safe='')}/members/{quote(user, safe='')}"
        )

    def set_password(self, user: str, password: str, current_password: str | None = None) -> None:
        """A password for the web UI: yours (give the current one, once one is set), or
        anyone's if you are a platform admin. Every other session of that user ends."""
        body = {"password": password, "current_password": current_password}
        self._transport.request("PUT", f"/api/v1/users/{quote(user, safe='')}/password", json=body)

    def set_secret(self, project: str, name: str, value: str) -> None:
        """Store a secret for the project's jobs, sealed; it cannot be read back."""
        self._transport.request(
            "PUT",
            f"/api/v1/projects/{quote(project, safe='')}/secrets",
            json={"name": name, "value": value},
        )

    def list_secrets(self, project: str) -> list[s.SecretInfo]:
        data = self._transport.request("GET", f"/api/v1/projects/{quote(project, safe='')}/secrets")
        return [s.SecretInfo(**item) for item in data]

    def delete_secret(self, project: str, name: str) -> None:
        self._transport.request(
            "DELETE", f"/api/v1/projects/{quote(project, safe='')}/secrets/{quote(name, safe='')}"
        )
