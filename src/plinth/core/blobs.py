"""Content-addressed blob store: bytes in, a sha256 digest out; bytes back, verified.

Layers, as in Metaflow's datastore: a backend moves plain bytes under keys
(``LocalBackend`` on disk, ``FsspecBackend`` for S3 and other fsspec filesystems);
``BlobStore`` above it hashes, deduplicates, writes atomically and verifies on read.
Keys are built only from digests, never from user input.

Atomicity: a blob is written under its final key only when complete. Locally that is
a temp file in the same directory, fsynced, then renamed; on S3 a multipart upload
that is completed only when the digest matches and aborted otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from plinth.errors import (
    CorruptArtifact,
    DigestMismatch,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    require,
)

CHUNK = 1 << 20
PACKED_MAX = 1 << 20  # content up to this size, sent in a batch, is packed (Artifacts.batch)
PARTIAL_MAX_AGE_S = 3600.0  # an unfinished promotion this old has no live writer
TMP_PREFIX = ".tmp-"  # a local writer's file until it commits
TMP_KEYS = "tmp/"  # content whose digest is not known yet, until it is promoted
PROBE_KEY = "readyz-probe"  # never written: looking it up proves the store answers
PACKS = "packs/"  # packs of small blobs (``PackWriter``), named by a random id
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PACK_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int


class Writer(Protocol):
    def write(self, data: bytes) -> Any: ...
    def commit(self) -> None: ...
    def discard(self) -> None: ...


class Backend(Protocol):
    """Plain byte storage under keys. Five methods; everything else is above it."""

    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def open_read(self, key: str) -> IO[bytes]: ...
    def open_write(self, key: str) -> Writer: ...
    def delete(self, key: str) -> None: ...


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):  # not match(): "$" also matches before a "\n"
        raise InvalidInput("a digest is 64 lowercase hex characters (sha256)")
    return digest


def file_digest(
    path: str | os.PathLike[str], progress: Callable[[int], None] | None = None
) -> BlobInfo:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            if progress:
                progress(len(chunk))
    return BlobInfo(h.hexdigest(), size)


def manifest_digest(files: Iterable[tuple[str, str, int]]) -> str:
    """The digest of a set of files (a model version, a dataset version): sha256 over
    one ``DIGEST  SIZE  PATH`` line per ``(path, digest, size)``, sorted by path."""
    lines = "".join(f"{digest}  {size}  {path}\n" for path, digest, size in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


class BlobStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @staticmethod
    def key(digest: str) -> str:
        check_digest(digest)
        return f"sha256/{digest[:2]}/{digest[2:]}"

    @staticmethod
    def pack_key(pack: str) -> str:
        if not _PACK_ID.fullmatch(pack):
            raise ValueError(f"not a pack id: {pack!r}")
        return f"{PACKS}{pack[:2]}/{pack}"

    def exists(self, digest: str) -> bool:
        return self.backend.exists(self.key(digest))

    def pack_exists(self, pack: str) -> bool:
        return self.backend.exists(self.pack_key(pack))

    def open_pack(self) -> PackWriter:
        return PackWriter(self)

    def read_packed(self, pack: str, start: int, size: int) -> Iterator[bytes]:
        """The bytes of a blob stored in a pack at ``start`` (packed blobs are small:
        read now, in one ranged read), unverified: the caller knows the digest."""
        try:
            data = read_range(self.backend, self.pack_key(pack), start, size)
        except FileNotFoundError:
            raise NotFound("stored content is missing (its pack is gone)") from None
        if len(data) != size:
            raise CorruptArtifact(f"a pack ends {size - len(data)} bytes before its blob does")
        return iter((data,))

    def ping(self) -> None:
        """Raise unless the storage answers a lookup (for readiness)."""
        self.backend.exists(PROBE_KEY)

    def size(self, digest: str) -> int:
        try:
            return self.backend.size(self.key(digest))
        except FileNotFoundError:
            raise NotFound(f"no blob sha256:{digest}") from None

    def put(
        self, chunks: Iterable[bytes], expected: str | None = None, max_bytes: int | None = None
    ) -> BlobInfo:
        """Store a stream; with ``expected`` the bytes must hash to it or nothing is kept."""
        if expected is not None:
            check_digest(expected)
            if self.exists(expected):
                return self._drain_and_check(chunks, expected, max_bytes)
        key = self.key(expected) if expected else f"{TMP_KEYS}{uuid.uuid4().hex}"
        writer = self.backend.open_write(key)
        try:
            info = _copy_hashing(chunks, writer, max_bytes)
            if expected is not None and info.digest != expected:
                raise DigestMismatch(f"content hashes to {info.digest}, not {expected}")
        except BaseException:
            writer.discard()
            raise
        writer.commit()
        if expected is None:
            self._promote(key, info)
        return info

    def _drain_and_check(
        self, chunks: Iterable[bytes], expected: str, max_bytes: int | None
    ) -> BlobInfo:
        """The store has this content: the bytes are still read and must hash to the
        digest, so naming a digest proves nothing and an empty body claims nothing."""
        h, size = hashlib.sha256(), 0
        for chunk in chunks:
            h.update(chunk)
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise PayloadTooLarge(f"artifact exceeds {max_bytes} bytes")
        if h.hexdigest() != expected:
            raise DigestMismatch(f"content hashes to {h.hexdigest()}, not {expected}")
        return BlobInfo(expected, size)

    def _promote(self, tmp_key: str, info: BlobInfo) -> None:
        """Name content stored under a temp key by its digest: a rename where the
        backend has one (a local disk), else a copy (S3)."""
        final = self.key(info.digest)
        if self.backend.exists(final):
            self.backend.delete(tmp_key)
            return
        rename = getattr(self.backend, "rename", None)
        if rename is not None:
            try:
                rename(tmp_key, final)
                return
            except OSError as exc:  # tmp/ mounted apart from the blobs: copy instead
                if exc.errno != errno.EXDEV:
                    raise
        with self.backend.open_read(tmp_key) as src:
            writer = self.backend.open_write(final)
            try:
                while chunk := src.read(CHUNK):
                    writer.write(chunk)
            except BaseException:
                writer.discard()
                raise
            writer.commit()
        self.backend.delete(tmp_key)

    @contextlib.contextmanager
    def batch(self) -> Iterator[BlobBatch]:
        """Many blobs stored with a few syncs instead of two each (see ``BlobBatch``).
        On leaving, even with an error, every blob put whole is synced and named."""
        batch = BlobBatch(self)
        try:
            yield batch
        finally:
            batch.finish()

    def sync(self) -> None:
        sync = getattr(self.backend, "sync", None)
        if sync is not None:
            sync()

    def put_file(self, path: str | os.PathLike[str]) -> BlobInfo:
        info = file_digest(path)
        if self.exists(info.digest):
            return info
        with open(path, "rb") as f:
            return self.put(iter(lambda: f.read(CHUNK), b""), expected=info.digest)

    def read(self, digest: str, *, verify: bool = True) -> Iterator[bytes]:
        """The blob's bytes, chunk by chunk; with ``verify``, CorruptArtifact at the end
        if they do not hash to the digest (callers write to a temp file first).

        The blob is opened now, so a missing one is NotFound before any byte is sent.
        """
        key = self.key(digest)
        try:
            f = self.backend.open_read(key)
        except FileNotFoundError:
            raise NotFound(f"no blob sha256:{digest}") from None
        return self._chunks(f, digest, verify)

    @staticmethod
    def _chunks(f: IO[bytes], digest: str, verify: bool) -> Iterator[bytes]:
        h = hashlib.sha256() if verify else None
        with f:
            while chunk := f.read(CHUNK):
                if h is not None:
                    h.update(chunk)
                yield chunk
        if h is not None and h.hexdigest() != digest:
            raise CorruptArtifact(f"stored blob sha256:{digest} does not match its digest")

    def delete(self, digest: str) -> None:
        self.backend.delete(self.key(digest))

    def sweep_partial(
        self, older_than_s: float = PARTIAL_MAX_AGE_S, layers: Sequence[str] = ()
    ) -> int:
        """Remove what writers killed mid-write left behind; never a finished blob.
        ``layers`` are key prefixes of stores layered on this one's backend (each
        has its own ``tmp/``).

        Only backends that can leave such debris on their own storage have
        ``sweep_partial``; S3 multipart uploads need a bucket lifecycle rule.
        """
        sweep = getattr(self.backend, "sweep_partial", None)
        if sweep is None:
            return 0
        return int(sweep(older_than_s, [f"{layer}{TMP_KEYS}" for layer in ("", *layers)]))


class BlobBatch:
    """Puts whose durability is paid once per group: each blob is written to its temp
    file, and once ``GROUP`` blobs or ``GROUP_BYTES`` are staged the filesystem is
    synced once, then the group is renamed into place; a last sync makes the names
    durable. A name never points at bytes that are not on disk. A sync flushes the
    whole filesystem, whatever else writes to it, so a batch of a thousand small files
    pays two, not sixteen. Stores without two-phase writers (S3: a completed upload is
    durable) commit each blob as ``put`` does."""

    GROUP = 1024
    GROUP_BYTES = 128 << 20

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.staged: list[tuple[Any, BlobInfo]] = []
        self.staged_bytes = 0
        self.named: list[BlobInfo] = []  # renamed into place, the renames not yet synced
        self.durable: list[BlobInfo] = []  # stored for good: what a caller may record

    def put(self, chunks: Iterable[bytes], expected: str, max_bytes: int | None = None) -> BlobInfo:
        check_digest(expected)
        if self.store.exists(expected):
            info = self.store._drain_and_check(chunks, expected, max_bytes)
            self.durable.append(info)
            return info
        writer = self.store.backend.open_write(self.store.key(expected))
        try:
            info = _copy_hashing(chunks, writer, max_bytes)
            if info.digest != expected:
                raise DigestMismatch(f"content hashes to {info.digest}, not {expected}")
        except BaseException:
            writer.discard()
            raise
        if not hasattr(writer, "stage"):
            writer.commit()
            self.durable.append(info)
            return info
        writer.stage()
        self.staged.append((writer, info))
        self.staged_bytes += info.size
        if len(self.staged) >= self.GROUP or self.staged_bytes >= self.GROUP_BYTES:
            self._publish()
        return info

    def _publish(self) -> None:
        if not self.staged:
            return
        staged, self.staged, self.staged_bytes = self.staged, [], 0
        try:
            self.store.sync()
        except BaseException:
            for writer, _ in staged:
                writer.discard()
            raise
        for writer, info in staged:
            writer.publish()
            self.named.append(info)

    def finish(self) -> None:
        """Sync and name what is staged, then sync the names: only then are the
        batch's blobs ``durable`` (a failed sync leaves them out, to be sent again)."""
        self._publish()
        if self.named:
            self.store.sync()  # the renames
            self.durable += self.named
            self.named = []


class PackWriter:
    """Small blobs appended to one stored object, a pack: a batch of a thousand small
    files is one file written, synced and named, where a blob each was a thousand
    (file creation, not bytes, was most of their cost). Where each blob lies in the
    pack is the caller's to record (``core/artifacts.py``), once ``commit`` has made
    the pack durable; a pack nobody records is garbage, never a wrong answer."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.id = uuid.uuid4().hex
        self.size = 0
        self.broken = False  # a write failed: the pack is discarded, never committed
        self._writer: Writer | None = None

    def add(self, data: bytes) -> int:
        """Append a blob's bytes; where they start."""
        if self.broken:
            raise RuntimeError("a write to this pack failed")
        if self._writer is None:
            self._writer = self.store.backend.open_write(self.store.pack_key(self.id))
        start = self.size
        try:
            self._writer.write(data)
        except BaseException:
            self.discard()
            raise
        self.size += len(data)
        return start

    def commit(self) -> bool:
        """Make the pack durable; False when a write had failed (nothing is kept)."""
        if self.broken:
            return False
        if self._writer is not None:
            try:
                self._writer.commit()
            except BaseException:
                self.discard()
                raise
        return True

    def discard(self) -> None:
        self.broken = True
        if self._writer is not None:
            with contextlib.suppress(Exception):  # already gone, or its abort failed too
                self._writer.discard()


def read_range(backend: Backend, key: str, start: int, size: int) -> bytes:
    """Up to ``size`` bytes of ``key`` from ``start``: the backend's own ranged read
    where it has one (S3: one GET of exactly that range, where a file opened for
    reading would fetch a whole read-ahead block), else a seek and a read."""
    ranged = getattr(backend, "read_range", None)
    if ranged is not None:
        return bytes(ranged(key, start, size))
    with backend.open_read(key) as f:
        f.seek(start)
        return f.read(size)


class ChunksReader(io.RawIOBase):
    """Chunks (a request's body, a blob's bytes) as a raw stream, for readers that want
    a file: ``tarfile``, ``io.BufferedReader``."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        out = memoryview(buffer).cast("B")
        n = min(len(out), len(self._pending))
        out[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class PipelinedHash:
    """sha256 on a helper thread while the caller moves the bytes.

    hashlib and file writes both release the GIL, so hashing chunk N while writing it
    and fetching chunk N+1 runs near the speed of the slower of the two, not their sum.
    Chunks are hashed in order; at most one is in flight. The first chunk is hashed
    inline: content of one chunk (most files) never pays for a thread.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._chunks = 0

    def update(self, chunk: bytes) -> None:
        self._chunks += 1
        if self._chunks == 1:
            self._hash.update(chunk)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, "plinth-sha256")
        if self._pending is not None:
            self._pending.result()
        self._pending = self._pool.submit(self._hash.update, chunk)

    def hexdigest(self) -> str:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        return self._hash.hexdigest()

    def __enter__(self) -> PipelinedHash:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _copy_hashing(chunks: Iterable[bytes], writer: Writer, max_bytes: int | None) -> BlobInfo:
    size = 0
    with PipelinedHash() as h:
        for chunk in chunks:
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise PayloadTooLarge(f"artifact exceeds {max_bytes} bytes")
            h.update(chunk)
            writer.write(chunk)
        return BlobInfo(h.hexdigest(), size)


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_folder(final: str) -> list[str]:
    """Make the folder ``final`` goes in, and any missing above it; the folders that
    gained an entry (each new folder's parent), to sync."""
    folder = os.path.dirname(final)
    made: list[str] = []
    while not os.path.isdir(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    if made:
        os.makedirs(made[0], exist_ok=True)
    return [os.path.dirname(f) for f in made]


def _sync_name(final: str, new_folders: list[str]) -> None:
    """The rename that named ``final`` must survive a power cut before the database
    names the blob: its folder is synced, and every folder that gained a new folder
    (a batch's sync covers them all)."""
    _fsync_dir(os.path.dirname(final))
    for parent in new_folders:
        _fsync_dir(parent)


class _LocalWriter:
    """Paths here are plain strings: a batch opens a thousand of these, and pathlib's
    parsing was a fifth of storing a small file."""

    def __init__(self, final: str) -> None:
        self.new_folders = _make_folder(final)
        self.final = final
        self.tmp, self.file = _locked_temp(os.path.dirname(final))

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.final)
        _sync_name(self.final, self.new_folders)

    def stage(self) -> None:
        """Written, not yet synced nor named: the file stays open and locked (a sweep
        leaves it) until ``publish``, after the batch's sync."""
        self.file.flush()

    def publish(self) -> None:
        """Name the staged file, once its bytes are synced (``BlobBatch``)."""
        os.replace(self.tmp, self.final)
        self.file.close()

    def discard(self) -> None:
        try:
            with contextlib.suppress(OSError):  # its flush fails again on a full disk
                self.file.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


class LocalBackend:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root = str(self.root)

    def _path(self, key: str) -> str:
        return os.path.join(self._root, key)

    def exists(self, key: str) -> bool:
        """Whether a blob is there; a disk that cannot answer raises (readiness says
        so), unlike ``os.path.isfile``, which would call it missing."""
        try:
            return stat.S_ISREG(os.stat(self._path(key)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def size(self, key: str) -> int:
        return os.stat(self._path(key)).st_size

    def open_read(self, key: str) -> IO[bytes]:
        return open(self._path(key), "rb")

    def open_write(self, key: str) -> Writer:
        return _LocalWriter(self._path(key))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def rename(self, key: str, new: str) -> None:
        """Give a committed blob another key, durably (an existing one is replaced)."""
        final = self._path(new)
        new_folders = _make_folder(final)
        os.replace(self._path(key), final)
        _sync_name(final, new_folders)

    def sync(self) -> None:
        """Everything written under the root reaches the disk: one ``syncfs`` of its
        filesystem (Linux), instead of a sync per file; ``sync`` elsewhere."""
        sync_filesystem(self.root)

    def sweep_partial(self, older_than_s: float, prefixes: Sequence[str]) -> int:
        """Delete what dead writers left: a writer's temp file as soon as no process
        holds its lock (the writer died), anywhere; and files under ``prefixes`` (glob
        patterns of keys their owners use for unfinished work) older than
        ``older_than_s``."""
        removed = 0
        for path in self.root.rglob(f"{TMP_PREFIX}*"):
            if _abandoned(path):
                removed += _unlink(path)
        cutoff = time.time() - older_than_s
        for path in [p for prefix in prefixes for p in self.root.glob(f"{prefix}*")]:
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    removed += _unlink(path)
        return removed


def sync_filesystem(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc_syncfs is not None:
            if _libc_syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(path))
        else:
            os.sync()
    finally:
        os.close(fd)


def _find_syncfs() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):  # not Linux, or no syncfs
        return None


_libc_syncfs = _find_syncfs()


def _locked_temp(directory: str) -> tuple[str, IO[bytes]]:
    """A new temp file in ``directory``, locked for as long as it is open (a process
    that dies lets go): a sweep deletes only temp files whose lock it can take.

    A sweep can take the lock between this writer's create and its lock; the writer
    then finds its lock refused, or its name gone, and starts again with another name.
    So a temp file a sweep can lock has no writer, however new it is.
    """
    while True:
        tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        file = open(tmp, "xb")  # noqa: SIM115 - the writer closes it in commit/discard
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(tmp).st_ino == os.fstat(file.fileno()).st_ino:
                return tmp, file
        except (BlockingIOError, FileNotFoundError):
            pass  # a sweep took it first
        file.close()


def _abandoned(path: Path) -> bool:
    """No live writer: the file's lock is free (see ``_locked_temp``)."""
    try:
        with open(path, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except (BlockingIOError, FileNotFoundError, IsADirectoryError):
        return False


def _unlink(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except FileNotFoundError:
        return 0


class _FsspecWriter:
    """An fsspec file opened with ``autocommit=False``, used the way fsspec's own
    transactions use it: closed first (on S3 that uploads the buffered tail as the
    last part), then committed or discarded. s3fs's ``commit`` on a file still open
    completes the multipart upload without that tail, and a file discarded while
    open starts a new upload when it is garbage-collected."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.file.blocksize = part_size(self.written, self.file.blocksize)
        self.file.write(data)

    def commit(self) -> None:
        try:
            self.file.close()
            self.file.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # the commit's error is the one to see
                self.file.discard()
            raise

    def discard(self) -> None:
        with contextlib.suppress(Exception):  # the tail is uploaded only to be aborted
            self.file.close()
        self.file.discard()


def part_size(written: int, current: int) -> int:
    """S3 allows 10,000 parts per upload: parts stay small (bounded memory) up to
    ~8 GiB, then grow to a thousandth of what is written, so 5 TiB fits in ~7,500."""
    return max(current, written // 1000)


class FsspecBackend:
    """Any fsspec filesystem whose files support ``autocommit=False`` (S3 does:
    the multipart upload is completed by ``commit`` and aborted by ``discard``).

    ``block_size`` is the read-ahead and the first upload part size (S3's minimum is
    5 MiB); an upload holds about three parts in memory (s3fs's buffer, the part cut
    from it, the socket's send buffer), a read about three blocks."""

    def __init__(self, fs: Any, root: str, block_size: int = CHUNK * 8) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.block_size = block_size

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def open_read(self, key: str) -> IO[bytes]:
        return self.fs.open(self._path(key), "rb", block_size=self.block_size)

    def read_range(self, key: str, start: int, size: int) -> bytes:
        if size == 0:
            return b""
        try:
            return bytes(self.fs.cat_file(self._path(key), start=start, end=start + size))
        except OSError as exc:
            if exc.errno == errno.EINVAL and "range" in str(exc):  # 416: starts past the end
                return b""
            raise

    def open_write(self, key: str) -> Writer:
        path = self._path(key)
        return _FsspecWriter(self.fs.open(path, "wb", autocommit=False, block_size=self.block_size))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(key))


def open_store(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_access_key_id: str | None = None,
    s3_secret_access_key: str | None = None,
) -> BlobStore:
    """A store from a URL: a local path, ``file://…`` or ``s3://bucket/prefix``.

    Without an access key, S3 credentials come from botocore's usual chain
    (environment, ``~/.aws``, instance role)."""
    if url.startswith("s3://"):
        s3fs = require("s3fs", "s3")
        client_kwargs: dict[str, Any] = {}
        if s3_endpoint_url:
            client_kwargs["endpoint_url"] = s3_endpoint_url
        if s3_region:
            client_kwargs["region_name"] = s3_region
        fs = s3fs.S3FileSystem(
            key=s3_access_key_id,
            secret=s3_secret_access_key,
            client_kwargs=client_kwargs,
            # a fresh instance per store, and no listing cache: other servers write
            # the same bucket, so a cached listing would go stale
            skip_instance_cache=True,
            use_listings_cache=False,
            # An outage should answer 503 within seconds, not after a minute of
            # retries inside one request: the SDK retries 503s for its own window.
            config_kwargs={"retries": {"max_attempts": 3, "mode": "standard"}},
        )
        fs.retries = 2  # s3fs's own retries, on top of botocore's
        return BlobStore(FsspecBackend(fs, url.removeprefix("s3://")))
    if "://" in url and not url.startswith("file://"):
        raise InvalidInput("artifacts URL must be a local path, file://… or s3://…")
    return BlobStore(LocalBackend(url.removeprefix("file://")))
