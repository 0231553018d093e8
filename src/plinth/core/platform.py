"""The platform object: what every service receives, built once from the settings.

Settings, the database, the blob store, the keyring, the audit trail, the project
guard and artifact storage. Services take a ``Platform`` and nothing else from the
kernel, so a capability is written against one object, and a test builds one with
``Platform.open(settings)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from plinth.core.artifacts import Artifacts
from plinth.core.audit import AuditLog
from plinth.core.blobs import BlobStore, open_store
from plinth.core.crypto import MasterKey, load_master_key
from plinth.core.db import Database
from plinth.core.encrypted import Keyring
from plinth.core.projects import Projects
from plinth.settings import Settings


@dataclass
class Platform:
    settings: Settings
    db: Database
    blobs: BlobStore
    keyring: Keyring
    audit: AuditLog
    projects: Projects
    artifacts: Artifacts
    embedded: bool = False  # an in-process app of one program, not a server

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True, embedded: bool = False) -> Platform:
        db = Database(settings.resolved_database_url(), synchronous=settings.db_synchronous)
        if migrate:
            db.migrate()
        blobs = open_blob_store(settings)
        keyring = Keyring(db, master_key(settings))
        audit = AuditLog(db)
        return cls(
            settings=settings,
            db=db,
            blobs=blobs,
            keyring=keyring,
            audit=audit,
            projects=Projects(db, audit, admins_create=settings.projects_by_admins_only),
            artifacts=Artifacts(db, blobs, keyring, max_bytes=settings.server.max_artifact_bytes),
            embedded=embedded,
        )

    def close(self) -> None:
        self.db.dispose()


def open_blob_store(settings: Settings) -> BlobStore:
    secret = settings.s3.secret_access_key
    return open_store(
        settings.resolved_artifacts_url(),
        s3_endpoint_url=settings.s3.endpoint_url,
        s3_region=settings.s3.region,
        s3_access_key_id=settings.s3.access_key_id,
        s3_secret_access_key=secret.get_secret_value() if secret else None,
    )


def master_key(settings: Settings) -> MasterKey | None:
    """The configured master key (``PLINTH_MASTER_KEY`` or its file), if any."""
    secret = settings.master_key
    return load_master_key(secret.get_secret_value() if secret else None, settings.master_key_file)
