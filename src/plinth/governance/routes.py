"""HTTP routes of governance. The audit trail is read-only over the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from plinth.core.access import Permission
from plinth.governance import schemas as s
from plinth.governance.service import AuditService
from plinth.server.auth import requires
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
