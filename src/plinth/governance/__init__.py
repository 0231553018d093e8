"""Governance: the audit trail today; identities, roles and encryption next."""
