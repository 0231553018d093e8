"""Projects, roles in them, and the one guard every capability passes through.

A project is a named namespace (runs, models, datasets, secrets…) with members. The
guard finds a project, checks the principal's need against their role, and records a
refusal in the audit trail — the same way for every capability, so none of them
imports another to learn who may do what.

Names are global: one ``churn`` per home. Creating a project whose name is taken by a
project you cannot see answers "exists" (the one thing a name collision reveals: that
the name is in use); every other request about it answers as for a project that does
not exist, and costs the same, audit record included.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core.access import Need, Principal, Role, authorize, scope_limit
from plinth.core.db import Database, metadata, uncommitted
from plinth.core.names import check_project_name, is_project_name
from plinth.errors import Conflict, NotFound, PermissionDenied, PlinthError

if TYPE_CHECKING:
    from plinth.core.audit import AuditLog

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Index("ix_memberships_user", "user_id"),
)


def role_of(conn: Connection, principal: Principal, project_id: str) -> Role | None:
    if principal.user_id is None:
        return None
    role = conn.execute(
        sa.select(memberships.c.role).where(
            memberships.c.project_id == project_id, memberships.c.user_id == principal.user_id
        )
    ).scalar()
    return Role(role) if role else None


def grant(conn: Connection, project_id: str, user_id: str, role: Role) -> None:
    conn.execute(
        memberships.delete().where(
            memberships.c.project_id == project_id, memberships.c.user_id == user_id
        )
    )
    conn.execute(
        memberships.insert().values(project_id=project_id, user_id=user_id, role=role.value)
    )


def visible_projects(principal: Principal) -> Any:
    """The project ids the principal may read (a subquery or list), or None for all."""
    if principal.scope_project_id is not None:
        return [principal.scope_project_id]
    if principal.is_admin:
        return None
    return sa.select(memberships.c.project_id).where(
        memberships.c.user_id == (principal.user_id or "")
    )


_BY_NAME = sa.select(projects.c.id).where(projects.c.name == sa.bindparam("name"))
_CREATED = "projects"  # in uncommitted(conn): the names this transaction created


class Projects:
    """Find a project, check the principal's need, record what was refused."""

    def __init__(self, db: Database, audit: AuditLog, *, admins_create: bool = False) -> None:
        self.db = db
        self.audit = audit
        self.admins_create = admins_create
        self._ids: dict[str, str] = {}  # committed ids: never renamed or removed

    def id_of(self, conn: Connection, name: str) -> str | None:
        pid = self._ids.get(name) or conn.execute(_BY_NAME, {"name": name}).scalar()
        if pid is not None and name not in uncommitted(conn).get(_CREATED, ()):
            self._ids[name] = str(pid)  # never one this transaction made: it may roll back
        return None if pid is None else str(pid)

    def require(
        self,
        conn: Connection,
        name: str,
        principal: Principal,
        need: Need,
        *,
        record: bool = True,
        action: str | None = None,
    ) -> str:
        """The project's id if ``principal`` may ``need`` it. Otherwise NotFound, worded
        as for a project that does not exist (or PermissionDenied for a role too small);
        with ``record`` the refusal goes to the audit trail. Inside an audited change
        pass ``record=False``: the change records its own refusal."""
        hidden = NotFound(f"no project {name!r}")
        pid = self.id_of(conn, name) if is_project_name(name) else None
        self.check(conn, pid, principal, need, hidden, project=name, record=record, action=action)
        assert pid is not None
        return pid

    def check(
        self,
        conn: Connection,
        project_id: str | None,
        principal: Principal,
        need: Need,
        hidden: PlinthError,
        *,
        project: str | None,
        object: str | None = None,
        record: bool = True,
        action: str | None = None,
    ) -> None:
        """``authorize`` on a project found by id (``None``: not found), recording a
        refusal. Absent and forbidden cost the same: both write one audit record."""
        try:
            if project_id is None:
                raise hidden
            authorize(conn, principal, project_id, need, hidden, role_of)
        except PlinthError as exc:
            if record:
                self.audit.refusal(
                    principal, action or need.name.lower(), exc, project=project, object=object
                )
            raise

    def create_or_require(self, conn: Connection, name: str, principal: Principal) -> str:
        """In a write transaction: the project's id if the principal may write to it;
        a project that does not exist yet is created (audited in the same transaction)
        with its creator as its admin, when the principal may create projects."""
        check_project_name(name)
        pid = self.id_of(conn, name)
        if pid is None:
            created = self._create(conn, name, principal, exists_ok=True)
            if created is not None:
                return created
            pid = self.id_of(conn, name)  # a concurrent creator won
        # Creating would have worked for a free name, so saying it is taken reveals
        # nothing that trying did not: the one thing a name collision tells.
        taken = NotFound(f"no project {name!r} of yours: the name is taken; choose another")
        self.check(conn, pid, principal, Need.WRITE, taken, project=name, record=False)
        assert pid is not None
        return pid

    def create(self, conn: Connection, name: str, principal: Principal) -> str:
        """Create a project (its creator becomes its admin); Conflict if the name is taken."""
        check_project_name(name)
        created = self._create(conn, name, principal, exists_ok=False)
        assert created is not None
        return created

    def _create(
        self, conn: Connection, name: str, principal: Principal, *, exists_ok: bool
    ) -> str | None:
        self._may_create(principal, name)
        pid = uuid.uuid4().hex
        inserted = conn.execute(
            self.db.insert_ignoring_duplicates(projects).returning(projects.c.id),
            {"id": pid, "name": name, "created_at": time.time()},
        ).scalar()
        if inserted is None:
            if exists_ok:
                return None
            raise Conflict(f"a project named {name!r} exists; project names are global")
        if principal.user_id is not None:
            grant(conn, pid, principal.user_id, Role.ADMIN)
        self.audit.append(conn, principal, "projects.create", project=name, object=pid)
        # Not cached until this transaction commits: another request must not find the
        # id (a run there would name a project that may yet roll back).
        uncommitted(conn).setdefault(_CREATED, set()).add(name)
        return pid

    def _may_create(self, principal: Principal, name: str) -> None:
        if principal.scope_project_id is not None:
            raise PermissionDenied(f"{scope_limit(principal)}: it cannot create project {name!r}")
        if principal.user_id is None and not principal.is_admin:
            raise PermissionDenied("only signed-in users create projects")
        if self.admins_create and not principal.is_admin:
            raise PermissionDenied(
                f"only platform admins create projects here; ask one to create {name!r}"
            )

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        stmt = sa.select(projects).order_by(projects.c.name)
        visible = visible_projects(principal)
        if visible is not None:
            stmt = stmt.where(projects.c.id.in_(visible))
        with self.db.read() as conn:
            return [dict(row) for row in conn.execute(stmt).mappings()]

    def names(self, conn: Connection, ids: set[str]) -> dict[str, str]:
        rows = conn.execute(sa.select(projects.c.id, projects.c.name).where(projects.c.id.in_(ids)))
        return {pid: name for pid, name in rows}
