"""Reading and verifying the audit trail. Nothing here, or anywhere, changes it: events
are only ever appended, by the services whose changes they record."""

from __future__ import annotations

import json

import sqlalchemy as sa

from plinth.core import audit
from plinth.core.access import Principal
from plinth.core.platform import Platform
from plinth.governance import schemas as s


class AuditService:
    def __init__(self, platform: Platform) -> None:
        self.db = platform.db

    def list_events(self, query: s.AuditQuery, *, principal: Principal) -> s.AuditPage:
        e = audit.audit_events
        stmt = sa.select(e).where(e.c.id > query.after_id)
        for column, value in (
            (e.c.project, query.project),
            (e.c.actor, query.actor),
            (e.c.action, query.action),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if query.since is not None:
            stmt = stmt.where(e.c.at >= query.since)
        if query.until is not None:
            stmt = stmt.where(e.c.at < query.until)
        with self.db.read() as conn:
            rows = conn.execute(stmt.order_by(e.c.id).limit(query.limit + 1)).mappings().all()
        events = [
            s.AuditEvent(**{**row, "details": json.loads(row["details"])})
            for row in rows[: query.limit]
        ]
        more = len(rows) > query.limit
        return s.AuditPage(events=events, next_after_id=events[-1].id if more else None)

    def verify(self, *, principal: Principal) -> s.AuditVerdict:
        with self.db.read() as conn:
            verdict = audit.verify(conn)
        return s.AuditVerdict(
            ok=verdict.ok,
            checked=verdict.checked,
            head=verdict.head,
            broken_at=verdict.broken_at,
            reason=verdict.reason,
        )
