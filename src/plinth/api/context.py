"""The services an app holds, and the typed way a route reaches them.

``Services`` is built once per app from the capabilities' declarations: the platform,
the blocking pool, and one instance of each service class, found by type (a service
is also found by the kernel interfaces it implements, such as ``Authenticator``).
Routes ask for ``Caller[SomeService]`` through ``caller(SomeService, permission)``:
the dependency checks the permission, then hands the route the service, the
principal, and a way to call the one with the other on the blocking pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.requests import HTTPConnection

from plinth.api.blocking import Blocking
from plinth.core.access import Principal
from plinth.core.platform import Platform

T = TypeVar("T")
S = TypeVar("S")


class Services:
    def __init__(self, platform: Platform, blocking: Blocking, instances: list[Any]) -> None:
        self.platform = platform
        self.blocking = blocking
        self._by_type: dict[type, Any] = {}
        for instance in instances:
            for cls in type(instance).__mro__[:-1]:  # its class and what it implements
                self._by_type.setdefault(cls, instance)

    def get(self, cls: type[T]) -> T:
        try:
            found: T = self._by_type[cls]
        except KeyError:
            raise LookupError(f"no service {cls.__name__} in this app") from None
        return found


def services_of(connection: HTTPConnection) -> Services:
    """The app's services (set once by ``server.app``): the one typed way in."""
    services: Services = connection.app.state.services
    return services


@dataclass
class Caller(Generic[S]):
    """A route's service, who is calling, and ``await c(c.service.method, …)`` to run
    a service method for them on the blocking pool."""

    service: S
    principal: Principal
    blocking: Blocking

    async def __call__(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.blocking.run(method, *args, principal=self.principal, **kwargs)


def all_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route of an app, looking into included routers where FastAPI keeps one
    entry for each."""
    for route in routes:
        if getattr(route, "stands_in_for", None) is not None:
            continue  # api/lean.py: another way to a route listed in its own place
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from all_routes(included.routes)
        else:
            yield route
