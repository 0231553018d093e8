"""Who a request comes from.

Today every request is the home's single local user: the server binds loopback only
(``plinth server`` refuses other addresses). Tokens, sessions and roles replace this
function's body when governance lands; routes and services already pass its result on.
"""

from __future__ import annotations

from starlette.requests import Request

from plinth.core.access import LOCAL, Principal


def principal_of(request: Request) -> Principal:
    return LOCAL.from_address(request.client.host if request.client else "")
