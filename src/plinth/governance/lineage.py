"""Lineage as readers see it: the graph around one node, upstream and downstream,
limited to the projects the reader may read. The edges are recorded by each capability
in the kernel (``core/lineage.py``) when the thing happens."""

from __future__ import annotations

from plinth.core import lineage
from plinth.core.access import Need, Principal
from plinth.core.platform import Platform
from plinth.core.projects import visible_projects
from plinth.errors import NotFound
from plinth.governance import schemas as s


class LineageService:
    def __init__(self, platform: Platform) -> None:
        self.db = platform.db
        self.projects = platform.projects

    def lineage(self, project: str, uri: str, *, principal: Principal) -> s.LineageGraph:
        """What ``uri`` came from and what came of it, in the projects one may read;
        a node of another project answers as one with no lineage would not: 404."""
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
