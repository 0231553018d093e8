"""Streamed uploads and downloads, for every capability that moves files.

An upload's body is pulled chunk by chunk from a worker thread into the blob store, so
a multi-GB file never sits in memory. No client may hold those threads for nothing:
uploads run on a pool of their own (pages, static files and the API keep theirs), each
principal has a cap on uploads at once, and a body that stops sending bytes is cut
off by ``BodyLimit``'s idle timeout (408).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse

from plinth.api.blocking import Blocking
from plinth.api.context import services_of
from plinth.core.access import Principal
from plinth.errors import InvalidInput, TooManyRequests

T = TypeVar("T")
BODY_LIMIT = "x-plinth-body-limit"


def streamed_body(limit_setting: str) -> dict[str, Any]:
    """``openapi_extra`` of a route whose raw body streams: its size limit is the
    server setting ``limit_setting`` instead of ``max_request_bytes``."""
    return {
        "requestBody": {"content": {"application/octet-stream": {}}},
        BODY_LIMIT: limit_setting,
    }


def download_headers(name: str) -> dict[str, str]:
    """A download is a file to save, never a page to render in the site's origin."""
    filename = name.rsplit("/", 1)[-1]
    ascii_name = "".join(ch if 32 < ord(ch) < 127 and ch not in '"\\;' else "_" for ch in filename)
    return {
        "Content-Disposition": (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
        ),
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
    }


def file_download(
    blocking: Blocking, chunks: Iterator[bytes], *, size: int, digest: str, name: str
) -> StreamingResponse:
    """A stored file as a download: streamed from the blocking pool, with its size and
    its digest (the client verifies the bytes end to end while it writes them; hashing
    here too would halve throughput and could only fail after the bytes were sent)."""
    return StreamingResponse(
        blocking.iterate(chunks),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "X-Plinth-Digest": digest,
            **download_headers(name),
        },
    )


class Uploads:
    """The upload pool and the per-principal cap of one app."""

    def __init__(self, *, threads: int, per_principal: int) -> None:
        self.threads = threads
        self.per_principal = per_principal
        self._limiter: anyio.CapacityLimiter | None = None
        self._active: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, principal: Principal) -> Iterator[None]:
        who = principal.user_id or f"{principal.name}@{principal.source}"
        with self._lock:
            if self._active[who] >= self.per_principal:
                raise TooManyRequests(
                    f"{principal.name} already has {self.per_principal} uploads in progress; "
                    "wait for one to finish",
                    retry_after=1,
                )
            self._active[who] += 1
        try:
            yield
        finally:
            with self._lock:
                self._active[who] -= 1

    async def receive(self, request: Request, consume: Callable[[Iterator[bytes]], T]) -> T:
        """Run ``consume(chunks)`` on the upload pool, the body pulled as it arrives."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        body = request.stream().__aiter__()

        async def next_chunk() -> bytes:
            return await body.__anext__()

        def chunks() -> Iterator[bytes]:
            while True:
                try:
                    yield anyio.from_thread.run(next_chunk)
                except StopAsyncIteration:
                    return
                except ClientDisconnect:  # the client went away: not a server fault
                    raise InvalidInput("the upload was cut off before its end") from None

        return await anyio.to_thread.run_sync(lambda: consume(chunks()), limiter=self._limiter)


async def receive_upload(
    request: Request, principal: Principal, consume: Callable[[Iterator[bytes]], T]
) -> T:
    """``consume(chunks)`` fed the request's body as it arrives, in one of the
    principal's upload slots."""
    uploads = services_of(request).get(Uploads)
    with uploads.slot(principal):
        return await uploads.receive(request, consume)
