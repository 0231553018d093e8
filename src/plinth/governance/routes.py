"""HTTP routes of governance: projects and their members and secrets, users, tokens,
and the audit trail (read-only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from plinth.api.auth import caller
from plinth.api.context import Caller
from plinth.api.errors import ErrorBody
from plinth.core.access import Permission
from plinth.core.names import PROJECT_NAME
from plinth.governance import schemas as s
from plinth.governance.identity import IdentityService
from plinth.governance.lineage import LineageService
from plinth.governance.projects import ProjectsService
from plinth.governance.secrets import SecretsService
from plinth.governance.service import AuditService
from plinth.governance.sessions import SessionService

router = APIRouter(prefix="/api/v1", tags=["governance"])

Audit = Annotated[Caller[AuditService], caller(AuditService, Permission.PLATFORM_READ)]
Admin = Annotated[Caller[IdentityService], caller(IdentityService, Permission.PLATFORM_ADMIN)]
Signed = Annotated[Caller[IdentityService], caller(IdentityService, Permission.AUTHENTICATED)]
Passwords = Annotated[Caller[SessionService], caller(SessionService, Permission.AUTHENTICATED)]
ProjectsRead = Annotated[Caller[ProjectsService], caller(ProjectsService, Permission.PROJECT_READ)]
ProjectsWrite = Annotated[
    Caller[ProjectsService], caller(ProjectsService, Permission.PROJECT_WRITE)
]
ProjectsAdmin = Annotated[
    Caller[ProjectsService], caller(ProjectsService, Permission.PROJECT_ADMIN)
]
LineageRead = Annotated[Caller[LineageService], caller(LineageService, Permission.PROJECT_READ)]
SecretsRead = Annotated[Caller[SecretsService], caller(SecretsService, Permission.PROJECT_READ)]
SecretsWrite = Annotated[Caller[SecretsService], caller(SecretsService, Permission.PROJECT_WRITE)]

ProjectName = Annotated[str, Path(pattern=PROJECT_NAME, max_length=200)]
UserName = Annotated[str, Path(pattern=s.USER_NAME, max_length=100)]
# An id's form is documented, not enforced: one not of that form names no token (404).
TokenId = Annotated[str, Path(json_schema_extra={"pattern": s.TOKEN_ID, "maxLength": 16})]
SecretName = Annotated[str, Path(pattern=s.SECRET_NAME, max_length=100)]


@router.get("/audit", response_model=s.AuditPage)
async def list_audit_events(c: Audit, query: Annotated[s.AuditQuery, Depends()]) -> s.AuditPage:
    return await c(c.service.list_events, query)


@router.get("/audit/verify", response_model=s.AuditVerdict)
async def verify_audit(c: Audit) -> s.AuditVerdict:
    return await c(c.service.verify)


# The first admin has no route: 'plinth admin init' makes it over the home itself.


@router.post("/users", response_model=s.NewUser, status_code=201)
async def create_user(req: s.UserCreate, c: Admin) -> s.NewUser:
    """Create a user and their first token (refused until the first admin exists)."""
    return await c(c.service.create_user, req)


@router.get("/users/me", response_model=s.User)
async def current_user(c: Signed) -> s.User:
    """The user this request's token or session acts as."""
    return await c(c.service.current_user)


@router.put("/users/{user}/password", status_code=204)
async def set_password(user: UserName, req: s.PasswordSet, c: Passwords) -> Response:
    """Set a password for the web UI: one's own (with ``current_password``, once one is
    set), or anyone's for a platform admin. Ends every other session of that user."""
    await c(c.service.set_password, user, req.password, req.current_password)
    return Response(status_code=204)


@router.get("/tokens", response_model=list[s.Token])
async def list_tokens(c: Signed) -> list[s.Token]:
    return await c(c.service.list_tokens)


@router.post("/tokens", response_model=s.NewToken, status_code=201)
async def create_token(req: s.TokenCreate, c: Signed) -> s.NewToken:
    return await c(c.service.create_token, req)


@router.delete("/tokens/{token_id}", response_model=s.Token)
async def revoke_token(token_id: TokenId, c: Signed) -> s.Token:
    return await c(c.service.revoke_token, token_id)


@router.get("/projects", response_model=list[s.Project])
async def list_projects(c: ProjectsRead) -> list[s.Project]:
    """The projects you have a role in (a platform admin sees all)."""
    return await c(c.service.list_projects)


@router.post("/projects", response_model=s.Project, status_code=201)
async def create_project(req: s.ProjectCreate, c: ProjectsWrite) -> s.Project:
    """Create an empty project; you become its admin. Names are global: a taken name
    is a 409 even when the project is not yours to see."""
    return await c(c.service.create_project, req)


@router.get("/projects/{project}/members", response_model=list[s.Member])
async def list_members(project: ProjectName, c: ProjectsRead) -> list[s.Member]:
    return await c(c.service.list_members, project)


@router.post("/projects/{project}/members", response_model=s.Member, status_code=201)
async def add_member(project: ProjectName, req: s.MemberAdd, c: ProjectsAdmin) -> s.Member:
    """Give a user a role (viewer, editor, admin) in a project; project admins only."""
    return await c(c.service.add_member, project, req)


@router.delete(
    "/projects/{project}/members/{user}",
    status_code=204,
    responses={409: {"model": ErrorBody, "description": "The project's last admin (Conflict)"}},
)
async def remove_member(project: ProjectName, user: UserName, c: ProjectsAdmin) -> Response:
    """Take a user's role in a project away; project admins only, never the last admin's."""
    await c(c.service.remove_member, project, user)
    return Response(status_code=204)


@router.get("/projects/{project}/secrets", response_model=list[s.SecretInfo])
async def list_secrets(project: ProjectName, c: SecretsRead) -> list[s.SecretInfo]:
    """Names and times only: a secret's value is never returned."""
    return await c(c.service.list_secrets, project)


@router.put("/projects/{project}/secrets", status_code=204)
async def set_secret(project: ProjectName, req: s.SecretSet, c: SecretsWrite) -> Response:
    await c(c.service.set_secret, project, req)
    return Response(status_code=204)


@router.delete("/projects/{project}/secrets/{name}", status_code=204)
async def delete_secret(project: ProjectName, name: SecretName, c: SecretsWrite) -> Response:
    await c(c.service.delete_secret, project, name)
    return Response(status_code=204)


@router.get("/projects/{project}/lineage", response_model=s.LineageGraph)
async def lineage(
    project: ProjectName,
    c: LineageRead,
    uri: Annotated[str, Query(pattern=s.LINEAGE_URI, max_length=600)],
) -> s.LineageGraph:
    """The lineage graph around a node of the project (``datasets:/P/NAME@3``,
    ``runs:/ID``, ``models:/P/NAME/3``, ``deployments:/P/NAME``,
    ``predictions:/P/DEPLOYMENT/ID``): what it came from and what came of it."""
    return await c(c.service.lineage, project, uri)
