"""Roles per project: who may read (viewer), write (editor) or manage members (admin).

The creator of a project is its first admin; platform admins may do anything. The
project itself belongs to tracking, reached only through its service.
"""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core import access, audit
from plinth.core.access import Need, Principal, Role
from plinth.core.db import Database
from plinth.errors import NotFound
from plinth.governance import schemas as s
from plinth.governance import tables as t
from plinth.tracking.service import TrackingService

m = access.memberships


class MembersService:
    def __init__(self, db: Database, tracking: TrackingService) -> None:
        self.db = db
        self.tracking = tracking

    def list_members(self, project: str, *, principal: Principal) -> list[s.Member]:
        project_id = self.tracking.project_id(project, principal, Need.READ)
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(t.users.c.name, m.c.role)
                .join(t.users, t.users.c.id == m.c.user_id)
                .where(m.c.project_id == project_id)
                .order_by(t.users.c.name)
            ).all()
        return [s.Member(user=name, role=Role(role)) for name, role in rows]

    def add_member(self, project: str, req: s.MemberAdd, *, principal: Principal) -> s.Member:
        """Give a user a role in a project (or change it); project admins only."""
        project_id = self.tracking.project_id(project, principal, Need.ADMIN)
        with audit.recorded(
            self.db, principal, "members.add", project=project, object=req.user
        ) as (conn, change):
            change.details = {"role": req.role.value}
            access.grant(conn, project_id, self._user_id(conn, req.user), req.role)
        return s.Member(user=req.user, role=req.role)

    def remove_member(self, project: str, user: str, *, principal: Principal) -> None:
        project_id = self.tracking.project_id(project, principal, Need.ADMIN)
        with audit.recorded(self.db, principal, "members.remove", project=project, object=user) as (
            conn,
            _,
        ):
            user_id = self._user_id(conn, user)
            conn.execute(m.delete().where(m.c.project_id == project_id, m.c.user_id == user_id))

    @staticmethod
    def _user_id(conn: sa.Connection, name: str) -> str:
        user_id = conn.execute(sa.select(t.users.c.id).where(t.users.c.name == name)).scalar()
        if user_id is None:
            raise NotFound(f"no user {name!r}")
        return str(user_id)
