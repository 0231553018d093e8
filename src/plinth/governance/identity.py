"""Users and API tokens, and turning a request's token into a principal.

There is no default credential. Until ``init_admin`` creates the first admin, Plinth
is single-user and every request is the local user (the server binds loopback only);
from then on every request but the public ones needs a token, on loopback too.

The first admin is made only where the home is (``plinth admin init``, or
``init_admin(settings)`` here), never over HTTP: until it exists, creating users and
tokens over HTTP is refused, so whoever reaches a fresh server first cannot make
themselves its admin. Whoever can open the home owns it anyway.

Tokens are ``plt_<id>_<secret>`` with a 256-bit random secret. Only its sha256 is
stored: for a secret that random a slow password hash (argon2) adds nothing but
tens of milliseconds to every request. Comparison is constant-time.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
import uuid
from typing import Any

import sqlalchemy as sa

from plinth.core.access import (
    ANONYMOUS,
    LOCAL,
    Authenticator,
    Credentials,
    Need,
    Principal,
    Role,
)
from plinth.core.platform import Platform
from plinth.errors import Conflict, InvalidInput, NotFound, PermissionDenied, Unauthenticated
from plinth.governance import schemas as s
from plinth.governance import tables as t
from plinth.governance.sessions import SessionService, acting_user, secret_digest
from plinth.settings import Settings

# While there is no user, whether one appeared (made by another process) is asked at
# most this often: an embedded home otherwise pays a query on every request.
_NO_USERS_RECHECK_S = 1.0


_NEED_TO_GRANT = {Role.VIEWER: Need.READ, Role.EDITOR: Need.WRITE, Role.ADMIN: Need.ADMIN}


_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_ID_PREFIX = re.compile(r"^[0-9a-f]{8,15}\Z")  # token ids are 16 hex digits


def init_admin(settings: Settings, name: str = "admin") -> s.NewUser:
    """Create the first admin of the home ``settings`` names, and their first token,
    directly over that home (its database): the one way in, which needs the home."""
    if not re.fullmatch(s.USER_NAME, name):
        raise InvalidInput(f"a user name is letters, digits, '_', '.', '@', '-'; got {name!r}")
    platform = Platform.open(settings)
    try:
        identity = IdentityService(platform, sessions=SessionService(platform))
        return identity.init_admin(name, principal=LOCAL)
    finally:
        platform.close()


class IdentityService(Authenticator):
    def __init__(self, platform: Platform, *, sessions: SessionService) -> None:
        self.platform = platform
        self.db = platform.db
        self.audit = platform.audit
        self.sessions = sessions
        self._enabled = False  # once on, auth never turns off
        self._recheck_at = 0.0

    # authentication -------------------------------------------------------------------

    def auth_enabled(self) -> bool:
        if self._enabled or time.monotonic() < self._recheck_at:
            return self._enabled
        with self.db.read() as conn:
            users = conn.execute(sa.select(sa.func.count()).select_from(t.users)).scalar_one()
        self._enabled = bool(users)
        self._recheck_at = time.monotonic() + _NO_USERS_RECHECK_S
        return self._enabled

    def known(self, credentials: Credentials) -> Principal | None:
        if not self._enabled and time.monotonic() < self._recheck_at:  # no users yet
            return LOCAL.from_address(credentials.source)
        return None

    def authenticate(self, credentials: Credentials) -> Principal:
        """The principal a request acts as: its token's user, or its web session's
        (whose unsafe requests must echo the session's CSRF token). Unauthenticated,
        recorded in the audit trail, when it has neither."""
        source = credentials.source
        if not self.auth_enabled():
            return LOCAL.from_address(source)
        by_session = credentials.authorization is None and bool(credentials.session_cookie)
        try:
            if by_session:
                assert credentials.session_cookie is not None
                session = self.sessions.resolve(credentials.session_cookie, source)
                if credentials.method not in _SAFE_METHODS:
                    self.sessions.check_csrf(session, credentials.csrf_token)
                return session.principal
            return self._principal_for(credentials.authorization, source)
        except (Unauthenticated, PermissionDenied) as exc:
            action = "session" if by_session else "auth"
            self.audit.refusal(ANONYMOUS.from_address(source), action, exc)
            raise

    def _principal_for(self, authorization: str | None, source: str) -> Principal:
        scheme, _, text = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not text:
            raise Unauthenticated(
                "this server needs a token: 'Authorization: Bearer plt_…' "
                "(PLINTH_TOKEN for the SDK and CLI)"
            )
        parts = text.strip().split("_")
        if len(parts) != 3 or parts[0] != "plt":
            raise Unauthenticated("malformed token")
        with self.db.read() as conn:
            row = (
                conn.execute(
                    sa.select(t.tokens, t.users.c.name.label("user"), t.users.c.is_admin)
                    .join(t.users, t.users.c.id == t.tokens.c.user_id)
                    .where(t.tokens.c.id == parts[1])
                )
                .mappings()
                .first()
            )
        digest = secret_digest(parts[2])
        if row is None or not hmac.compare_digest(row["secret_sha256"], digest):
            raise Unauthenticated("unknown token")
        if row["revoked_at"] is not None:
            raise Unauthenticated(f"token {row['id']} was revoked")
        if row["expires_at"] is not None and row["expires_at"] < time.time():
            raise Unauthenticated(f"token {row['id']} has expired")
        return Principal(
            name=row["user"],
            user_id=row["user_id"],
            token_id=row["id"],
            is_admin=row["is_admin"],
            source=source,
            scope_project_id=row["project_id"],
            scope_project=row["project"],
            scope_role=Role(row["role"]) if row["role"] else None,
        )

    # users ----------------------------------------------------------------------------

    def init_admin(self, name: str, *, principal: Principal) -> s.NewUser:
        """Create the first admin; refused once any user exists. Not a route: see
        the module-level ``init_admin``."""
        with self.audit.recorded(principal, "admin.init", object=name) as (conn, _):
            if conn.execute(sa.select(sa.func.count()).select_from(t.users)).scalar_one():
                raise Conflict("an admin already exists: ask them for a token")
            created = self._create_user(conn, name, True, "initial admin token")
        self._enabled = True  # committed: from this request on, credentials are needed
        return created

    def create_user(self, req: s.UserCreate, *, principal: Principal) -> s.NewUser:
        with self.audit.recorded(principal, "users.create", object=req.name) as (conn, ch):
            acting_user(principal)  # before the first admin: 'plinth admin init' only
            ch.details = {"admin": req.is_admin}
            if conn.execute(sa.select(t.users.c.id).where(t.users.c.name == req.name)).first():
                raise Conflict(f"user {req.name!r} exists")
            return self._create_user(conn, req.name, req.is_admin, "first token")

    def current_user(self, *, principal: Principal) -> s.User:
        """The user a request acts as."""
        with self.db.read() as conn:
            row = (
                conn.execute(sa.select(t.users).where(t.users.c.id == acting_user(principal)))
                .mappings()
                .one()
            )
        return _user(row)

    def _create_user(self, conn: Any, name: str, is_admin: bool, token_name: str) -> s.NewUser:
        user = s.User(id=uuid.uuid4().hex, name=name, is_admin=is_admin, created_at=time.time())
        conn.execute(t.users.insert(), user.model_dump(exclude={"has_password"}))
        return s.NewUser(user=user, token=self._issue(conn, user, token_name, None))

    # tokens ---------------------------------------------------------------------------

    def create_token(self, req: s.TokenCreate, *, principal: Principal) -> s.NewToken:
        """A new token for the caller's own user; scoped to a project, it works only
        there, with at most ``role`` (which the caller must hold themselves)."""
        with self.audit.recorded(
            principal, "tokens.create", object=req.name, project=req.project
        ) as (conn, ch):
            user_id = acting_user(principal)
            ch.details = {"role": req.role.value if req.role else None}
            scope = self._scope(conn, req, principal)
            user = conn.execute(sa.select(t.users).where(t.users.c.id == user_id)).mappings().one()
            expires = time.time() + req.expires_in_days * 86400 if req.expires_in_days else None
            token = self._issue(conn, _user(user), req.name, expires, scope)
            ch.object = token.info.id
            return token

    def _scope(
        self, conn: Any, req: s.TokenCreate, principal: Principal
    ) -> tuple[str, str, Role] | None:
        if req.project is None and req.role is None:
            return None
        if req.project is None or req.role is None:
            raise InvalidInput("a scoped token needs both a project and a role")
        need = _NEED_TO_GRANT[req.role]
        project_id = self.platform.projects.require(
            conn, req.project, principal, need, record=False
        )
        return project_id, req.project, req.role

    def list_tokens(self, *, principal: Principal) -> list[s.Token]:
        """The caller's tokens (an admin sees everyone's)."""
        try:
            user_id = acting_user(principal)
        except PermissionDenied as exc:
            self.audit.refusal(principal, "tokens.list", exc)
            raise
        with self.db.read() as conn:
            rows = conn.execute(_visible_tokens(principal, user_id)).mappings().all()
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: str, *, principal: Principal) -> s.Token:
        """Revoke a token by id, or by a unique prefix of 8 or more characters. Someone
        else's token answers as one that does not exist, at the same cost."""
        with self.audit.recorded(principal, "tokens.revoke", object=token_id) as (conn, ch):
            row = self._find_token(conn, token_id, principal, acting_user(principal))
            ch.object = row["id"]
            now = row["revoked_at"] or time.time()
            conn.execute(t.tokens.update().where(t.tokens.c.id == row["id"]).values(revoked_at=now))
            return _token({**row, "revoked_at": now})

    def issue_job_token(
        self, user_id: str, project_id: str, project: str, name: str, expires_at: float
    ) -> tuple[str, str]:
        """A token for a job, acting as the user who submitted it, scoped to the job's
        project with at most the editor role: ``(token, token id)``. For the compute
        dispatcher in-process; no route calls this. Audited, as every token issued."""
        principal = Principal(name="plinth-dispatcher", is_admin=True)
        with self.audit.recorded(principal, "tokens.create", project=project) as (conn, ch):
            row = conn.execute(sa.select(t.users).where(t.users.c.id == user_id)).mappings().first()
            if row is None:
                raise NotFound(f"no user {user_id!r} to run the job as")
            token = self._issue(
                conn, _user(row), name, expires_at, (project_id, project, Role.EDITOR)
            )
            ch.object = token.info.id
            ch.details = {"role": Role.EDITOR.value, "for": name}
        return token.token, token.info.id

    def acting_as(self, user_id: str, project_id: str, project: str) -> Principal:
        """The principal work started by a user goes on as (a pipeline's steps, a
        trigger's runs): that user as they are now, scoped to the one project with at
        most the editor role. NotFound once the user is gone."""
        with self.db.read() as conn:
            row = conn.execute(sa.select(t.users).where(t.users.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"no user {user_id!r} to act as")
        return Principal(
            name=row.name,
            user_id=row.id,
            is_admin=bool(row.is_admin),
            scope_project_id=project_id,
            scope_project=project,
            scope_role=Role.EDITOR,
        )

    def revoke_job_token(self, token_id: str) -> None:
        """Revoke a job's token when its attempt ends (a no-op when it is already)."""
        principal = Principal(name="plinth-dispatcher", is_admin=True)
        with self.audit.recorded(principal, "tokens.revoke", object=token_id) as (conn, ch):
            tok = t.tokens
            done = conn.execute(
                tok.update()
                .where(tok.c.id == token_id, tok.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
            ch.record = bool(done)

    @staticmethod
    def _find_token(conn: Any, token_id: str, principal: Principal, user_id: str) -> Any:
        """Among the tokens the caller may see, so that neither an id nor an ambiguous
        prefix tells anything about anyone else's."""
        visible = _visible_tokens(principal, user_id)
        rows = conn.execute(visible.where(t.tokens.c.id == token_id)).mappings().all()
        if not rows and _ID_PREFIX.match(token_id):
            by_prefix = visible.where(t.tokens.c.id.startswith(token_id, autoescape=True))
            rows = conn.execute(by_prefix.limit(2)).mappings().all()
            if len(rows) > 1:
                raise InvalidInput(f"token id prefix {token_id!r} is ambiguous; give more of it")
        if not rows:
            raise NotFound(f"no token {token_id!r}")
        return rows[0]

    def _issue(
        self,
        conn: Any,
        user: s.User,
        name: str,
        expires_at: float | None,
        scope: tuple[str, str, Role] | None = None,
    ) -> s.NewToken:
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
        project_id, project, role = scope or (None, None, None)
        row = {
            "id": token_id,
            "user_id": user.id,
            "name": name,
            "created_at": time.time(),
            "secret_sha256": secret_digest(secret),
            "expires_at": expires_at,
            "revoked_at": None,
            "project_id": project_id,
            "project": project,
            "role": role.value if role else None,
        }
        conn.execute(t.tokens.insert(), row)
        return s.NewToken(token=f"plt_{token_id}_{secret}", info=_token({**row, "user": user.name}))


def _visible_tokens(principal: Principal, user_id: str) -> Any:
    stmt = sa.select(t.tokens, t.users.c.name.label("user")).join(
        t.users, t.users.c.id == t.tokens.c.user_id
    )
    if not principal.is_admin:
        stmt = stmt.where(t.tokens.c.user_id == user_id)
    return stmt.order_by(t.tokens.c.created_at)


def _user(row: Any) -> s.User:
    return s.User(
        id=row["id"],
        name=row["name"],
        is_admin=row["is_admin"],
        created_at=row["created_at"],
        has_password=row["password_hash"] is not None,
    )


def _token(row: Any) -> s.Token:
    return s.Token(
        id=row["id"],
        name=row["name"],
        user=row["user"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        project=row["project"],
        role=row["role"],
    )
