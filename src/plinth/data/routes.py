"""HTTP routes of datasets: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.api.uploads import download_headers, file_download, receive_upload, streamed_body
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.data import schemas as s
from plinth.data.packs import MEDIA_TYPE
from plinth.data.refs import DATASET_NAME
from plinth.data.service import DatasetService
from plinth.tracking.schemas import DIGEST, check_artifact_path

router = APIRouter(prefix="/api/v1/projects/{project}/datasets", tags=["data"])
Read = Annotated[Caller[DatasetService], caller(DatasetService, Permission.PROJECT_READ)]
Write = Annotated[Caller[DatasetService], caller(DatasetService, Permission.PROJECT_WRITE)]
Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
Name = Annotated[str, Path(pattern=DATASET_NAME, max_length=200)]
Version = Annotated[
    str, Path(pattern=r"^(latest|[1-9][0-9]{0,9})$", description="a number, or latest")
]
FilePath = Annotated[str, Path(max_length=1000, description="relative, '/'-separated")]


@router.get("", response_model=list[s.Dataset])
async def list_datasets(project: Project, c: Read) -> list[s.Dataset]:
    return await c(c.service.list_datasets, project)


@router.get("/{name}", response_model=s.Dataset)
async def get_dataset(project: Project, name: Name, c: Read) -> s.Dataset:
    return await c(c.service.get_dataset, project, name)


@router.get("/{name}/rules", response_model=s.Rules)
async def get_rules(project: Project, name: Name, c: Read) -> s.Rules:
    """The dataset's validation rules, and the digest a push's report must name."""
    return await c(c.service.get_rules, project, name)


@router.put("/{name}/rules", response_model=s.Rules)
async def set_rules(project: Project, name: Name, rules: s.RuleSet, c: Write) -> s.Rules:
    """Replace the dataset's validation rules (an empty list removes them)."""
    return await c(c.service.set_rules, project, name, rules)


@router.post("/{name}/content/missing", response_model=s.ContentMissing)
async def missing_content(
    project: Project, name: Name, query: s.ContentQuery, c: Write
) -> s.ContentMissing:
    """Which of these digests the project lacks: upload those, then create the version."""
    return await c(c.service.missing_content, project, name, query)


@router.put(
    "/{name}/content",
    response_model=s.Content,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=streamed_body("max_artifact_bytes"),
)
async def upload_content(
    project: Project,
    name: Name,
    request: Request,
    c: Write,
    digest: Annotated[str, Header(alias="X-Plinth-Digest", pattern=DIGEST)],
) -> s.Content:
    """One file's bytes; they must hash to the ``X-Plinth-Digest`` header."""
    return await receive_upload(
        request,
        c.principal,
        lambda chunks: c.service.upload_content(
            project, name, chunks, digest, principal=c.principal
        ),
    )


@router.put(
    "/{name}/content/batch",
    response_model=s.ContentBatch,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=streamed_body("max_artifact_bytes"),
)
async def upload_batch(project: Project, name: Name, request: Request, c: Write) -> s.ContentBatch:
    """Many files' bytes in one tar stream (sent as ``application/octet-stream``), each
    member named by the sha256 its bytes must hash to (only regular members; nothing
    is extracted)."""
    return await receive_upload(
        request,
        c.principal,
        lambda chunks: c.service.upload_batch(project, name, chunks, principal=c.principal),
    )


@router.post(
    "/{name}/versions",
    response_model=s.DatasetVersion,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "the same files as the newest version: that version"}},
)
async def create_version(
    project: Project, name: Name, req: s.VersionCreate, response: Response, c: Write
) -> s.DatasetVersion:
    """The next version, naming files whose content the project holds."""
    version = await c(c.service.create_version, project, name, req)
    if not version.created:
        response.status_code = status.HTTP_200_OK
    return version


@router.get("/{name}/versions", response_model=list[s.DatasetVersion])
async def list_versions(project: Project, name: Name, c: Read) -> list[s.DatasetVersion]:
    return await c(c.service.list_versions, project, name)


@router.get("/{name}/versions/{version}", response_model=s.DatasetVersion)
async def get_version(project: Project, name: Name, version: Version, c: Read) -> s.DatasetVersion:
    return await c(c.service.get_version, project, name, version)


@router.get("/{name}/versions/{version}/files", response_model=list[s.DatasetFile])
async def version_files(
    project: Project, name: Name, version: Version, c: Read
) -> list[s.DatasetFile]:
    return await c(c.service.version_files, project, name, version)


@router.get(
    "/{name}/versions/{version}/files/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_file(
    project: Project, name: Name, version: Version, path: FilePath, c: Read
) -> StreamingResponse:
    check_artifact_path(path)
    found, chunks = await c(c.service.open_file, project, name, version, path)
    return file_download(c.blocking, chunks, size=found.size, digest=found.digest, name=found.path)


@router.post("/{name}/versions/{version}/uses", response_model=s.DatasetVersion, status_code=201)
async def use_version(
    project: Project, name: Name, version: Version, req: s.DatasetUse, c: Write
) -> s.DatasetVersion:
    """Record that a run read this version (lineage)."""
    return await c(c.service.use, project, name, version, req)


@router.get("/{name}/versions/{version}/profiles", response_model=dict[str, s.Profile])
async def profiles(project: Project, name: Name, version: Version, c: Read) -> dict[str, s.Profile]:
    """Each tabular file's profile, by path: counts, nulls, ranges, quantiles,
    histograms, top values."""
    return await c(c.service.profiles, project, name, version)


@router.post(
    "/{name}/versions/{version}/archive",
    response_class=StreamingResponse,
    responses={200: {"content": {MEDIA_TYPE: {}}}},
)
async def archive(
    project: Project, name: Name, version: Version, req: s.ArchiveRequest, c: Read
) -> StreamingResponse:
    """Files of a version in one tar stream, members named by path, in the order asked."""
    length, chunks = await c(c.service.archive, project, name, version, req.paths)
    return StreamingResponse(
        c.blocking.iterate(chunks),
        media_type=MEDIA_TYPE,
        headers={"Content-Length": str(length), **download_headers(f"{name}.tar")},
    )


@router.get("/{name}/diff", response_model=s.DatasetDiff)
async def diff(
    project: Project,
    name: Name,
    c: Read,
    old: Annotated[str, Query(pattern=r"^(latest|[1-9][0-9]{0,9})$")],
    new: Annotated[str, Query(pattern=r"^(latest|[1-9][0-9]{0,9})$")] = "latest",
) -> s.DatasetDiff:
    """Files added, removed and changed from version ``old`` to ``new``."""
    return await c(c.service.diff, project, name, old, new)
