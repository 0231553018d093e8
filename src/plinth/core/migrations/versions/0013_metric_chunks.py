"""metric chunks: a metric's history as packed column chunks, not a row per point

Revision ID: 0013
Revises: 0012
"""

import sys
from array import array
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

CHUNK = 10_000  # points per chunk made from the old rows


def _packed(kind: str, values: list[Any]) -> bytes:
    packed = array(kind, values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def upgrade() -> None:
    chunks = op.create_table(
        "metric_chunks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("steps", sa.LargeBinary, nullable=False),
        sa.Column("timestamps", sa.LargeBinary, nullable=False),
        sa.Column("values", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_metric_chunks_run_key", "metric_chunks", ["run_id", "key", "id"])
    # Each metric's points, by step then time (NULL was NaN), become chunks in order.
    conn = op.get_bind()
    # Streamed (a server-side cursor on Postgres): a store's history need not fit in memory.
    rows = conn.execute(
        sa.text(
            'SELECT run_id, "key", step, "timestamp", "value" FROM metrics '
            'ORDER BY run_id, "key", step, "timestamp"'
        ).execution_options(stream_results=True, yield_per=10_000)
    )
    for (run_id, key), points in groupby(rows, key=lambda r: (r[0], r[1])):
        batch: list[Any] = []
        for point in points:
            batch.append(point)
            if len(batch) == CHUNK:
                _insert(conn, chunks, run_id, key, batch)
                batch = []
        if batch:
            _insert(conn, chunks, run_id, key, batch)
    op.drop_index("ix_metrics_run_key_step", table_name="metrics")
    op.drop_table("metrics")


def _insert(conn: Any, chunks: Any, run_id: str, key: str, points: list[Any]) -> None:
    nan = float("nan")
    conn.execute(
        chunks.insert().values(
            run_id=run_id,
            key=key,
            count=len(points),
            steps=_packed("q", [p[2] for p in points]),
            timestamps=_packed("d", [p[3] for p in points]),
            values=_packed("d", [nan if p[4] is None else p[4] for p in points]),
        )
    )
