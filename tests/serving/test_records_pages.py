"""Reading prediction records back a page at a time (record_pages.py), on record files
written the way replicas write them: pages in either order follow one another without
a gap or a repeat across files that interleave; the filters hold; a torn last line is
not read and a damaged one is skipped and counted; a page of a large file reads only
the part it needs; a filter that matches little stops at the scan budget and still
gives a cursor; and the writer's stamps never go back, even when the clock does."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plinth.serving import record_pages, records
from plinth.serving.record_pages import Page, PageQuery, decode_cursor, encode_cursor, read_page
from plinth.serving.records import Recorder, RecordSettings, line, read_records, stamp_text

BASE = 1_700_000_000.0


def _write_file(directory: Path, name: str, rows: list[tuple[float, dict[str, Any]]]) -> None:
    """``rows`` of (recorded_at, record) as one writer writes them (stamps in order)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"records-host-{name}.jsonl", "a") as out:
        for stamp, record in rows:
            out.write(line(record, 1 << 16, stamp_text(stamp)))


def _replicas(directory: Path, files: int = 4, seed: int = 7) -> list[dict[str, Any]]:
    """Files whose times interleave, with ties in one file; every record as read back
    (oldest first by recorded_at, then file, then place in the file)."""
    rng = random.Random(seed)
    written = []
    for f in range(files):
        stamp, rows = BASE + f, []
        for n in range(rng.randint(40, 120)):
            stamp += rng.choice([0.0, 0.01, 0.3])  # equal stamps: one batch
            record = {
                "prediction_id": f"{f}-{n}",
                "at": stamp - 0.004,
                "version": str(1 + n % 2),
                "inputs": [[n] * rng.randint(0, 30)],
                "outputs": [n],
            }
            if n % 5 == 0:
                record["shadow"] = True
            rows.append((stamp, record))
            written.append((stamp_text(stamp), f"records-host-{f}.jsonl", n, record))
        _write_file(directory, str(f), rows)
    written.sort(key=lambda w: w[:3])
    found = list(read_records(directory))
    by_id = {r["prediction_id"]: r for r in found}
    return [by_id[w[3]["prediction_id"]] for w in written]


def _all_pages(directory: Path, **query: Any) -> tuple[list[str], list[Page]]:
    ids, pages, after = [], [], query.pop("after", None)
    while True:
        page = read_page(directory, PageQuery(after=after, **query))
        pages.append(page)
        ids += [r["prediction_id"] for r in page.records]
        if page.next is None:
            return ids, pages
        after = decode_cursor(encode_cursor(page.next))


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 256 bytes: the binary search and the backward reads cross many."""
    monkeypatch.setattr(record_pages, "BLOCK", 256)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("limit", [1, 7, 10_000])
def test_pages_in_either_order_follow_one_another_across_files(tmp_path: Path, limit: int) -> None:
    oldest_first = [r["prediction_id"] for r in _replicas(tmp_path)]
    newest, pages = _all_pages(tmp_path, limit=limit)
    assert newest == oldest_first[::-1]
    assert all(len(p.records) <= limit for p in pages) and pages[-1].next is None
    oldest, _ = _all_pages(tmp_path, limit=limit, newest_first=False)
    assert oldest == oldest_first
    # a cursor holds while more is written: the pages after it are the same
    first = read_page(tmp_path, PageQuery(limit=limit, newest_first=False))
    assert first.next is not None or limit == 10_000
    _write_file(tmp_path, "9", [(BASE + 99, {"prediction_id": "late", "at": BASE + 99})])
    if first.next is not None:
        rest, _ = _all_pages(tmp_path, limit=limit, after=first.next, newest_first=False)
        assert rest == [*oldest_first[limit:], "late"]


@pytest.mark.usefixtures("small_blocks")
def test_filters_hold_alone_together_and_across_pages(tmp_path: Path) -> None:
    found = _replicas(tmp_path)
    since = datetime.fromtimestamp(BASE + 2.5, UTC)

    def made_since(r: dict[str, Any]) -> bool:
        return datetime.fromisoformat(r["at"]) >= since

    cases: list[tuple[dict[str, Any], Any]] = [
        ({"version": "2"}, lambda r: r["version"] == "2"),
        ({"shadow": True}, lambda r: r.get("shadow") is True),
        ({"shadow": False}, lambda r: "shadow" not in r),
        ({"since": since}, made_since),
        (
            {"since": since, "version": "1", "shadow": False},
            lambda r: made_since(r) and r["version"] == "1" and "shadow" not in r,
        ),
        ({"version": "3"}, lambda r: False),
    ]
    for query, keep in cases:
        expected = [r["prediction_id"] for r in found if keep(r)]
        assert expected or query == {"version": "3"}
        for limit in (3, 10_000):
            newest, _ = _all_pages(tmp_path, limit=limit, **query)
            assert newest == expected[::-1], (query, limit)
            oldest, _ = _all_pages(tmp_path, limit=limit, newest_first=False, **query)
            assert oldest == expected, (query, limit)
    # "at or after": a prediction made exactly at since is in
    exact = datetime.fromisoformat(found[10]["at"])
    page = read_page(tmp_path, PageQuery(limit=10_000, since=exact, newest_first=False))
    assert found[10]["prediction_id"] in [r["prediction_id"] for r in page.records]
    assert all(datetime.fromisoformat(r["at"]) >= exact for r in page.records)
    assert len(page.records) == sum(datetime.fromisoformat(r["at"]) >= exact for r in found)


def test_a_torn_last_line_is_not_read_and_a_damaged_line_is_skipped_and_counted(
    tmp_path: Path,
) -> None:
    rows = [(BASE + n, {"prediction_id": str(n), "at": BASE + n}) for n in range(3)]
    _write_file(tmp_path, "a", rows[:2])
    with open(tmp_path / "records-host-a.jsonl", "a") as out:
        out.write("not a record\n")  # damaged in the middle of a file
    _write_file(tmp_path, "a", rows[2:])
    with open(tmp_path / "records-host-a.jsonl", "a") as out:
        out.write('{"prediction_id":"3","inputs":[')  # killed mid-write
    for newest_first in (True, False):
        page = read_page(tmp_path, PageQuery(newest_first=newest_first))
        ids = [r["prediction_id"] for r in page.records]
        assert ids == (["2", "1", "0"] if newest_first else ["0", "1", "2"])
        assert page.skipped == 1 and page.next is None


def _bytes_read() -> int:
    """What this process has read through read(2) so far (Linux)."""
    for entry in Path("/proc/self/io").read_text().splitlines():
        if entry.startswith("rchar:"):
            return int(entry.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_page_of_a_large_file_reads_only_what_it_needs(tmp_path: Path) -> None:
    count = 60_000
    padding = "x" * 300
    rows = [
        (BASE + n, {"prediction_id": str(n), "at": BASE + n, "inputs": [padding], "v": "1"})
        for n in range(count)
    ]
    _write_file(tmp_path, "big", rows)
    size = (tmp_path / "records-host-big.jsonl").stat().st_size
    assert size > 20 << 20

    def page_reading(query: PageQuery) -> tuple[list[str], int]:
        before = _bytes_read()
        page = read_page(tmp_path, query)
        return [r["prediction_id"] for r in page.records], _bytes_read() - before

    newest, read = page_reading(PageQuery(limit=10))
    assert newest == [str(n) for n in range(count - 1, count - 11, -1)] and read < 1 << 20
    middle = (stamp_text(BASE + 30_000), "records-host-big.jsonl", 0)
    older, read = page_reading(PageQuery(limit=10, after=middle))
    assert older == [str(n) for n in range(29_999, 29_989, -1)] and read < 1 << 20
    since = datetime.fromtimestamp(BASE + 40_000, UTC)
    later, read = page_reading(PageQuery(limit=10, since=since, newest_first=False))
    assert later == [str(n) for n in range(40_000, 40_010)] and read < 1 << 20
    recent = datetime.fromtimestamp(BASE + count - 5, UTC)  # fewer than the limit
    found, read = page_reading(PageQuery(limit=100, since=recent))
    assert found == [str(n) for n in range(count - 1, count - 6, -1)] and read < 1 << 20


def test_a_filter_that_matches_little_stops_at_the_scan_budget_with_a_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record_pages, "SCAN_BYTES", 4096)
    rows = [
        (BASE + n, {"prediction_id": str(n), "at": BASE + n, "version": "1", "pad": "y" * 100})
        for n in range(400)
    ]
    rows[17][1]["version"] = "2"  # the one match, deep in the past
    _write_file(tmp_path, "a", rows)
    first = read_page(tmp_path, PageQuery(version="2"))
    assert first.records == [] and first.next is not None  # more to look at: say so
    ids, pages = _all_pages(tmp_path, version="2")
    assert ids == ["17"] and len(pages) > 5 and pages[-1].next is None


def test_a_cursor_is_checked_before_it_is_used() -> None:
    key = (stamp_text(BASE), "records-host-1-x-00000.jsonl", 123)
    assert decode_cursor(encode_cursor(key)) == key
    made_up = [
        "",
        "%%%",
        encode_cursor((stamp_text(BASE), "../../etc/passwd", 0)),
        encode_cursor(("yesterday", "records-host-a.jsonl", 0)),
        encode_cursor((stamp_text(BASE), "records-host-a.jsonl", -1)),
    ]
    for text in made_up:
        with pytest.raises(ValueError, match="not a cursor"):
            decode_cursor(text)


class _BackwardClock:
    """``time`` as records.py sees it, with a wall clock that steps back an hour."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        self.now -= 3600
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_the_writers_stamps_never_go_back_even_when_the_clock_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "time", _BackwardClock())
    recorder = Recorder(RecordSettings(tmp_path))
    for n in range(3):  # one batch each: wait until each is written
        recorder.submit({"prediction_id": str(n), "at": 1.0})
        deadline = time.monotonic() + 30
        while len(list(read_records(tmp_path))) <= n and time.monotonic() < deadline:
            time.sleep(0.01)
    recorder.close()
    stamps = [r["recorded_at"] for r in read_records(tmp_path)]
    assert len(stamps) == 3 and stamps == sorted(stamps) and len(stamps[0]) == 32
