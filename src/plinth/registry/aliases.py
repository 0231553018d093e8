"""Aliases of a model's versions (``champion``, ``challenger``, any name): moved by
editors, each move kept with who, when, from which version and why, and audited."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core.access import Need, Principal
from plinth.core.platform import Platform
from plinth.errors import Conflict, NotFound
from plinth.registry import schemas as s
from plinth.registry import tables as t
from plinth.registry.service import RegistryService
from plinth.registry.uri import check_alias

HISTORY_LIMIT = 1000


class AliasService:
    def __init__(self, platform: Platform, *, registry: RegistryService) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.registry = registry

    def set_alias(
        self, project: str, name: str, alias: str, req: s.AliasSet, *, principal: Principal
    ) -> s.AliasEvent:
        """Point ``alias`` at a version (an archived one cannot take it). Setting it
        where it is with a new reason records the decision; the same request again
        changes nothing."""
        check_alias(alias)
        where = f"{name}@{alias}"
        with self.audit.recorded(principal, "models.alias", project=project, object=where) as (
            conn,
            change,
        ):
            model = self.registry.require_model(
                conn, project, name, principal, Need.WRITE, record=False
            )
            self.registry.lock_model(conn, model.id)  # moves of its aliases queue up
            row = self.registry.require_version(conn, model, name, req.version)
            if row.status == "archived":
                raise Conflict(f"version {req.version} of {name!r} is archived: it takes no alias")
            previous = self._current(conn, model.id, alias)
            if previous == req.version:
                last = self._last_event(conn, model.id, alias)
                if last.reason == req.reason:  # the same request again: nothing changes
                    change.record = False
                    return last
            conn.execute(
                self.db.upsert(t.model_aliases, ("model_id", "alias"), ("version",)),
                {"model_id": model.id, "alias": alias, "version": req.version},
            )
            change.details = {"version": req.version, "previous": previous, "reason": req.reason}
            return self._record(conn, model.id, alias, req.version, previous, principal, req.reason)

    def delete_alias(
        self, project: str, name: str, alias: str, reason: str = "", *, principal: Principal
    ) -> s.AliasEvent:
        check_alias(alias)
        where = f"{name}@{alias}"
        with self.audit.recorded(principal, "models.unalias", project=project, object=where) as (
            conn,
            change,
        ):
            model = self.registry.require_model(
                conn, project, name, principal, Need.WRITE, record=False
            )
            self.registry.lock_model(conn, model.id)
            previous = self._current(conn, model.id, alias)
            if previous is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            al = t.model_aliases
            conn.execute(al.delete().where(al.c.model_id == model.id, al.c.alias == alias))
            change.details = {"previous": previous, "reason": reason}
            return self._record(conn, model.id, alias, None, previous, principal, reason)

    def get_alias(
        self, project: str, name: str, alias: str, *, principal: Principal
    ) -> s.ModelVersion:
        """The version an alias points at now."""
        check_alias(alias)
        with self.db.read() as conn:
            model = self.registry.require_model(conn, project, name, principal, Need.READ)
            version = self._current(conn, model.id, alias)
            if version is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            return self.registry.version_of(conn, project, name, model.id, version)

    def alias_history(
        self, project: str, name: str, alias: str | None = None, *, principal: Principal
    ) -> list[s.AliasEvent]:
        """Every move of the model's aliases (or of one), newest first."""
        ev = t.alias_events
        with self.db.read() as conn:
            model = self.registry.require_model(conn, project, name, principal, Need.READ)
            stmt = sa.select(ev).where(ev.c.model_id == model.id)
            if alias is not None:
                stmt = stmt.where(ev.c.alias == check_alias(alias))
            rows = conn.execute(stmt.order_by(ev.c.id.desc()).limit(HISTORY_LIMIT))
            return [_event(r) for r in rows.all()]

    def _current(self, conn: Connection, model_id: str, alias: str) -> int | None:
        al = t.model_aliases
        found = conn.execute(
            sa.select(al.c.version).where(al.c.model_id == model_id, al.c.alias == alias)
        ).scalar()
        return None if found is None else int(found)

    def _record(
        self,
        conn: Connection,
        model_id: str,
        alias: str,
        version: int | None,
        previous: int | None,
        principal: Principal,
        reason: str,
    ) -> s.AliasEvent:
        event = s.AliasEvent(
            alias=alias,
            version=version,
            previous=previous,
            actor=principal.name,
            at=time.time(),
            reason=reason,
        )
        conn.execute(t.alias_events.insert(), {"model_id": model_id, **event.model_dump()})
        return event

    def _last_event(self, conn: Connection, model_id: str, alias: str) -> s.AliasEvent:
        ev = t.alias_events
        row = conn.execute(
            sa.select(ev)
            .where(ev.c.model_id == model_id, ev.c.alias == alias)
            .order_by(ev.c.id.desc())
            .limit(1)
        ).one()
        return _event(row)


def _event(row: Any) -> s.AliasEvent:
    return s.AliasEvent(
        alias=row.alias,
        version=row.version,
        previous=row.previous,
        actor=row.actor,
        at=row.at,
        reason=row.reason,
    )
