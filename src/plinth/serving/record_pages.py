"""Pages of prediction records read back from a directory of record files
(records.py), bounded in memory and time however large the files grow.

Every file is sorted by ``recorded_at`` (its writer stamps records as it writes them,
never going back), so a page is a merge of the files in that order, newest first or
oldest first: each file is read from one end, or from a point found by binary search
(a cursor, or ``since``), the files opened only when they can hold the next record,
and the merge stops at the limit. A record's key is ``(recorded_at, file, offset)``:
a total order, so a cursor (the key of the last record looked at) continues exactly
where its page stopped, however many records were written meanwhile. A page also
stops after ``SCAN_BYTES`` of lines looked at (a filter that matches little) or
``PAGE_BYTES`` of records kept, and then still gives a cursor.

A page reads each file only up to where it ended when the page began: a replica
writing meanwhile neither reorders nor repeats what the page gives. A torn last line
(a writer killed mid-write, or still writing) is not read; a complete line that is not
a record (damaged, or written before records were stamped) is skipped and counted.
Inputs or outputs that a JSON response could not carry (json_limits) are left out
and marked, as the writer does; a record that still could not be sent is skipped.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from plinth.serving.json_limits import MAX_DEPTH, lone_surrogate, too_deep
from plinth.serving.records import open_record_file, record_files

MAX_LIMIT = 10_000
SCAN_BYTES = 32 << 20  # lines looked at by one page, at most (about)
PAGE_BYTES = 16 << 20  # records kept by one page, at most (about)
EDGE_BYTES = 1 << 20  # looked at from each end for a file's first and last record
BLOCK = 64 << 10
Key = tuple[str, str, int]  # recorded_at, file name, offset of the line
# any name record_files lists: a cursor's file name is only compared, never opened
_FILE = re.compile(r"records-[^/\x00]{0,240}\.jsonl", re.DOTALL)
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")  # as stamp_text writes


@dataclass(frozen=True)
class PageQuery:
    limit: int = 100
    since: datetime | None = None  # records of predictions made at or after it (UTC if naive)
    version: str | None = None  # only those the version answered
    shadow: bool | None = None  # only the shadow's (True) or only the answers (False)
    newest_first: bool = True
    after: Key | None = None  # a cursor: continue past this key


@dataclass
class Page:
    records: list[dict[str, Any]] = field(default_factory=list)
    next: Key | None = None  # where the next page starts; None: nothing more
    skipped: int = 0  # complete lines that were not records


def read_page(directory: Path, query: PageQuery) -> Page:
    """One page of the records in ``directory`` that ``query`` asks for."""
    files, skipped = _files(directory, query)
    with contextlib.ExitStack() as stack:
        page = _Merge(files, query, stack).run()
    page.skipped += skipped
    return page


# cursors ----------------------------------------------------------------------------


def encode_cursor(key: Key) -> str:
    text = json.dumps(list(key), separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Key:
    """The key a cursor names; ValueError when it is not one this module made."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        found = None if too_deep(raw, 1) else json.loads(raw)
    except (ValueError, TypeError):
        raise ValueError("not a cursor a page of records gave") from None
    if (
        not isinstance(found, list)
        or len(found) != 3
        or not isinstance(found[0], str)
        or not _STAMP.fullmatch(found[0])
        or not isinstance(found[1], str)
        or not _FILE.fullmatch(found[1])
        or type(found[2]) is not int
        or found[2] < 0
    ):
        raise ValueError("not a cursor a page of records gave")
    return found[0], found[1], found[2]


# one file ---------------------------------------------------------------------------


class _File:
    """One record file up to ``end`` (by default, its last newline when opened: a
    torn line, or one being written now, is not part of it)."""

    def __init__(self, path: Path, end: int | None = None) -> None:
        self.name = path.name
        self.handle: IO[bytes] = open_record_file(path)  # closed by close()
        try:
            size = self.handle.seek(0, 2)
            self.end = self._complete(size) if end is None else min(end, size)
        except BaseException:
            self.handle.close()
            raise
        self.skipped = 0

    def close(self) -> None:
        self.handle.close()

    def _complete(self, size: int) -> int:
        """The offset after the last newline before ``size``."""
        pos = size
        while pos > 0:
            start = max(0, pos - BLOCK)
            self.handle.seek(start)
            found = self.handle.read(pos - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            pos = start
        return 0

    def parse(
        self, offset: int, raw: bytes, count: bool = True
    ) -> tuple[Key, dict[str, Any]] | None:
        """A line's key and record; None (``count``-ed) for a line that is not one."""
        record = _record(raw)
        if record is None:
            self.skipped += count
            return None
        return (record["recorded_at"], self.name, offset), record

    def forward(self, start: int, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """The lines from ``start`` (a line's start) up to ``stop`` (default: the end)."""
        stop = self.end if stop is None else stop
        self.handle.seek(start)
        pos = start
        while pos < stop:
            raw = self.handle.readline()
            if not raw:
                return
            yield pos, raw
            pos += len(raw)

    def backward(self, stop: int) -> Iterator[tuple[int, bytes]]:
        """The lines before ``stop`` (a line's start, or the end), the last first."""
        buffer, pos = b"", stop  # buffer: the bytes from pos not yet given, whole lines
        while True:
            end = len(buffer)
            while (cut := buffer.rfind(b"\n", 0, end - 1)) >= 0:
                yield pos + cut + 1, buffer[cut + 1 : end]
                end = cut + 1
            buffer = buffer[:end]
            if pos == 0:
                if buffer:
                    yield 0, buffer
                return
            size = min(BLOCK, pos)
            pos -= size
            self.handle.seek(pos)
            buffer = self.handle.read(size) + buffer

    def first_where(self, wanted: Callable[[Key], bool]) -> int:
        """The start of the first record whose key is ``wanted`` (the end if none),
        where every record after a wanted one is wanted too: a binary search on
        offsets, then a short scan."""
        low, high = 0, self.end
        while high - low > BLOCK:
            start = self._line_start((low + high) // 2)
            if start >= high:
                break  # no line starts between the middle and high: scan from low
            probe = self._first_record(start, high)
            if probe is None:
                high = start  # only damaged lines from there: skipped either way
            elif wanted(probe[0]):
                high = probe[0][2]
            else:
                low = probe[1]
        for offset, raw in self.forward(low, high):
            parsed = self.parse(offset, raw, count=False)
            if parsed is not None and wanted(parsed[0]):
                return offset
        return high

    def _line_start(self, pos: int) -> int:
        """The first line start at or after ``pos``."""
        if pos == 0:
            return 0
        self.handle.seek(pos - 1)
        return pos - 1 + len(self.handle.readline())

    def _first_record(self, start: int, stop: int) -> tuple[Key, int] | None:
        """The key of the first record in [start, stop), and the offset after it."""
        for offset, raw in self.forward(start, stop):
            parsed = self.parse(offset, raw, count=False)
            if parsed is not None:
                return parsed[0], offset + len(raw)
        return None

    def edge(self, last: bool) -> tuple[Key | None, int]:
        """The key of the file's first (or last) record, looking at most
        ``EDGE_BYTES`` of lines from that end, and how many lines that were not
        records were looked at (a file that holds none is one damaged, or written
        before records were stamped: it costs each page this much, not all of it)."""
        lines = self.backward(self.end) if last else self.forward(0)
        seen = others = 0
        for offset, raw in lines:
            parsed = self.parse(offset, raw, count=False)
            if parsed is not None:
                return parsed[0], others
            seen, others = seen + len(raw), others + 1
            if seen >= EDGE_BYTES:
                break
        return None, others


def _record(raw: bytes) -> dict[str, Any] | None:
    """The record a line holds, as a page can send it back (inputs or outputs it
    could not are left out and marked); None for a line that is not a record, or
    one that still could not be sent."""
    if too_deep(raw, MAX_DEPTH + 1):  # the record's own object, then its fields
        return None
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    stamp = record.get("recorded_at")
    if not isinstance(stamp, str) or not _STAMP.fullmatch(stamp):
        return None  # unstamped (written before stamps): not in the files' order
    if lone_surrogate(record, raw):
        for field in ("inputs", "outputs"):
            if lone_surrogate(record.get(field), raw):
                record[field], record[f"{field}_truncated"] = None, True
        if lone_surrogate(record, raw):
            return None
    return record


@dataclass(frozen=True)
class _Candidate:
    path: Path
    first: Key
    last: Key
    end: int  # where the file ended when listed: the page reads no further


def _files(directory: Path, query: PageQuery) -> tuple[list[_Candidate], int]:
    """The files that can hold a record the query asks for, in the order they join
    the merge (by the key each can give first); and the lines looked at in files
    that hold no record."""
    since = None if query.since is None else _stamp(_utc(query.since))
    found, skipped = [], 0
    for path in record_files(Path(directory)):
        try:
            f = _File(path)
        except FileNotFoundError:  # removed since it was listed; any other error is one
            continue
        try:
            (first, others), (last, _) = f.edge(last=False), f.edge(last=True)
        finally:
            f.close()
        if first is None and last is None:
            skipped += others  # no record at either end: none in it
            continue
        # damage at one end only: bounds that open the file early enough to read past it
        first = first or ("", path.name, 0)
        last = last or ("~", path.name, f.end)
        if since is not None and last[0] < since:
            continue  # recorded before since: every prediction in it was made before too
        if query.after is not None and (
            (query.newest_first and first >= query.after)
            or (not query.newest_first and last <= query.after)
        ):
            continue
        found.append(_Candidate(path, first, last, f.end))
    if query.newest_first:
        return sorted(found, key=lambda c: c.last, reverse=True), skipped
    return sorted(found, key=lambda c: c.first), skipped


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC (naive: UTC already); within hours of either end of the
    calendar, where UTC falls off it, that end."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    """A UTC time as ``recorded_at`` is written (records.stamp_text), to compare with it."""
    return moment.isoformat(timespec="microseconds")


# the merge --------------------------------------------------------------------------


@dataclass
class _Head:
    """The next record of one file (``reader``): the heap's top is the one the page
    takes next."""

    key: Key
    record: dict[str, Any]
    size: int
    reader: int
    newest_first: bool

    def __lt__(self, other: _Head) -> bool:
        return self.key > other.key if self.newest_first else self.key < other.key


class _Merge:
    def __init__(
        self, files: list[_Candidate], query: PageQuery, stack: contextlib.ExitStack
    ) -> None:
        self.pending = files[::-1]  # taken from the end
        self.query, self.stack = query, stack
        self.heap: list[_Head] = []
        self.readers: list[tuple[_File, Iterator[tuple[int, bytes]]]] = []
        self.since = None if query.since is None else _utc(query.since)
        self.since_stamp = None if self.since is None else _stamp(self.since)

    def run(self) -> Page:
        page, scanned, kept, last = Page(), 0, 0, None
        while len(page.records) < self.query.limit:
            self._open_due()
            if not self.heap:
                return self._done(page, None)
            head = heapq.heappop(self.heap)
            self._advance(head.reader)
            last, scanned = head.key, scanned + head.size
            if self._wanted(head.record):
                page.records.append(head.record)
                kept += head.size
            if scanned >= SCAN_BYTES or kept >= PAGE_BYTES:
                return self._done(page, last)
        self._open_due()
        return self._done(page, last if self.heap else None)

    def _done(self, page: Page, last: Key | None) -> Page:
        page.next = last
        page.skipped = sum(f.skipped for f, _ in self.readers)
        return page

    def _open_due(self) -> None:
        """Open every file that could give a record before the heap's top."""
        newest = self.query.newest_first
        while self.pending:
            candidate = self.pending[-1]
            if self.heap:
                top = self.heap[0].key
                if (candidate.last < top) if newest else (candidate.first > top):
                    return
            self._open(self.pending.pop())

    def _open(self, candidate: _Candidate) -> None:
        try:
            f = _File(candidate.path, candidate.end)
        except FileNotFoundError:  # removed since it was listed; any other error is one
            return
        self.stack.callback(f.close)
        after, since = self.query.after, self.since_stamp
        if self.query.newest_first:
            stop = f.end if after is None else f.first_where(lambda k: k >= after)
            lines = f.backward(stop)
        else:
            start = f.first_where(
                lambda k: (after is None or k > after) and (since is None or k[0] >= since)
            )
            lines = f.forward(start)
        self.readers.append((f, lines))
        self._advance(len(self.readers) - 1)

    def _advance(self, reader: int) -> None:
        """Put the reader's next record on the heap (none when it is done)."""
        f, lines = self.readers[reader]
        newest = self.query.newest_first
        for offset, raw in lines:
            parsed = f.parse(offset, raw)
            if parsed is None:
                continue
            key, record = parsed
            if newest and self.since_stamp is not None and key[0] < self.since_stamp:
                return  # recorded before since: so is everything before it
            heapq.heappush(self.heap, _Head(key, record, len(raw), reader, newest))
            return

    def _wanted(self, record: dict[str, Any]) -> bool:
        q = self.query
        if q.version is not None and str(record.get("version")) != q.version:
            return False
        if q.shadow is not None and bool(record.get("shadow", False)) != q.shadow:
            return False
        if self.since is not None:  # recorded after since, but was it made after?
            try:
                at = datetime.fromisoformat(str(record.get("at")))
            except ValueError:
                return False
            return (at if at.tzinfo else at.replace(tzinfo=UTC)) >= self.since
        return True
