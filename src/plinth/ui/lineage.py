"""The lineage page: the graph around one node (a dataset version, a run, a model
version, a deployment), drawn left to right from what it came from to what came of it,
each box linking to its own page. Read through ``LineageService`` as the request's
principal: nodes of projects one may not read are not there, and a node of another
project answers 404, as the API does."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from plinth.api.auth import requires
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.governance import schemas as gs
from plinth.governance.lineage import LineageService
from plinth.ui.charts import Node, Swatch, dag
from plinth.ui.datasets import dataset_url
from plinth.ui.deployments import deployment_url
from plinth.ui.models import version_url
from plinth.ui.routes import PageRoute, _service, render
from plinth.ui.views import url_segment

READ = [requires(Permission.PROJECT_READ)]
Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
Uri = Annotated[str, Query(min_length=1, max_length=600)]

# (fill, stroke) by kind of node
COLORS: dict[str, tuple[str, str]] = {
    "datasets": ("#e0f2fe", "#0284c7"),
    "runs": ("#f3f4f6", "#6b7280"),
    "models": ("#dcfce7", "#16a34a"),
    "deployments": ("#fef3c7", "#d97706"),
    "predictions": ("#fce7f3", "#db2777"),
}
OTHER = ("#f5f5f5", "#a3a3a3")
LEGEND = [
    Swatch(label, *COLORS[kind])
    for kind, label in (
        ("datasets", "dataset version"),
        ("runs", "run"),
        ("models", "model version"),
        ("deployments", "deployment"),
        ("predictions", "prediction"),
    )
]

router = APIRouter(include_in_schema=False, route_class=PageRoute)


def lineage_url(project: str, uri: str) -> str:
    from urllib.parse import quote

    return f"/projects/{url_segment(project)}/lineage?uri={quote(uri, safe='')}"


@router.get("/projects/{project}/lineage", response_class=HTMLResponse, dependencies=READ)
def lineage_page(request: Request, project: Project, uri: Uri) -> HTMLResponse:
    graph = _service(request, LineageService).lineage(project, uri)
    return render(
        "lineage.html",
        project=project,
        graph=graph,
        picture=dag(
            boxes(graph, project),
            LEGEND,
            title=f"lineage of {graph.root}",
            kind="node",
        ),
        label=label,
        href=href,
        lineage_url=lineage_url,
    )


def boxes(graph: gs.LineageGraph, project: str) -> list[Node]:
    """The graph's nodes, each after those with an edge into it, as ``dag`` wants."""
    upstream: dict[str, list[str]] = {n.uri: [] for n in graph.nodes}
    for edge in graph.edges:
        if edge.src in upstream and edge.dst in upstream:
            upstream[edge.dst].append(edge.src)
    names = _labels(graph)
    placed: list[str] = []
    left = set(upstream)
    while left:  # each round places what has nothing unplaced upstream (a cycle: all)
        ready = sorted(u for u in left if not (set(upstream[u]) & left)) or sorted(left)
        placed += ready
        left -= set(ready)
    kinds = {n.uri: n for n in graph.nodes}
    out = []
    for uri in placed:
        node = kinds[uri]
        fill, stroke = COLORS.get(node.kind, OTHER)
        here = node.project or project
        out.append(
            Node(
                name=names[uri],
                upstream=[names[u] for u in upstream[uri]],
                caption="this one" if uri == graph.root else here,
                fill=fill,
                stroke=stroke,
                href=href(uri, here) or lineage_url(here, uri),
                dashed=uri == graph.root,
            )
        )
    return out


def _labels(graph: gs.LineageGraph) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in graph.nodes:
        name = label(node.uri)
        names[node.uri] = name if name not in names.values() else node.uri
    return names


def label(uri: str) -> str:
    """A node as a person names it: ``churn@3``, ``run 1a2b3c4d``, ``churn v3``."""
    kind, _, rest = uri.partition(":/")
    parts = rest.split("/")
    if kind == "datasets" and len(parts) == 2:
        return parts[1]
    if kind == "runs" and len(parts) == 1:
        return f"run {parts[0][:8]}"
    if kind == "models" and len(parts) == 3:
        return f"{parts[1]} v{parts[2]}"
    if kind == "deployments" and len(parts) == 2:
        return f"deployment {parts[1]}"
    if kind == "predictions" and len(parts) == 3:
        return f"prediction {parts[2][:8]}"
    return uri


def href(uri: str, project: str) -> str:
    """The page of a node, or '' when it has none."""
    kind, _, rest = uri.partition(":/")
    parts = rest.split("/")
    if kind == "datasets" and len(parts) == 2 and "@" in parts[1]:
        return dataset_url(parts[0], parts[1])
    if kind == "runs" and len(parts) == 1:
        return f"/runs/{url_segment(parts[0])}"
    if kind == "models" and len(parts) == 3 and parts[2].isdecimal():
        return version_url(parts[0], parts[1], int(parts[2]))
    if kind == "deployments" and len(parts) == 2:
        return deployment_url(parts[0], parts[1])
    return ""
