"""Secrets for jobs (cloud credentials, API keys): stored sealed under the project's
data key, written and listed by name over the API but never read back through it.

A value never appears in a response, a log line, an audit record or an error message:
the API takes it as a ``SecretStr``, the audit trail records only the name, and only
``reveal`` (called in-process by the job runner) opens it.
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from plinth.core.access import Need, Principal
from plinth.core.db import metadata
from plinth.core.encrypted import open_value, seal_value
from plinth.core.platform import Platform
from plinth.errors import NotFound
from plinth.governance import schemas as s

secrets_table = sa.Table(
    "secrets",
    metadata,
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


NO_MASKS = b"[]"  # sealed masks of a job given no secrets: nothing sealed


def _aad(project_id: str, name: str) -> bytes:
    return f"plinth secret\0{project_id}\0{name}".encode()


class SecretsService:
    def __init__(self, platform: Platform) -> None:
        self.db, self.audit, self.keyring = platform.db, platform.audit, platform.keyring
        self.projects = platform.projects

    def _project_id(self, project: str, principal: Principal, need: Need) -> str:
        """An existing project's id (secrets never create one), refusals recorded."""
        with self.db.read() as conn:
            return self.projects.require(conn, project, principal, need)

    def set_secret(self, project: str, req: s.SecretSet, *, principal: Principal) -> None:
        project_id = self._project_id(project, principal, Need.WRITE)
        value = req.value.get_secret_value().encode()
        sealed = seal_value(self.keyring, project_id, value, _aad(project_id, req.name))
        row = {
            "project_id": project_id,
            "name": req.name,
            "sealed": sealed,
            "updated_at": time.time(),
        }
        with self.audit.recorded(principal, "secrets.set", project=project, object=req.name) as (
            conn,
            _,
        ):
            conn.execute(
                self.db.upsert(secrets_table, ["project_id", "name"], ["sealed", "updated_at"]), row
            )

    def list_secrets(self, project: str, *, principal: Principal) -> list[s.SecretInfo]:
        project_id = self._project_id(project, principal, Need.READ)
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(secrets_table.c.name, secrets_table.c.updated_at)
                .where(secrets_table.c.project_id == project_id)
                .order_by(secrets_table.c.name)
            ).all()
        return [s.SecretInfo(name=name, updated_at=at) for name, at in rows]

    def delete_secret(self, project: str, name: str, *, principal: Principal) -> None:
        project_id = self._project_id(project, principal, Need.WRITE)
        with self.audit.recorded(principal, "secrets.delete", project=project, object=name) as (
            conn,
            _,
        ):
            gone = conn.execute(
                secrets_table.delete().where(
                    secrets_table.c.project_id == project_id, secrets_table.c.name == name
                )
            )
            if not gone.rowcount:
                raise NotFound(f"project {project!r} has no secret {name!r}")

    def reveal(self, project: str, name: str, *, principal: Principal) -> str:
        """The value, for the job runner in-process; no route calls this."""
        project_id = self._project_id(project, principal, Need.WRITE)
        with self.db.read() as conn:
            sealed = conn.execute(
                sa.select(secrets_table.c.sealed).where(
                    secrets_table.c.project_id == project_id, secrets_table.c.name == name
                )
            ).scalar()
        if sealed is None:
            raise NotFound(f"project {project!r} has no secret {name!r}")
        return open_value(self.keyring, project_id, sealed, _aad(project_id, name)).decode()

    def seal_masks(self, project_id: str, label: str, values: list[str]) -> bytes:
        """Values a job's logs must mask (the secrets handed to one attempt, ``label``),
        sealed as a secret is, to be opened by ``open_masks`` only; none: ``NO_MASKS``
        (which needs no master key)."""
        if not values:
            return NO_MASKS
        data = json.dumps(values).encode()
        return seal_value(self.keyring, project_id, data, _aad(project_id, f"\0masks\0{label}"))

    def open_masks(self, project_id: str, label: str, sealed: bytes) -> list[str]:
        if sealed == NO_MASKS:
            return []
        aad = _aad(project_id, f"\0masks\0{label}")
        values: list[str] = json.loads(open_value(self.keyring, project_id, sealed, aad))
        return values
