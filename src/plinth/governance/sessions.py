"""Passwords and web sessions for people using the UI.

Passwords are hashed with argon2id. Logging in gives a session cookie (HttpOnly,
SameSite=Strict) holding ``<id>.<secret>``, of which only the secret's sha256 is kept,
and a CSRF token that every unsafe request made with the cookie must echo in
``X-CSRF-Token``. Failed logins, and wrong current passwords, are limited per user and
address.

Changing one's own password needs the current one (whoever holds a stolen session or
token cannot lock its owner out); a platform admin resets anyone else's without it.
Either way every other session of that user ends.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from plinth.core.access import ANONYMOUS, Principal, scope_limit
from plinth.core.platform import Platform
from plinth.errors import InvalidInput, NotFound, PermissionDenied, TooManyRequests, Unauthenticated
from plinth.governance import tables as t

SESSION_SECONDS = 12 * 3600
MIN_PASSWORD = 12
MAX_FAILURES, FAILURE_WINDOW_S = 5, 60.0
PRUNE_AT = 1024  # (user, source) pairs with failures kept before the stale are dropped
NO_ADMIN_YET = (
    "there is no admin yet: create the first one with 'plinth admin init' on the "
    "machine that holds this Plinth home"
)


def acting_user(principal: Principal) -> str:
    """The id of the user a request acts as, for what concerns that user's identity
    (tokens, password, account). A project-scoped token does project work only, and
    before the first admin there is no user to act as."""
    if principal.scope_project_id is not None:
        raise PermissionDenied(
            f"{scope_limit(principal)}: it cannot manage tokens, passwords or users"
        )
    if principal.user_id is None:
        raise PermissionDenied(NO_ADMIN_YET)
    return principal.user_id


@dataclass(frozen=True)
class Session:
    cookie: str
    csrf: str
    principal: Principal


class SessionService:
    def __init__(self, platform: Platform) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.hasher = PasswordHasher()
        self._failures: dict[tuple[str, str], collections.deque[float]] = {}
        self._lock = threading.Lock()
        self._prune_at = PRUNE_AT
        self._decoy_hash: str | None = None

    def set_password(
        self,
        user: str,
        password: str,
        current_password: str | None = None,
        *,
        principal: Principal,
    ) -> None:
        """Set a user's password: one's own (giving the current one, if one is set), or
        anyone's for a platform admin. Ends every other session of that user."""
        if len(password) < MIN_PASSWORD:
            raise InvalidInput(f"a password has at least {MIN_PASSWORD} characters")
        new_hash = self.hasher.hash(password)  # slow on purpose: before the write lock
        with self.audit.recorded(principal, "users.password", object=user) as (conn, ch):
            acting_user(principal)
            row = conn.execute(_PASSWORD_OF, {"name": user}).first()
            own = row is not None and row.id == principal.user_id
            if row is None or not (own or principal.is_admin):
                raise NotFound(f"no user {user!r}")
            if own and row.password_hash is not None:
                self._check_current(user, row.password_hash, current_password, principal.source)
            conn.execute(
                t.users.update().where(t.users.c.id == row.id).values(password_hash=new_hash)
            )
            ended = conn.execute(
                t.sessions.delete().where(
                    t.sessions.c.user_id == row.id, t.sessions.c.id != (principal.session_id or "")
                )
            )
            ch.details = {"reset_by_admin": not own, "sessions_ended": ended.rowcount}

    def _check_current(self, user: str, stored: str, current: str | None, source: str) -> None:
        if not current:
            raise InvalidInput(
                "changing your own password needs the current one (current_password)"
            )
        self._check_rate(user, source)
        if not self._verify(stored, current):
            self._record_failure(user, source)
            raise PermissionDenied("the current password is wrong")

    def login(self, user: str, password: str, source: str) -> Session:
        self._check_rate(user, source)
        with self.db.read() as conn:
            row = conn.execute(sa.select(t.users).where(t.users.c.name == user)).mappings().first()
        stored = None if row is None else row["password_hash"]
        if not self._verify(stored, password) or row is None:
            self._record_failure(user, source)
            exc = Unauthenticated("wrong user name or password")
            self.audit.refusal(ANONYMOUS.from_address(source), "login", exc, object=user)
            raise exc
        session_id, secret, csrf = (
            secrets.token_hex(8),
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
        )
        principal = Principal(
            name=row["name"],
            user_id=row["id"],
            is_admin=row["is_admin"],
            source=source,
            session_id=session_id,
        )
        with self.audit.recorded(principal, "login", object=row["name"]) as (conn, _):
            now = time.time()
            conn.execute(
                t.sessions.insert(),
                {
                    "id": session_id,
                    "user_id": row["id"],
                    "secret_sha256": secret_digest(secret),
                    "csrf": csrf,
                    "created_at": now,
                    "expires_at": now + SESSION_SECONDS,
                },
            )
        return Session(f"{session_id}.{secret}", csrf, principal)

    def resolve(self, cookie: str, source: str) -> Session:
        """The session a cookie names; Unauthenticated when unknown or expired."""
        session_id, _, secret = cookie.partition(".")
        with self.db.read() as conn:
            row = (
                conn.execute(
                    sa.select(t.sessions, t.users.c.name, t.users.c.is_admin)
                    .join(t.users, t.users.c.id == t.sessions.c.user_id)
                    .where(t.sessions.c.id == session_id)
                )
                .mappings()
                .first()
            )
        if row is None or not hmac.compare_digest(row["secret_sha256"], secret_digest(secret)):
            raise Unauthenticated("your session is unknown; log in again")
        if row["expires_at"] < time.time():
            raise Unauthenticated("your session has expired; log in again")
        principal = Principal(
            name=row["name"],
            user_id=row["user_id"],
            is_admin=row["is_admin"],
            source=source,
            session_id=row["id"],
        )
        return Session(cookie, row["csrf"], principal)

    def logout(self, cookie: str) -> None:
        with self.db.write() as conn:
            conn.execute(t.sessions.delete().where(t.sessions.c.id == cookie.partition(".")[0]))

    @staticmethod
    def check_csrf(session: Session, sent: str | None) -> None:
        # As bytes: compare_digest refuses str with non-ASCII characters (a 500).
        if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise PermissionDenied("missing or wrong CSRF token (X-CSRF-Token)")

    def _verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; as slow for no user, or one with no
        password, as for a wrong password, so the time taken tells neither apart."""
        if stored is None:
            with contextlib.suppress(VerificationError):  # a random password's hash
                self.hasher.verify(self._decoy(), password)
            return False
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _decoy(self) -> str:
        if self._decoy_hash is None:
            self._decoy_hash = self.hasher.hash(secrets.token_urlsafe(32))
        return self._decoy_hash

    def _check_rate(self, user: str, source: str) -> None:
        with self._lock:
            failures = self._failures.get((user, source))
            cutoff = time.monotonic() - FAILURE_WINDOW_S
            while failures and failures[0] < cutoff:
                failures.popleft()
            if failures is not None and len(failures) >= MAX_FAILURES:
                raise TooManyRequests("too many failed logins; wait a minute")

    def _record_failure(self, user: str, source: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._failures.setdefault((user, source), collections.deque()).append(now)
            if len(self._failures) > self._prune_at:  # names tried once are not kept forever
                cutoff = now - FAILURE_WINDOW_S
                for key in [k for k, times in self._failures.items() if times[-1] < cutoff]:
                    del self._failures[key]
                self._prune_at = max(PRUNE_AT, 2 * len(self._failures))


_PASSWORD_OF = sa.select(t.users.c.id, t.users.c.password_hash).where(
    t.users.c.name == sa.bindparam("name")
)


def secret_digest(secret: str) -> str:
    """What is kept of a random secret (a session's, a token's): its sha256."""
    return hashlib.sha256(secret.encode()).hexdigest()
