"""One Alembic migration tree for SQLite and Postgres.

``HEAD`` names the newest revision so that opening an up-to-date database costs one
query, not an Alembic start-up; a test checks it against the tree.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

HEAD = "0022"
_HERE = Path(__file__).parent


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def alembic_config(engine: sa.Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)
