"""Lineage as readers see it: the graph around one node, upstream and downstream,
limited to the projects the reader may read. The edges are recorded by each capability
in the kernel (``core/lineage.py``) when the thing happens.

A prediction (``predictions:/PROJECT/DEPLOYMENT/ID``, its ``X-Plinth-Prediction-Id``)
is not an edge of its own (a deployment answers millions): its record names the model
version that answered, and its graph is that version's with the prediction added.
"""

from __future__ import annotations

from plinth.core import lineage
from plinth.core.access import Need, Principal
from plinth.core.platform import Platform
from plinth.core.projects import visible_projects
from plinth.errors import NotFound
from plinth.governance import schemas as s
from plinth.serving.service import DeploymentService

PREDICTIONS = "predictions:/"


class LineageService:
    def __init__(self, platform: Platform, *, deployments: DeploymentService) -> None:
        self.db = platform.db
        self.projects = platform.projects
        self.deployments = deployments

    def lineage(self, project: str, uri: str, *, principal: Principal) -> s.LineageGraph:
        """What ``uri`` came from and what came of it, in the projects one may read;
        a node of another project answers as one with no lineage would not: 404."""
        if uri.startswith(PREDICTIONS):
            return self._prediction(project, uri, principal)
        with self.db.read() as conn:
            pid = self.projects.require(conn, project, principal, Need.READ)
            owner = lineage.project_of(conn, uri)
            if owner is not None and owner != pid:
                raise NotFound(f"{uri} is not in project {project!r}")
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

    def _prediction(self, project: str, uri: str, principal: Principal) -> s.LineageGraph:
        """The graph of the model version that answered, with the prediction added."""
        owner, _, rest = uri.removeprefix(PREDICTIONS).partition("/")
        name, _, prediction_id = rest.partition("/")
        if owner != project or not name or not prediction_id or "/" in prediction_id:
            raise NotFound(f"{uri} is not a prediction of project {project!r}")
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
