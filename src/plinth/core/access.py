"""Who is asking: the principal every service call acts for.

Until identities exist (governance), every request is the one ``LOCAL`` user of an
embedded home or of a server bound to loopback; services already take the principal
so that authorization and audit have a single place to land.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Principal:
    name: str
    token_id: str | None = None
    source: str = ""  # the client's address, for the audit trail

    def from_address(self, source: str) -> Principal:
        return replace(self, source=source)


LOCAL = Principal(name="local")
