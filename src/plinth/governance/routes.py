"""HTTP routes of governance: the audit trail (read-only), users and tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from plinth.core.access import Permission, Principal
from plinth.governance import schemas as s
from plinth.governance.identity import IdentityService
from plinth.governance.members import MembersService
from plinth.governance.service import AuditService
from plinth.server.auth import caller, requires
from plinth.server.blocking import Blocking

router = APIRouter(
    prefix="/api/v1", tags=["governance"], dependencies=[requires(Permission.PLATFORM_READ)]
)


class Governance:
    def __init__(self, request: Request) -> None:
        self.audit: AuditService = request.app.state.audit
        self.blocking: Blocking = request.app.state.blocking


async def governance(request: Request) -> Governance:
    return Governance(request)


Gov = Annotated[Governance, Depends(governance)]


@router.get("/audit", response_model=s.AuditPage)
async def list_audit_events(g: Gov, query: Annotated[s.AuditQuery, Depends()]) -> s.AuditPage:
    return await g.blocking.run(g.audit.list_events, query)


@router.get("/audit/verify", response_model=s.AuditVerdict)
async def verify_audit(g: Gov) -> s.AuditVerdict:
    return await g.blocking.run(g.audit.verify)


class Identities:
    def __init__(self, request: Request, principal: Principal) -> None:
        self.identity: IdentityService = request.app.state.identity
        self.blocking: Blocking = request.app.state.blocking
        self.principal = principal


identity_router = APIRouter(prefix="/api/v1", tags=["governance"])
Admin = Annotated[Identities, caller(Identities, Permission.PLATFORM_ADMIN)]
Signed = Annotated[Identities, caller(Identities, Permission.AUTHENTICATED)]


@identity_router.post("/admin/init", response_model=s.NewUser, status_code=201)
async def init_admin(req: s.AdminInit, i: Admin) -> s.NewUser:
    """Create the first admin (only while there is none) and their first token."""
    return await i.blocking.run(i.identity.init_admin, req, principal=i.principal)


@identity_router.post("/users", response_model=s.NewUser, status_code=201)
async def create_user(req: s.UserCreate, i: Admin) -> s.NewUser:
    return await i.blocking.run(i.identity.create_user, req, principal=i.principal)


@identity_router.get("/tokens", response_model=list[s.Token])
async def list_tokens(i: Signed) -> list[s.Token]:
    return await i.blocking.run(i.identity.list_tokens, principal=i.principal)


@identity_router.post("/tokens", response_model=s.NewToken, status_code=201)
async def create_token(req: s.TokenCreate, i: Signed) -> s.NewToken:
    return await i.blocking.run(i.identity.create_token, req, principal=i.principal)


@identity_router.delete("/tokens/{token_id}", response_model=s.Token)
async def revoke_token(token_id: str, i: Signed) -> s.Token:
    return await i.blocking.run(i.identity.revoke_token, token_id, principal=i.principal)


class Members:
    def __init__(self, request: Request, principal: Principal) -> None:
        self.members: MembersService = request.app.state.members
        self.blocking: Blocking = request.app.state.blocking
        self.principal = principal


MembersRead = Annotated[Members, caller(Members, Permission.PROJECT_READ)]
MembersWrite = Annotated[Members, caller(Members, Permission.PROJECT_WRITE)]


@identity_router.get("/projects/{project}/members", response_model=list[s.Member])
async def list_members(project: str, g: MembersRead) -> list[s.Member]:
    return await g.blocking.run(g.members.list_members, project, principal=g.principal)


@identity_router.post("/projects/{project}/members", response_model=s.Member, status_code=201)
async def add_member(project: str, req: s.MemberAdd, g: MembersWrite) -> s.Member:
    """Give a user a role (viewer, editor, admin) in a project; project admins only."""
    return await g.blocking.run(g.members.add_member, project, req, principal=g.principal)


@identity_router.delete("/projects/{project}/members/{user}", status_code=204)
async def remove_member(project: str, user: str, g: MembersWrite) -> Response:
    await g.blocking.run(g.members.remove_member, project, user, principal=g.principal)
    return Response(status_code=204)


@identity_router.put("/users/{user}/password", status_code=204)
async def set_password(user: str, req: s.PasswordSet, i: Signed, request: Request) -> Response:
    """Set a password for the web UI: one's own, or anyone's for a platform admin."""
    sessions = request.app.state.sessions
    await i.blocking.run(sessions.set_password, user, req.password, principal=i.principal)
    return Response(status_code=204)


@identity_router.get("/projects/{project}/secrets", response_model=list[s.SecretInfo])
async def list_secrets(project: str, g: MembersRead, request: Request) -> list[s.SecretInfo]:
    """Names and times only: a secret's value is never returned."""
    service = request.app.state.secrets
    return await g.blocking.run(service.list_secrets, project, principal=g.principal)


@identity_router.put("/projects/{project}/secrets", status_code=204)
async def set_secret(project: str, req: s.SecretSet, g: MembersWrite, request: Request) -> Response:
    await g.blocking.run(request.app.state.secrets.set_secret, project, req, principal=g.principal)
    return Response(status_code=204)


@identity_router.delete("/projects/{project}/secrets/{name}", status_code=204)
async def delete_secret(project: str, name: str, g: MembersWrite, request: Request) -> Response:
    await g.blocking.run(
        request.app.state.secrets.delete_secret, project, name, principal=g.principal
    )
    return Response(status_code=204)
