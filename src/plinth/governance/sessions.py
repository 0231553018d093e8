"""Passwords and web sessions for people using the UI.

Passwords are hashed with argon2id. Logging in gives a session cookie (HttpOnly,
SameSite=Strict) holding ``<id>.<secret>``, of which only the secret's sha256 is kept,
and a CSRF token that every unsafe request made with the cookie must echo in
``X-CSRF-Token``. Failed logins are limited per user and address.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from plinth.core.access import ANONYMOUS, Principal
from plinth.core.platform import Platform
from plinth.errors import InvalidInput, NotFound, PermissionDenied, TooManyRequests, Unauthenticated
from plinth.governance import tables as t

SESSION_SECONDS = 12 * 3600
MIN_PASSWORD = 12
MAX_FAILURES, FAILURE_WINDOW_S = 5, 60.0


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

    def set_password(self, user: str, password: str, *, principal: Principal) -> None:
        """Set a user's password: their own, or anyone's for a platform admin."""
        if len(password) < MIN_PASSWORD:
            raise InvalidInput(f"a password has at least {MIN_PASSWORD} characters")
        with self.audit.recorded(principal, "users.password", object=user) as (conn, _):
            row = conn.execute(sa.select(t.users.c.id).where(t.users.c.name == user)).first()
            if row is None or not (principal.is_admin or row.id == principal.user_id):
                raise NotFound(f"no user {user!r}")
            conn.execute(
                t.users.update()
                .where(t.users.c.id == row.id)
                .values(password_hash=self.hasher.hash(password))
            )

    def login(self, user: str, password: str, source: str) -> Session:
        self._check_rate(user, source)
        with self.db.read() as conn:
            row = conn.execute(sa.select(t.users).where(t.users.c.name == user)).mappings().first()
        if row is None or not self._verify(row["password_hash"], password):
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
            name=row["name"], user_id=row["id"], is_admin=row["is_admin"], source=source
        )
        with self.audit.recorded(principal, "login", object=row["name"]) as (conn, _):
            now = time.time()
            conn.execute(
                t.sessions.insert(),
                {
                    "id": session_id,
                    "user_id": row["id"],
                    "secret_sha256": _sha256(secret),
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
        if row is None or not hmac.compare_digest(row["secret_sha256"], _sha256(secret)):
            raise Unauthenticated("your session is unknown; log in again")
        if row["expires_at"] < time.time():
            raise Unauthenticated("your session has expired; log in again")
        principal = Principal(
            name=row["name"], user_id=row["user_id"], is_admin=row["is_admin"], source=source
        )
        return Session(cookie, row["csrf"], principal)

    def logout(self, cookie: str) -> None:
        with self.db.write() as conn:
            conn.execute(t.sessions.delete().where(t.sessions.c.id == cookie.partition(".")[0]))

    @staticmethod
    def check_csrf(session: Session, sent: str | None) -> None:
        if not sent or not hmac.compare_digest(sent, session.csrf):
            raise PermissionDenied("missing or wrong CSRF token (X-CSRF-Token)")

    def _verify(self, stored: str | None, password: str) -> bool:
        if stored is None:
            return False
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _check_rate(self, user: str, source: str) -> None:
        with self._lock:
            failures = self._failures.get((user, source))
            cutoff = time.monotonic() - FAILURE_WINDOW_S
            while failures and failures[0] < cutoff:
                failures.popleft()
            if failures is not None and len(failures) >= MAX_FAILURES:
                raise TooManyRequests("too many failed logins; wait a minute")

    def _record_failure(self, user: str, source: str) -> None:
        with self._lock:
            self._failures.setdefault((user, source), collections.deque()).append(time.monotonic())


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
