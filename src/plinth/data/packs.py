"""Many small files in one request, either way, as a tar stream: a push sends the
content it lacks in batches (members named by digest), a pull fetches a batch of a
version's files (members named by path). Uploading or downloading a thousand 10 KiB
files one request each costs more in requests than in bytes.

Only regular members are read, and only their bytes: nothing here ever extracts an
archive or takes a path from one. The caller checks each member's name against what
it asked for, and each member's bytes against its digest.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from plinth.core.blobs import CHUNK, PACKED_MAX, ChunksReader
from plinth.errors import InvalidInput

SMALL = PACKED_MAX  # files up to this size travel in batches (and are stored packed)
BATCH_BYTES = 64 << 20  # at most this many bytes of files in one batch
BATCH_FILES = 2000  # and at most this many files
MEDIA_TYPE = "application/x-tar"
_BLOCK = 512
_END = b"\0" * (2 * _BLOCK)
_NAME = 100  # bytes of a name a ustar block holds
_MAX_OCTAL = 8**11  # sizes a ustar block holds
# A ustar block with no name and size 0, its checksum field blank (eight spaces).
_USTAR = bytes(
    b"\0" * _NAME
    + b"0000644\0"  # mode
    + b"0000000\0" * 2  # uid, gid
    + b"00000000000\0" * 2  # size, mtime
    + b" " * 8  # the checksum, while it is summed
    + b"0"  # a regular file
    + b"\0" * 100  # no link
    + b"ustar\x0000"
).ljust(_BLOCK, b"\0")


def batches(items: list[tuple[str, int]]) -> list[list[str]]:
    """Names of small files, ``(name, size)``, cut into batches within the limits."""
    out: list[list[str]] = []
    batch: list[str] = []
    held = 0
    for name, size in items:
        if batch and (len(batch) == BATCH_FILES or held + size > BATCH_BYTES):
            out.append(batch)
            batch, held = [], 0
        batch.append(name)
        held += size
    if batch:
        out.append(batch)
    return out


def write_tar(
    members: Iterable[tuple[str, int, Callable[[], Iterable[bytes]]]],
) -> tuple[int, Iterator[bytes]]:
    """A tar stream of ``(name, size, chunks)`` members and its length in bytes; each
    member's chunks are opened only when the stream reaches it, and must add up to its
    size."""
    listed = [(name, size, chunks, _header(name, size)) for name, size, chunks in members]
    length = sum(len(h) + size + _pad(size) for _, size, _, h in listed) + len(_END)

    def pieces() -> Iterator[bytes]:
        for name, size, chunks, header in listed:
            yield header
            sent = 0
            for chunk in chunks():
                sent += len(chunk)
                yield chunk
            if sent != size:
                raise InvalidInput(f"{name}: {sent} bytes where {size} were expected")
            yield b"\0" * _pad(size)
        yield _END

    return length, _coalesced(pieces())


def _coalesced(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Small pieces (headers, small files, padding) joined into chunks of about
    ``CHUNK``: each chunk is one hop for whoever moves it, not each header."""
    buffer: list[bytes] = []
    held = 0
    for piece in pieces:
        buffer.append(piece)
        held += len(piece)
        if held >= CHUNK:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


def read_tar(chunks: Iterable[bytes]) -> Iterator[tuple[str, int, IO[bytes]]]:
    """Each regular member of a tar stream: its name, size and bytes (read them before
    asking for the next). Anything else in the stream is refused."""
    try:
        with tarfile.open(fileobj=ChunksReader(chunks), mode="r|") as archive:
            for member in archive:
                if not member.isreg():
                    raise InvalidInput(f"{member.name!r}: only regular files may be sent")
                f = archive.extractfile(member)
                assert f is not None  # a regular member always has bytes
                yield member.name, member.size, f
    except tarfile.TarError as exc:
        raise InvalidInput(f"not a tar stream: {exc}") from None


def member_chunks(f: IO[bytes]) -> Iterator[bytes]:
    """A member's bytes (from ``read_tar``); a stream that ends inside it is refused."""
    try:
        while chunk := f.read(CHUNK):
            yield chunk
    except tarfile.TarError as exc:
        raise InvalidInput(f"the tar stream broke off: {exc}") from None


def _header(name: str, size: int) -> bytes:
    """A member's header, as ``tarfile`` writes it (``PAX_FORMAT``, mode 644, the rest
    zero). A short ASCII name, as every digest is, gets the plain ustar block built
    here, at a tenth of ``tarfile``'s cost; anything else goes through ``tarfile``."""
    raw = name.encode("ascii") if name.isascii() else b""
    if not raw or len(raw) > _NAME or size >= _MAX_OCTAL:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        return info.tobuf(format=tarfile.PAX_FORMAT)
    block = bytearray(_USTAR)
    block[: len(raw)] = raw
    block[124:136] = b"%011o\0" % size
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _pad(size: int) -> int:
    return -size % _BLOCK
