"""Reading prediction records back a page at a time (record_pages.py), on record files
written the way replicas write them: pages in either order follow one another without
a gap or a repeat across files that interleave; the filters hold; a torn last line is
not read and a damaged one is skipped and counted; a page of a large file reads only
the part it needs; a filter that matches little stops at the scan budget and still
gives a cursor; and the writer's stamps never go back, even when the clock does."""

from __future__ import annotations

import base64
import json
import random
import time
from datetime import UTC, datetime, timedelta, timezone
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


def _stamped(prediction_id: str, stamp: float, **fields: Any) -> bytes:
    """A record line as the writer writes it, stamped ``stamp``."""
    return line(
        {"prediction_id": prediction_id, "at": stamp, **fields}, 1 << 16, stamp_text(stamp)
    ).encode()


def test_a_replica_writing_during_a_page_neither_reorders_nor_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "records-a-1-x-00000.jsonl", tmp_path / "records-b-2-x-00000.jsonl"
    a.write_bytes(_stamped("a1", BASE + 1) + _stamped("a5", BASE + 5))
    b.write_bytes(_stamped("b4", BASE + 4) + _stamped("b6", BASE + 6))
    listed = record_pages._files

    def then_a_writes(directory: Path, query: PageQuery) -> Any:
        found = listed(directory, query)
        with open(a, "ab") as out:  # after the page listed the files, before it read them
            out.write(_stamped("a7", BASE + 7))
        return found

    monkeypatch.setattr(record_pages, "_files", then_a_writes)
    first = read_page(tmp_path, PageQuery(limit=2))
    monkeypatch.setattr(record_pages, "_files", listed)
    assert [r["prediction_id"] for r in first.records] == ["b6", "a5"]
    rest, _ = _all_pages(tmp_path, limit=2, after=first.next)
    assert rest == ["b4", "a1"]  # a7 is on the next first page, not in this walk
    assert [r["prediction_id"] for r in read_page(tmp_path, PageQuery(limit=1)).records] == ["a7"]


@pytest.mark.parametrize(
    ("since", "everything"),
    [
        (datetime(9999, 12, 31, 23, 59, 59, 999999), False),  # naive: UTC
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1))), False),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), True),
        (datetime(1, 1, 1), True),
    ],
)
def test_since_at_the_ends_of_the_calendar_is_the_end_it_is_near(
    tmp_path: Path, since: datetime, everything: bool
) -> None:
    _write_file(
        tmp_path, "a", [(BASE + n, {"prediction_id": str(n), "at": BASE + n}) for n in range(3)]
    )
    for newest_first in (True, False):
        page = read_page(tmp_path, PageQuery(since=since, newest_first=newest_first))
        assert len(page.records) == (3 if everything else 0) and page.next is None


def test_a_record_a_response_could_not_carry_is_left_out_or_skipped(tmp_path: Path) -> None:
    """Lines no writer of now writes, but an older one (or damage) could: a lone
    surrogate in inputs or outputs is left out and marked; one elsewhere, or nesting
    past what a page can send (or what the parser can read), skips the line."""
    deep = "[" * 300 + "]" * 300
    deeper = "[" * 5000 + "]" * 5000
    lines = [
        ("inputs", r'"inputs":["\ud800"],"outputs":[1]'),
        ("outputs", r'"inputs":[1],"outputs":{"x":"a\udfffb"}'),
        ("pair", r'"inputs":["\ud83d\ude00"],"outputs":[1]'),  # a valid pair: kept
        ("escaped", r'"inputs":["\\ud800"],"outputs":[1]'),  # a backslash, then text
        ("model", r'"model":"\udc00","inputs":[1]'),
        ("deep", f'"inputs":{deep}'),
        ("deeper", f'"inputs":{deeper}'),
        ("fine", f'"inputs":{"[" * 60 + "]" * 60}'),
    ]
    text = "".join(
        f'{{"prediction_id":"{name}","recorded_at":"{stamp_text(BASE + n)}",{fields}}}\n'
        for n, (name, fields) in enumerate(lines)
    )
    (tmp_path / "records-host-a.jsonl").write_text(text)
    for newest_first in (True, False):
        page = read_page(tmp_path, PageQuery(newest_first=newest_first))
        found = {r["prediction_id"]: r for r in page.records}
        assert set(found) == {"inputs", "outputs", "pair", "escaped", "fine"}
        assert page.skipped == 3 and page.next is None
        assert found["inputs"]["inputs"] is None and found["inputs"]["inputs_truncated"] is True
        assert found["inputs"]["outputs"] == [1] and "outputs_truncated" not in found["inputs"]
        assert found["outputs"]["outputs"] is None and found["outputs"]["outputs_truncated"]
        assert found["pair"]["inputs"] == ["\U0001f600"]
        assert found["escaped"]["inputs"] == ["\\ud800"]
        for record in page.records:
            json.dumps(record, ensure_ascii=False).encode()  # all of it can be sent


def test_the_writer_leaves_out_what_would_not_read_back(tmp_path: Path) -> None:
    deep: Any = 0
    for _ in range(2000):  # deeper than json.dumps goes: it would stop the writer
        deep = [deep]
    recorder = Recorder(RecordSettings(tmp_path))
    odd = [
        ("surrogate", {"inputs": ["\ud800"], "outputs": [1]}),
        ("deep", {"inputs": [1], "outputs": deep}),
        ("nan", {"inputs": [float("nan")], "outputs": [1]}),
        ("fine", {"inputs": ["\U0001f600", "x" * 10], "outputs": [1]}),
        ("head", {"request_id": "\udfff", "inputs": [1]}),  # dropped, counted
        ("after", {"inputs": [2], "outputs": [2]}),  # the writer lives on
    ]
    for prediction_id, fields in odd:
        recorder.submit({"prediction_id": prediction_id, "at": BASE, **fields})
    recorder.close()
    page = read_page(tmp_path, PageQuery(newest_first=False))
    found = {r["prediction_id"]: r for r in page.records}
    assert list(found) == ["surrogate", "deep", "nan", "fine", "after"] and page.skipped == 0
    assert (found["surrogate"]["inputs"], found["surrogate"]["inputs_truncated"]) == (None, True)
    assert found["surrogate"]["outputs"] == [1]
    assert (found["deep"]["outputs"], found["deep"]["outputs_truncated"]) == (None, True)
    assert (found["nan"]["inputs"], found["nan"]["inputs_truncated"]) == (None, True)
    assert found["fine"]["inputs"] == ["\U0001f600", "x" * 10] and found["after"]["inputs"] == [2]
    [dropped] = [
        s.value for s in recorder.dropped.collect()[0].samples if s.name.endswith("_total")
    ]
    assert dropped == 1


def test_a_file_that_cannot_be_read_is_an_error_not_a_file_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from plinth.serving import record_pages

    _write_file(tmp_path, "a", [(BASE, {"prediction_id": "0", "at": BASE})])

    def failing(path: Path) -> Any:  # a disk that fails, not a file that went away
        raise OSError(errno.EIO, "I/O error", path.name)

    monkeypatch.setattr(record_pages, "open_record_file", failing)
    with pytest.raises(OSError, match="I/O error"):
        read_page(tmp_path, PageQuery())
    monkeypatch.undo()
    (tmp_path / "records-host-b.jsonl").mkdir()  # not a file: not a record, left out
    assert [r["prediction_id"] for r in read_page(tmp_path, PageQuery()).records] == ["0"]
    (tmp_path / "records-host-b.jsonl").rmdir()
    (tmp_path / "records-host-a.jsonl").rename(tmp_path / "file")
    with pytest.raises(NotADirectoryError):  # the directory itself
        read_page(tmp_path / "file", PageQuery())
    assert read_page(tmp_path / "none-yet", PageQuery()).records == []


def test_a_hosts_name_outside_ascii_names_files_whose_cursors_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file named by a writer before names were ASCII: the reader follows its cursors
    _write_file(
        tmp_path,
        "büro-1-x-00000",
        [(BASE + n, {"prediction_id": str(n), "at": BASE + n}) for n in range(5)],
    )
    ids, pages = _all_pages(tmp_path, limit=2)
    assert ids == ["4", "3", "2", "1", "0"] and len(pages) == 3
    # and the writer names its files in ASCII now
    monkeypatch.setattr(records.socket, "gethostname", lambda: "büro-ünß.example")
    Recorder(RecordSettings(tmp_path / "new")).close()
    [written] = records.record_files(tmp_path / "new")
    assert written.name.startswith("records-b-ro--n-.example-") and written.name.isascii()


def test_a_cursor_is_any_name_the_reader_lists_and_nothing_else() -> None:
    for name in ["records-büro-1-x-00000.jsonl", "records-\udcff.jsonl", "records-.jsonl"]:
        key = (stamp_text(BASE), name, 7)
        assert decode_cursor(encode_cursor(key)) == key
    nested = base64.urlsafe_b64encode(b"[" * 2000 + b"]" * 2000).decode()
    for made_up in [
        encode_cursor((stamp_text(BASE), "records-a/../b.jsonl", 0)),
        encode_cursor((stamp_text(BASE)[:-6], "records-a.jsonl", 0)),  # no offset: not ours
        nested,
    ]:
        with pytest.raises(ValueError, match="not a cursor"):
            decode_cursor(made_up)


@pytest.mark.usefixtures("small_blocks")
def test_unstamped_lines_are_skipped_and_counted_and_cost_a_page_little(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written before the writer stamped them hold only ``at``, out of order:
    they are not in the files' order, so pages pass them over (counting them), and a
    file of them costs a page the edges it looks at, never the whole file."""
    monkeypatch.setattr(record_pages, "EDGE_BYTES", 4096)
    found = _replicas(tmp_path, files=2)
    rng = random.Random(3)
    with open(tmp_path / "records-old-1-x-00000.jsonl", "w") as out:
        for n in range(20_000):
            at = datetime.fromtimestamp(BASE + rng.random() * 10, UTC).isoformat()
            out.write(json.dumps({"prediction_id": f"old{n}", "at": at, "inputs": [n]}) + "\n")
    expected = [r["prediction_id"] for r in found]
    for newest_first in (True, False):
        ids, pages = _all_pages(tmp_path, limit=7, newest_first=newest_first)
        assert ids == (expected[::-1] if newest_first else expected)
        assert all(0 < p.skipped < 200 for p in pages)  # about 4 KiB of lines each
    before = _bytes_read()
    read_page(tmp_path, PageQuery(limit=7))
    assert _bytes_read() - before < 200_000  # the old file alone is over 1 MiB
    assert (tmp_path / "records-old-1-x-00000.jsonl").stat().st_size > 1 << 20
