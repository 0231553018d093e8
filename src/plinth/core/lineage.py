"""Lineage: one graph from dataset versions through runs to model versions and on,
as typed edges that each capability records when the thing happens (a run reads a
dataset version, a run's files become a model version), in the same transaction.

A node is a URI (``datasets:/PROJECT/NAME@3``, ``runs:/ID``, ``models:/PROJECT/NAME/3``)
with the id of the project it belongs to, so a walk shows a reader only the projects
they may read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core.db import Database, metadata

MAX_NODES = 1000  # a walk stops growing here
MAX_DEPTH = 20

lineage_edges = sa.Table(
    "lineage_edges",
    metadata,
    sa.Column("src", sa.String(600), primary_key=True),
    sa.Column("dst", sa.String(600), primary_key=True),
    sa.Column("relation", sa.String(32), nullable=False),  # read | produced | …
    sa.Column("src_project_id", sa.String(32), nullable=False),
    sa.Column("dst_project_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_lineage_edges_dst", "dst"),
)


@dataclass(frozen=True)
class Node:
    uri: str
    project_id: str


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    relation: str


def record(db: Database, conn: Connection, src: Node, dst: Node, relation: str) -> None:
    """One edge, inside the caller's transaction; recording it again changes nothing."""
    conn.execute(
        db.insert_ignoring_duplicates(lineage_edges),
        {
            "src": src.uri,
            "dst": dst.uri,
            "relation": relation,
            "src_project_id": src.project_id,
            "dst_project_id": dst.project_id,
            "created_at": time.time(),
        },
    )


def project_of(conn: Connection, uri: str) -> str | None:
    """The project a node belongs to, as its edges say (None: no edge names it)."""
    e = lineage_edges
    found = (
        conn.execute(sa.select(e.c.src_project_id).where(e.c.src == uri).limit(1)).scalar()
        or conn.execute(sa.select(e.c.dst_project_id).where(e.c.dst == uri).limit(1)).scalar()
    )
    return None if found is None else str(found)


def walk(conn: Connection, root: str, visible: Any) -> tuple[dict[str, str], list[Edge]]:
    """Everything upstream and downstream of ``root`` in projects ``visible`` (a list or
    subquery of project ids; None: all): each node's project id, and the edges."""
    e = lineage_edges
    nodes: dict[str, str] = {}
    edges: set[Edge] = set()
    for upstream in (True, False):
        near = e.c.dst if upstream else e.c.src
        frontier, seen = {root}, {root}
        for _ in range(MAX_DEPTH):
            if not frontier or len(nodes) >= MAX_NODES:
                break
            stmt = sa.select(e).where(near.in_(sorted(frontier)))
            if visible is not None:
                stmt = stmt.where(e.c.src_project_id.in_(visible), e.c.dst_project_id.in_(visible))
            following: set[str] = set()
            for row in conn.execute(stmt):
                edges.add(Edge(row.src, row.dst, row.relation))
                nodes[row.src], nodes[row.dst] = row.src_project_id, row.dst_project_id
                there = row.src if upstream else row.dst
                if there not in seen:
                    seen.add(there)
                    following.add(there)
            frontier = following
    return nodes, sorted(edges, key=lambda x: (x.src, x.dst))
