"""The master key: generating one, and rotating to a new one.

Rotation re-wraps every project's data key under the new master key in one
transaction; no artifact is rewritten, and every one stays readable. It runs on the
server's machine against its database (master keys never travel over the API), and
is recorded in the audit trail.
"""

from __future__ import annotations

from plinth.core import audit
from plinth.core.access import LOCAL
from plinth.core.crypto import MasterKey, load_master_key
from plinth.core.db import Database
from plinth.core.encrypted import Keyring
from plinth.errors import InvalidInput
from plinth.settings import Settings


def current_master_key(settings: Settings) -> MasterKey | None:
    secret = settings.master_key
    return load_master_key(secret.get_secret_value() if secret else None, settings.master_key_file)


def rotate_master_key(settings: Settings, new: MasterKey) -> int:
    """Re-wrap every data key from the configured master key to ``new``."""
    old = current_master_key(settings)
    if old is None:
        raise InvalidInput(
            "no master key is configured (PLINTH_MASTER_KEY or "
            "PLINTH_MASTER_KEY_FILE): there is nothing to rotate from"
        )
    db = Database(settings.resolved_database_url(), synchronous=settings.db_synchronous)
    try:
        db.migrate()
        count = Keyring(db, old).rotate(old, new)
        with audit.recorded(db, LOCAL, "keys.rotate") as (_, change):
            change.details = {"data_keys": count, "from": old.key_id, "to": new.key_id}
        return count
    finally:
        db.dispose()
