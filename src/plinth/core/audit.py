"""The tamper-evident audit trail: an append-only, hash-chained log in the database.

Each event's hash covers its fields and the previous event's hash, so editing,
inserting, deleting or reordering rows breaks the chain from that row on. The newest
hash is also kept in ``audit_head``, updated in the same transaction, which catches
rows cut from the end; locking that row serialises appends on every database.

What this cannot catch is someone who rewrites the whole chain and the head with the
same algorithm: for that, keep the head hash that ``verify`` prints somewhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core.access import Principal
from plinth.core.db import Database, metadata
from plinth.errors import PlinthError

GENESIS = "0" * 64

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("token_id", sa.String(64)),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("project", sa.String(200)),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("object", sa.String(1000)),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_events_project_at", "project", "at"),
)

audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # one row: 1
    sa.Column("last_id", sa.BigInteger, nullable=False),  # 0 before the first event
    sa.Column("hash", sa.String(64), nullable=False),
)

_HASHED = ("at", "actor", "token_id", "source", "project", "action", "object", "outcome", "details")


def event_hash(prev_hash: str, row: dict[str, Any]) -> str:
    fields = [prev_hash, *(row[name] for name in _HASHED)]
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()


# The most each text column holds: Postgres refuses longer text where SQLite keeps it.
_LENGTHS = {
    c.name: c.type.length
    for c in audit_events.c
    if isinstance(c.type, sa.String) and c.type.length is not None
}


def _fit(column: str, text: str | None) -> str | None:
    """``text`` clipped to its column: a refusal of an over-long name (a run id of
    8 KB in a URL) is recorded, not turned into a database error."""
    length = _LENGTHS[column]
    if text is None or len(text) <= length:
        return text
    return text[: length - 1] + "\u2026"


_LOCK_HEAD = sa.select(audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
_INSERT = audit_events.insert().returning(audit_events.c.id)
_ADVANCE = (
    audit_head.update()
    .where(audit_head.c.id == 1)
    .values(last_id=sa.bindparam("new_id"), hash=sa.bindparam("new_hash"))
)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    head: str
    broken_at: int | None = None  # id of the first event that does not verify
    reason: str = ""


def verify(conn: Connection, batch: int = 5000) -> Verdict:
    """Walk the chain in id order; name the first event that breaks it."""
    prev, checked, last_id = GENESIS, 0, 0
    for row in _rows(conn, batch):
        if row["prev_hash"] != prev:
            return Verdict(
                False,
                checked,
                prev,
                row["id"],
                "does not follow the event before it (one was removed, inserted or reordered)",
            )
        if event_hash(prev, row) != row["hash"]:
            return Verdict(False, checked, prev, row["id"], "was edited after it was written")
        prev, last_id = row["hash"], row["id"]
        checked += 1
    head = conn.execute(sa.select(audit_head.c.last_id, audit_head.c.hash)).one()
    if (head.last_id, head.hash) != (last_id, prev):
        return Verdict(
            False,
            checked,
            prev,
            last_id,
            "the chain ends before the recorded head (events were cut from the end)",
        )
    return Verdict(True, checked, prev)


def _rows(conn: Connection, batch: int) -> Iterator[dict[str, Any]]:
    after = -1
    while True:
        rows = (
            conn.execute(
                sa.select(audit_events)
                .where(audit_events.c.id > after)
                .order_by(audit_events.c.id)
                .limit(batch)
            )
            .mappings()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield dict(row)
        after = rows[-1]["id"]


@dataclass
class Change:
    """What a state change says about itself in the trail; filled in as it goes."""

    project: str | None = None
    object: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    record: bool = True  # False for a request that turned out to change nothing
    # changes the same request made after this one (a run created ended: its end), each
    # an action and its details, recorded after it in the same transaction
    then: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class AuditLog:
    """The trail of one database, as the platform hands it to every service. Its three
    statements are compiled once and run on the driver's cursor: every change pays them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock_head = db.prepare(_LOCK_HEAD)
        self._insert = db.prepare(_INSERT, keys=(*_HASHED, "prev_hash", "hash"))
        self._advance = db.prepare(_ADVANCE)

    def append(
        self,
        conn: Connection,
        principal: Principal,
        action: str,
        *,
        outcome: str = "ok",
        project: str | None = None,
        object: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Add one event inside the caller's transaction: it commits with the change."""
        [(prev,)] = self._lock_head.run(conn, {})  # the lock serialises appends
        row: dict[str, Any] = {
            "at": time.time(),
            "actor": _fit("actor", principal.name),
            "token_id": _fit("token_id", principal.token_id),
            "source": _fit("source", principal.source),
            "project": _fit("project", project),
            "action": _fit("action", action),
            "object": _fit("object", object),
            "outcome": outcome,
            "details": json.dumps(details or {}, sort_keys=True, separators=(",", ":")),
        }
        row["prev_hash"] = prev
        row["hash"] = event_hash(prev, row)
        [(new_id,)] = self._insert.run(conn, row)
        self._advance.run(conn, {"new_id": new_id, "new_hash": row["hash"]})

    @contextlib.contextmanager
    def recorded(
        self,
        principal: Principal,
        action: str,
        *,
        project: str | None = None,
        object: str | None = None,
    ) -> Iterator[tuple[Connection, Change]]:
        """A write transaction whose change is audited in it, before it commits.

        A change refused with a Plinth error is recorded too, in a transaction of its
        own (the refused one rolled back), and the error goes on to the caller.
        """
        change = Change(project, object)
        try:
            with self.db.write() as conn:
                yield conn, change
                if change.record:
                    self.append(
                        conn,
                        principal,
                        action,
                        project=change.project,
                        object=change.object,
                        details=change.details,
                    )
                    for action_then, details in change.then:
                        self.append(
                            conn,
                            principal,
                            action_then,
                            project=change.project,
                            object=change.object,
                            details=details,
                        )
        except PlinthError as exc:
            self.refusal(principal, action, exc, project=change.project, object=change.object)
            raise

    def refusal(
        self,
        principal: Principal,
        action: str,
        exc: PlinthError,
        *,
        project: str | None = None,
        object: str | None = None,
    ) -> None:
        with self.db.write() as conn:
            self.append(
                conn,
                principal,
                action,
                outcome="refused",
                project=project,
                object=object,
                details={"error": type(exc).__name__, "message": exc.message},
            )
