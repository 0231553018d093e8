"""HTTP routes of the registry: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.api.uploads import file_download
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.registry import schemas as s
from plinth.registry.aliases import AliasService
from plinth.registry.card import CardFormat, ModelCardService
from plinth.registry.service import RegistryService
from plinth.registry.uri import ALIAS, MODEL_NAME
from plinth.tracking.schemas import check_artifact_path, check_key

router = APIRouter(prefix="/api/v1/projects/{project}/models", tags=["registry"])
Read = Annotated[Caller[RegistryService], caller(RegistryService, Permission.PROJECT_READ)]
Write = Annotated[Caller[RegistryService], caller(RegistryService, Permission.PROJECT_WRITE)]
AliasRead = Annotated[Caller[AliasService], caller(AliasService, Permission.PROJECT_READ)]
AliasWrite = Annotated[Caller[AliasService], caller(AliasService, Permission.PROJECT_WRITE)]
CardRead = Annotated[Caller[ModelCardService], caller(ModelCardService, Permission.PROJECT_READ)]
Project = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
Name = Annotated[str, Path(pattern=MODEL_NAME, max_length=200)]
Version = Annotated[int, Path(ge=1, lt=2**31)]
Alias = Annotated[str, Path(pattern=ALIAS, max_length=64)]
TagKey = Annotated[str, Path(max_length=250)]
FilePath = Annotated[str, Path(max_length=1000, description="relative, '/'-separated")]


@router.get("", response_model=list[s.RegisteredModel])
async def list_models(project: Project, c: Read) -> list[s.RegisteredModel]:
    return await c(c.service.list_models, project)


@router.get("/{name}", response_model=s.RegisteredModel)
async def get_model(project: Project, name: Name, c: Read) -> s.RegisteredModel:
    return await c(c.service.get_model, project, name)


@router.post("/{name}/versions", response_model=s.ModelVersion, status_code=201)
async def register_model(
    project: Project, name: Name, req: s.ModelVersionRegister, c: Write
) -> s.ModelVersion:
    """Register the files a run logged under ``artifact_path`` as the next version
    (the same files from the same run again answer the version they made)."""
    return await c(c.service.register_model, project, name, req)


@router.get("/{name}/versions", response_model=list[s.ModelVersion])
async def list_versions(project: Project, name: Name, c: Read) -> list[s.ModelVersion]:
    return await c(c.service.list_versions, project, name)


@router.get("/{name}/versions/{version}", response_model=s.ModelVersion)
async def get_version(project: Project, name: Name, version: Version, c: Read) -> s.ModelVersion:
    return await c(c.service.get_version, project, name, version)


@router.patch("/{name}/versions/{version}", response_model=s.ModelVersion)
async def update_version(
    project: Project, name: Name, version: Version, update: s.ModelVersionUpdate, c: Write
) -> s.ModelVersion:
    """Describe, archive or restore, edit the card; ``unsafe_pickle`` needs a project admin."""
    return await c(c.service.update_version, project, name, version, update)


@router.put("/{name}/versions/{version}/tags/{key}", response_model=s.ModelVersion)
async def set_version_tag(
    project: Project, name: Name, version: Version, key: TagKey, req: s.TagSet, c: Write
) -> s.ModelVersion:
    check_key(key)
    return await c(c.service.set_version_tag, project, name, version, key, req.value)


@router.delete("/{name}/versions/{version}/tags/{key}", response_model=s.ModelVersion)
async def delete_version_tag(
    project: Project, name: Name, version: Version, key: TagKey, c: Write
) -> s.ModelVersion:
    check_key(key)
    return await c(c.service.delete_version_tag, project, name, version, key)


@router.get("/{name}/versions/{version}/files", response_model=list[s.ModelFile])
async def version_files(
    project: Project, name: Name, version: Version, c: Read
) -> list[s.ModelFile]:
    return await c(c.service.version_files, project, name, version)


@router.get(
    "/{name}/versions/{version}/files/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_version_file(
    project: Project, name: Name, version: Version, path: FilePath, c: Read
) -> StreamingResponse:
    check_artifact_path(path)
    found, chunks = await c(c.service.open_version_file, project, name, version, path)
    return file_download(c.blocking, chunks, size=found.size, digest=found.digest, name=found.path)


@router.get(
    "/{name}/versions/{version}/card",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}, "text/html": {}}}},
)
async def model_card(
    project: Project,
    name: Name,
    version: Version,
    c: CardRead,
    format: Annotated[CardFormat, Query(description="markdown or html")] = "markdown",
) -> Response:
    text = await c(c.service.model_card, project, name, version, format)
    if format == "html":
        return HTMLResponse(text)
    return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")


@router.get("/{name}/aliases/{alias}", response_model=s.ModelVersion)
async def get_alias(project: Project, name: Name, alias: Alias, c: AliasRead) -> s.ModelVersion:
    return await c(c.service.get_alias, project, name, alias)


@router.put("/{name}/aliases/{alias}", response_model=s.AliasEvent)
async def set_alias(
    project: Project, name: Name, alias: Alias, req: s.AliasSet, c: AliasWrite
) -> s.AliasEvent:
    """Point the alias at a version; the move is kept in its history with the reason."""
    return await c(c.service.set_alias, project, name, alias, req)


@router.delete("/{name}/aliases/{alias}", response_model=s.AliasEvent)
async def delete_alias(
    project: Project,
    name: Name,
    alias: Alias,
    c: AliasWrite,
    reason: Annotated[str, Query(max_length=2000)] = "",
) -> s.AliasEvent:
    return await c(c.service.delete_alias, project, name, alias, reason)


@router.get("/{name}/alias-history", response_model=list[s.AliasEvent])
async def alias_history(
    project: Project,
    name: Name,
    c: AliasRead,
    alias: Annotated[str | None, Query(pattern=ALIAS, max_length=64)] = None,
) -> list[s.AliasEvent]:
    """Every move of the model's aliases (or of one), newest first."""
    return await c(c.service.alias_history, project, name, alias)
