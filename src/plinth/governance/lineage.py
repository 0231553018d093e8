"""Lineage as readers see it: the graph around one node, upstream and downstream,
limited to the projects the reader may read. The edges are recorded by each capability
in the kernel (``core/lineage.py``) when the thing happens.

A prediction (``predictions:/PROJECT/DEPLOYMENT/ID``, its ``X-Plinth-Prediction-Id``)
is not an edge of its own (a deployment answers millions): its record names the model
version that answered, and its graph is that version's with the prediction added.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.core import lineage
from plinth.core.access import Need, Principal
from plinth.core.platform import Platform
from plinth.core.projects import visible_projects
from plinth.data import tables as dt
from plinth.errors import InvalidInput, NotFound
from plinth.governance import schemas as s
from plinth.registry import tables as rt
from plinth.serving import tables as st
from plinth.serving.service import DeploymentService
from plinth.tracking import tables as tt

PREDICTIONS = "predictions:/"
_NAME = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,199})"
_VERSION = r"([0-9]{1,9})"
_PREDICTION = re.compile(rf"predictions:/{_NAME}/{_NAME}/([^/\s]+)")


@dataclass(frozen=True)
class _Kind:
    """A kind of node: its URI's form, and the query that finds the object it names
    in a project (from the URI's parts), as its capability stores it."""

    form: str
    pattern: re.Pattern[str]
    stored: Callable[[str, tuple[str, ...]], sa.Select[Any]]


def _run(pid: str, parts: tuple[str, ...]) -> sa.Select[Any]:
    r = tt.runs
    return sa.select(r.c.id).where(r.c.id == parts[0], r.c.project_id == pid)


def _model_version(pid: str, parts: tuple[str, ...]) -> sa.Select[Any]:
    m, v = rt.registered_models, rt.model_versions
    return (
        sa.select(v.c.version)
        .join(m, m.c.id == v.c.model_id)
        .where(m.c.project_id == pid, m.c.name == parts[1], v.c.version == int(parts[2]))
    )


def _dataset_version(pid: str, parts: tuple[str, ...]) -> sa.Select[Any]:
    d, v = dt.datasets, dt.dataset_versions
    return (
        sa.select(v.c.version)
        .join(d, d.c.id == v.c.dataset_id)
        .where(d.c.project_id == pid, d.c.name == parts[1], v.c.version == int(parts[2]))
    )


def _deployment(pid: str, parts: tuple[str, ...]) -> sa.Select[Any]:
    d = st.deployments
    return sa.select(d.c.id).where(d.c.project_id == pid, d.c.name == parts[1])


_KINDS = {
    "datasets": _Kind(
        "datasets:/PROJECT/NAME@VERSION",
        re.compile(rf"datasets:/{_NAME}/{_NAME}@{_VERSION}"),
        _dataset_version,
    ),
    "runs": _Kind("runs:/RUN_ID (32 hex digits)", re.compile(r"runs:/([0-9a-f]{32})"), _run),
    "models": _Kind(
        "models:/PROJECT/NAME/VERSION",
        re.compile(rf"models:/{_NAME}/{_NAME}/{_VERSION}"),
        _model_version,
    ),
    "deployments": _Kind(
        "deployments:/PROJECT/NAME", re.compile(rf"deployments:/{_NAME}/{_NAME}"), _deployment
    ),
}
_FORMS = ", ".join([*(k.form for k in _KINDS.values()), "predictions:/PROJECT/DEPLOYMENT/ID"])


class LineageService:
    def __init__(self, platform: Platform, *, deployments: DeploymentService) -> None:
        self.db = platform.db
        self.projects = platform.projects
        self.deployments = deployments

    def lineage(self, project: str, uri: str, *, principal: Principal) -> s.LineageGraph:
        """What ``uri`` came from and what came of it, in the projects one may read.
        A node that is not in ``project`` answers 404, the same whether it is in
        another project or nowhere; a URI of no node's form, 400."""
        if uri.startswith(PREDICTIONS):
            return self._prediction(project, uri, principal)
        kind, parts = _parse(uri)
        with self.db.read() as conn:
            pid = self.projects.require(conn, project, principal, Need.READ)
            self._require_node(conn, project, pid, uri, kind, parts)
            nodes, edges = lineage.walk(conn, uri, visible_projects(principal))
            names = self.projects.names(conn, set(nodes.values()) | {pid})
        nodes.setdefault(uri, pid)
        return s.LineageGraph(
            root=uri,
            nodes=[
                s.LineageNode(uri=u, kind=u.split(":", 1)[0], project=names.get(p, ""))
                for u, p in sorted(nodes.items())
            ],
            edges=[s.LineageEdge(src=e.src, dst=e.dst, relation=e.relation) for e in edges],
        )

    def _require_node(
        self, conn: Connection, project: str, pid: str, uri: str, kind: str, parts: tuple[str, ...]
    ) -> None:
        """NotFound unless the node is in the project, as its edges say or, for one with
        no edges yet, its capability's table. (A deleted deployment keeps its edges, and
        so its history.)"""
        if kind != "runs" and parts[0] != project:  # the URI names another project
            raise _absent(uri, project)
        owner = lineage.project_of(conn, uri)
        if owner is None and conn.execute(_KINDS[kind].stored(pid, parts).limit(1)).first():
            owner = pid
        if owner != pid:
            raise _absent(uri, project)

    def _prediction(self, project: str, uri: str, principal: Principal) -> s.LineageGraph:
        """The graph of the model version that answered, with the prediction added."""
        match = _PREDICTION.fullmatch(uri)
        if match is None:
            raise InvalidInput(
                f"not a lineage URI: {uri!r}; use predictions:/PROJECT/DEPLOYMENT/ID"
            )
        owner, name, prediction_id = match.groups()
        if owner != project:
            raise _absent(uri, project)
        record = self.deployments.find_prediction(project, name, prediction_id, principal=principal)
        deployment = f"deployments:/{project}/{name}"
        answered = f"models:/{project}/{record.model}/{record.version}"
        graph = self.lineage(project, answered, principal=principal)
        known = {node.uri for node in graph.nodes}
        added = [
            s.LineageNode(uri=u, kind=u.split(":", 1)[0], project=project)
            for u in (deployment, uri)
            if u not in known
        ]
        return s.LineageGraph(
            root=uri,
            nodes=sorted([*graph.nodes, *added], key=lambda n: n.uri),
            edges=[
                *graph.edges,
                s.LineageEdge(src=answered, dst=uri, relation="answered"),
                s.LineageEdge(src=deployment, dst=uri, relation="recorded"),
            ],
        )


def _parse(uri: str) -> tuple[str, tuple[str, ...]]:
    """A node's kind and the parts of its URI that name it; InvalidInput for a URI of
    no node's form."""
    name = uri.partition(":/")[0]
    kind = _KINDS.get(name)
    match = kind.pattern.fullmatch(uri) if kind is not None else None
    if match is None:
        raise InvalidInput(f"not a lineage URI: {uri!r}; use {kind.form if kind else _FORMS}")
    return name, match.groups()


def _absent(uri: str, project: str) -> NotFound:
    # One answer for a node of another project and for none at all: no existence oracle.
    return NotFound(f"no {uri} in project {project!r}")
