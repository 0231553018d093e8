"""Projects as people manage them: creating and listing them, and roles in them:
who may read (viewer), write (editor) or manage members (admin).

The creator of a project is its first admin; platform admins may do anything.
Projects and memberships are the kernel's (``core/projects.py``); this service is how
people manage them.
"""

from __future__ import annotations

import sqlalchemy as sa

from plinth.core import projects
from plinth.core.access import Need, Principal, Role
from plinth.core.platform import Platform
from plinth.errors import Conflict, NotFound
from plinth.governance import schemas as s
from plinth.governance import tables as t

m = projects.memberships


class ProjectsService:
    def __init__(self, platform: Platform) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects

    def list_projects(self, *, principal: Principal) -> list[s.Project]:
        return [s.Project(**row) for row in self.projects.list(principal)]

    def create_project(self, req: s.ProjectCreate, *, principal: Principal) -> s.Project:
        """A new, empty project whose creator is its admin; Conflict if the name is taken."""
        with self.audit.recorded(principal, "projects.create", project=req.name) as (conn, ch):
            ch.record = False  # the guard records the creation itself
            self.projects.create(conn, req.name, principal)
        return next(p for p in self.list_projects(principal=principal) if p.name == req.name)

    def list_members(self, project: str, *, principal: Principal) -> list[s.Member]:
        with self.db.read() as conn:
            project_id = self.projects.require(conn, project, principal, Need.READ)
            rows = conn.execute(
                sa.select(t.users.c.name, m.c.role)
                .join(t.users, t.users.c.id == m.c.user_id)
                .where(m.c.project_id == project_id)
                .order_by(t.users.c.name)
            ).all()
        return [s.Member(user=name, role=Role(role)) for name, role in rows]

    def add_member(self, project: str, req: s.MemberAdd, *, principal: Principal) -> s.Member:
        """Give a user a role in a project (or change it); project admins only. The
        last admin stays one: Conflict."""
        with self.audit.recorded(principal, "members.add", project=project, object=req.user) as (
            conn,
            change,
        ):
            change.details = {"role": req.role.value}
            project_id = self.projects.require(conn, project, principal, Need.ADMIN, record=False)
            user_id = self._user_id(conn, req.user)
            if req.role is not Role.ADMIN:
                self._keep_an_admin(conn, project, project_id, user_id)
            projects.grant(conn, project_id, user_id, req.role)
        return s.Member(user=req.user, role=req.role)

    def remove_member(self, project: str, user: str, *, principal: Principal) -> None:
        """Take a user's role in a project away; project admins only, and never the
        last admin's."""
        with self.audit.recorded(principal, "members.remove", project=project, object=user) as (
            conn,
            _,
        ):
            project_id = self.projects.require(conn, project, principal, Need.ADMIN, record=False)
            user_id = self._user_id(conn, user)
            self._keep_an_admin(conn, project, project_id, user_id)
            conn.execute(m.delete().where(m.c.project_id == project_id, m.c.user_id == user_id))

    def _keep_an_admin(
        self, conn: sa.Connection, project: str, project_id: str, user_id: str
    ) -> None:
        """Conflict if ``user_id`` is the project's last admin: a project left without
        one has nobody to manage its members (platform admins aside). The admins' rows
        are locked, so two admins removing each other at once cannot both succeed."""
        admins = self.db.sql.lock_rows(
            sa.select(m.c.user_id).where(m.c.project_id == project_id, m.c.role == Role.ADMIN.value)
        )
        if conn.execute(admins).scalars().all() == [user_id]:
            raise Conflict(
                f"project {project!r} would have no admin left; make another member admin first"
            )

    @staticmethod
    def _user_id(conn: sa.Connection, name: str) -> str:
        user_id = conn.execute(sa.select(t.users.c.id).where(t.users.c.name == name)).scalar()
        if user_id is None:
            raise NotFound(f"no user {name!r}")
        return str(user_id)
