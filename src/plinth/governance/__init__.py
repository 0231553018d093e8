"""Governance: users, tokens, sessions, projects' members and secrets, the audit trail,
lineage and the master key."""

from plinth.core.capability import Capability

CAPABILITY = Capability(
    name="governance",
    services=(
        "plinth.governance.sessions:SessionService",
        "plinth.governance.identity:IdentityService",
        "plinth.governance.projects:ProjectsService",
        "plinth.governance.secrets:SecretsService",
        "plinth.governance.service:AuditService",
        "plinth.governance.lineage:LineageService",
    ),
    routers=("plinth.governance.routes:router",),
    commands=(
        ("projects", "plinth.governance.projects_cli:projects_app"),
        ("projects members", "plinth.governance.projects_cli:members_app"),
        ("secrets", "plinth.governance.projects_cli:secrets_app"),
        ("users", "plinth.governance.identity_cli:users_app"),
        ("tokens", "plinth.governance.identity_cli:tokens_app"),
        ("admin", "plinth.governance.identity_cli:admin_app"),
        ("audit", "plinth.governance.cli:audit_app"),
        ("keys", "plinth.governance.keys_cli:keys_app"),
        ("lineage", "plinth.governance.cli:lineage"),
    ),
    calls=(
        "plinth.governance.client:GovernanceCalls",
        "plinth.governance.client:IdentityCalls",
    ),
    tables=("plinth.governance.tables", "plinth.governance.secrets"),
)
