"""The master key: rotating to a new one.

Rotation re-wraps every project's data key under the new master key in one
transaction; no artifact is rewritten, and every one stays readable. It runs on the
server's machine against its database (master keys never travel over the API), and
is recorded in the audit trail.
"""

from __future__ import annotations

from plinth.core.access import LOCAL
from plinth.core.crypto import MasterKey
from plinth.core.platform import Platform
from plinth.errors import InvalidInput
from plinth.settings import Settings


def rotate_master_key(settings: Settings, new: MasterKey) -> int:
    """Re-wrap every data key from the configured master key to ``new``."""
    platform = Platform.open(settings)
    try:
        old = platform.keyring.master
        if old is None:
            raise InvalidInput(
                "no master key is configured (PLINTH_MASTER_KEY or "
                "PLINTH_MASTER_KEY_FILE): there is nothing to rotate from"
            )
        count = platform.keyring.rotate(old, new)
        with platform.audit.recorded(LOCAL, "keys.rotate") as (_, change):
            change.details = {"data_keys": count, "from": old.key_id, "to": new.key_id}
        return count
    finally:
        platform.close()
