"""Prediction records: what each answered prediction was (its id, the version that
answered, inputs, outputs, latency, status), kept for monitoring later.

The data plane has no database: each serving process appends records as JSON lines
to files of its own in a directory (named by host, pid and start time, so that
workers and replicas never interleave), rotated by size. Recording never slows or
fails a request: the request path samples, then puts a record on a bounded queue
without waiting (a full queue drops the record and counts it in
``plinth_serving_records_dropped_total``); a writer thread serializes, batches,
writes and flushes, and fsyncs every few seconds. ``read_records`` reads a directory
back, skipping the torn last line a killed process may leave.

The writer stamps each record with ``recorded_at`` as it writes it, never going back
(even if the clock does): each file is sorted by that stamp, which is what lets
record_pages.py read a page of a large directory without reading it all.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import random
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter

from plinth.errors import InvalidInput
from plinth.serving.json_limits import lone_surrogate, too_deep

log = logging.getLogger("plinth.serving.records")
SUFFIX = ".jsonl"
_STOP = object()  # the writer's last item: drain, sync, close


@dataclass(frozen=True)
class RecordSettings:
    """Where and how much a server records: plain values, so that they pickle into a
    spawned worker (each worker builds its own ``Recorder``)."""

    directory: Path
    sample: float = 1.0  # the share of answers recorded, 0.0 to 1.0
    max_queue: int = 10_000  # records waiting for the writer; past it they are dropped
    max_batch: int = 1_000  # records joined into one write
    max_field_bytes: int = 64 << 10  # inputs (or outputs) over this are left out (line())
    rotate_bytes: int = 64 << 20  # a file over this is closed and the next one opened
    fsync_seconds: float = 2.0  # the most a power cut may lose of what was flushed
    # names this process's files: its pid, or the one its supervisor knows it by (in a
    # sandbox every replica is pid 2 of a PID namespace of its own)
    process: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample <= 1.0:
            raise InvalidInput(f"the record sample must be 0.0 to 1.0, not {self.sample}")


class Recorder:
    """``submit`` from the request path (never blocks); a daemon thread writes.

    ``before_write`` is called in the writer thread before each batch is written (a
    test holds the writer with it to fill the queue)."""

    def __init__(
        self,
        settings: RecordSettings,
        *,
        before_write: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sample = settings.sample
        self.dropped = Counter(
            "plinth_serving_records_dropped",
            "Prediction records lost: the writer's queue was full or a write failed.",
            registry=None,
        )
        self.written = Counter(
            "plinth_serving_records_written",
            "Prediction records written to the record files.",
            registry=None,
        )
        self._queue: queue.Queue[Any] = queue.Queue(settings.max_queue)
        self._files = _Files(settings)  # opens the first file now: a bad directory fails at start
        self._before_write = before_write
        self._stamped = 0.0  # the last recorded_at: stamps never go back
        self._thread = threading.Thread(target=self._run, daemon=True, name="plinth-records")
        self._thread.start()

    def attach(self, registry: CollectorRegistry) -> None:
        """Show the recorder's counters in a server's ``/metrics``."""
        registry.register(self.dropped)
        registry.register(self.written)

    def sampled(self) -> bool:
        """Whether the next answer is recorded."""
        return self.sample >= 1.0 or (self.sample > 0.0 and random.random() < self.sample)

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue ``record`` for the writer; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped.inc()
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, sync and close the file (a server's shutdown)."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("prediction records: the writer is stuck; closing without it")
            return
        self._thread.join(timeout)

    # the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch, stop = self._take()
            if batch:
                self._write(batch)
            self._files.sync_if_due()
            if stop:
                self._files.close()
                return

    def _take(self) -> tuple[list[dict[str, Any]], bool]:
        """The records waiting now (at least one, or none after a quiet interval)."""
        try:
            first = self._queue.get(timeout=self.settings.fsync_seconds)
        except queue.Empty:
            return [], False
        batch: list[dict[str, Any]] = []
        item = first
        while True:
            if item is _STOP:
                return batch, True
            batch.append(item)
            if len(batch) >= self.settings.max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _write(self, batch: list[dict[str, Any]]) -> None:
        self._stamped = max(self._stamped, time.time())
        stamp = stamp_text(self._stamped)
        lines = []
        for record in batch:  # an odd record costs only itself
            try:
                lines.append(line(record, self.settings.max_field_bytes, stamp))
            except (TypeError, ValueError, RecursionError):
                self.dropped.inc()
        try:
            if self._before_write is not None:
                self._before_write(len(lines))
            self._files.write("".join(lines).encode())
        except Exception:  # the writer must outlive a full disk
            log.exception("prediction records: %d records could not be written", len(lines))
            self.dropped.inc(len(lines))
            self._files.abandon()  # a half-written line ends its file: start the next
            return
        self.written.inc(len(lines))


def stamp_text(seconds: float) -> str:
    """``recorded_at`` as written: UTC to the microsecond, always 32 characters, so
    that stamps sort as text."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def line(record: dict[str, Any], limit: int, recorded_at: str | None = None) -> str:
    """One record as a JSON line that reads back as it was written. Inputs or outputs
    over ``limit`` bytes, or that JSON could not give back (NaN, a lone surrogate,
    nesting past json_limits.MAX_DEPTH), are left out and marked ``inputs_truncated``
    / ``outputs_truncated``; ValueError for a record whose other fields are such."""
    head = dict(record)
    if recorded_at is not None:
        head["recorded_at"] = recorded_at
    at = head.get("at")
    if isinstance(at, float):
        head["at"] = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    tail = []
    for field in ("inputs", "outputs"):
        if field not in head:
            continue
        value = head.pop(field)
        text = None if head.get(f"{field}_truncated") else _kept(value, limit)
        if text is None:
            text, head[f"{field}_truncated"] = "null", True
        tail.append(f',"{field}":{text}')
    small = _json(head)
    if _unreadable(head, small):
        raise ValueError("a prediction record that would not read back")
    # the bounded fields are serialized once, then spliced in after the small ones
    return small[:-1] + "".join(tail) + "}\n"


def _kept(value: Any, limit: int) -> str | None:
    """``value`` as JSON, or None when it is left out (see ``line``)."""
    try:
        text = _json(value)
    except (ValueError, RecursionError):
        return None
    return None if len(text) > limit or _unreadable(value, text) else text


def _unreadable(value: Any, text: str) -> bool:
    """Whether ``value`` (``text`` as JSON: ASCII) is JSON a page could not send."""
    ascii_text = text.encode()
    return too_deep(ascii_text) or lone_surrogate(value, ascii_text)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)


class _Files:
    """The process's record files: ``records-HOST-PID-START-SEQ.jsonl``, rotated."""

    def __init__(self, settings: RecordSettings) -> None:
        self.settings = settings
        try:
            settings.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(
                f"cannot record predictions in {settings.directory}: {exc.strerror}"
            ) from None
        host = "".join(
            c if c.isascii() and (c.isalnum() or c in "-.") else "-" for c in socket.gethostname()
        )
        started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        process = os.getpid() if settings.process is None else settings.process
        self._stem = f"records-{host}-{process}-{started}"
        self._sequence = 0
        self._synced = time.monotonic()
        self._dirty = False
        self._out: IO[bytes] | None = None
        self._size = 0
        self._open()

    @property
    def path(self) -> Path:
        return self.settings.directory / f"{self._stem}-{self._sequence:05d}{SUFFIX}"

    def _open(self) -> None:
        try:
            # inputs are people's data: this user's only
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._out = os.fdopen(descriptor, "wb")
        except OSError as exc:
            message = f"cannot record predictions in {self.path}: {exc.strerror}"
            raise InvalidInput(message) from None
        self._size = 0

    def write(self, data: bytes) -> None:
        if self._out is None:  # a rotation failed earlier: try again
            self._open()
        assert self._out is not None
        self._out.write(data)
        self._out.flush()
        self._size += len(data)
        self._dirty = True
        if self._size >= self.settings.rotate_bytes:
            self.close()
            self._sequence += 1
            self._open()

    def abandon(self) -> None:
        """After a failed write: close this file (its torn last line is skipped by the
        reader) and write the next batch into a new one."""
        try:
            self.close()
        except OSError:
            self._out = None
        self._sequence += 1

    def sync_if_due(self) -> None:
        if self._dirty and time.monotonic() - self._synced >= self.settings.fsync_seconds:
            self._sync()

    def _sync(self) -> None:
        if self._out is not None:
            try:
                os.fsync(self._out.fileno())
            except OSError:
                log.exception("prediction records: fsync of %s failed", self.path)
        self._synced, self._dirty = time.monotonic(), False

    def close(self) -> None:
        if self._out is not None:
            self._sync()
            self._out.close()
            self._out = None


def deployment_records_dir(serving_root: Path, deployment_id: str) -> Path:
    """Where a deployment's replicas record: ``serving/records/ID`` under the home
    (beside ``serving/deployments/ID``, and kept when the deployment is deleted). The
    id is the server's own, never a name a user gave."""
    return serving_root / "records" / deployment_id


def record_files(directory: Path) -> list[Path]:
    """The record files in ``directory`` (none while it does not exist), oldest
    first within each process. A directory that cannot be read is an OSError, never
    an empty one."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    return sorted(
        directory / e.name
        for e in entries
        if e.name.startswith("records-")
        and e.name.endswith(SUFFIX)
        and e.is_file(follow_symlinks=False)  # a replica's link or FIFO is not a record
    )


def open_record_file(path: Path) -> IO[bytes]:
    """A record file, for reading. The folder is a replica's to write, so what lies
    there under a record's name may be a link (to a file only the server may read) or
    a FIFO (which would block the reader): neither is opened (OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path.name)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_records(directory: Path) -> Iterator[dict[str, Any]]:
    """Every record in ``directory``, file by file (each record gets ``file``, the
    name of the file it came from). A torn last line (a process killed mid-write, or a
    writer still writing) is skipped; a bad line elsewhere is an error naming the file
    and line."""
    for path in record_files(Path(directory)):
        with open_record_file(path) as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    record = json.loads(raw)
                except ValueError:
                    if not raw.endswith(b"\n"):
                        break  # the torn last line: nothing follows it
                    raise InvalidInput(f"{path.name} line {number} is not a record") from None
                if not isinstance(record, dict):
                    raise InvalidInput(f"{path.name} line {number} is not a record")
                record["file"] = path.name
                yield record
