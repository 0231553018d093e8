"""Moving files to and from the server, shared by every capability's SDK calls: a
progress bar for long transfers (Rich is imported only when one is shown) and verified
downloads."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from plinth.core.blobs import CHUNK, PipelinedHash
from plinth.errors import CorruptArtifact

if TYPE_CHECKING:
    from plinth.client import Transport

PROGRESS_MIN_BYTES = 64 << 20


@contextmanager
def transfer_progress(
    label: str, total: int, enabled: bool | None
) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar for large transfers on a terminal (or when asked for); the
    callable it yields advances it by a number of bytes, from any thread."""
    if enabled is None:
        enabled = total >= PROGRESS_MIN_BYTES and sys.stderr.isatty()
    if not enabled:
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


class Resent:
    """A progress callback for a body that may be sent again from its start (an upload
    retried after a restart or a busy answer): each new try takes back what the last
    one counted, so the bar shows the bytes of the try under way."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        self._advance, self._sent = advance, 0

    def __call__(self, n: int) -> None:
        self._sent += n
        self._advance(n)

    def again(self) -> Resent:
        """This callback, rewound for a new try."""
        if self._sent:
            self._advance(-self._sent)
            self._sent = 0
        return self


def download_verified(
    transport: Transport,
    url: str,
    label: str,
    digest: str,
    size: int,
    target: Path,
    progress: bool | None,
) -> None:
    """Stream ``url`` into ``target``, verified (see ``save_verified``)."""
    with (
        transfer_progress(f"downloading {label}", size, progress) as advance,
        transport.stream("GET", url) as response,
    ):
        save_verified(response.iter_raw(CHUNK), target, digest, label, advance)


def save_verified(
    chunks: Iterable[bytes],
    target: Path,
    digest: str,
    label: str,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Write chunks to a temp file beside ``target``, check them against ``digest``,
    then rename: a failed or corrupt download leaves nothing behind."""
    if not target.parent.is_dir():  # a pull of a thousand files makes a few folders
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.plinth-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as out, PipelinedHash() as h:
            for chunk in chunks:
                h.update(chunk)
                out.write(chunk)
                if advance is not None:
                    advance(len(chunk))
            got = h.hexdigest()
        if got != digest:
            raise CorruptArtifact(f"{label}: downloaded bytes do not match sha256:{digest}")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
