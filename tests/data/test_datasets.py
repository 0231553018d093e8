"""Datasets over the real store (SQLite and Postgres): versions as content-addressed
manifests, deduplicated pushes, verified and resumable pulls, diffs with schemas,
manifests checked like artifact paths, roles and the uniform 404, audit."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from plinth import Client
from plinth.core import blobs as blobs_module
from plinth.core.blobs import manifest_digest
from plinth.core.crypto import MasterKey
from plinth.core.platform import Platform
from plinth.core.projects import projects
from plinth.data import client as data_client
from plinth.errors import BlobMissing, InvalidInput, NotFound, PermissionDenied
from plinth.settings import Settings
from tests.conftest import make_settings, raw_http


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The digests pushes upload."""
    sent: list[str] = []
    send: Callable[..., None] = data_client.DataCalls._send_content

    def counted(self: Any, base: str, items: list[tuple[str, Any]], *rest: Any) -> None:
        sent.extend(digest for digest, _ in items)
        send(self, base, items, *rest)

    monkeypatch.setattr(data_client.DataCalls, "_send_content", counted)
    return sent


def test_a_push_versions_files_once_and_unchanged_data_makes_no_version(
    client: Client, project: str, tmp_path: Path, uploads: list[str]
) -> None:
    files = {f"f{i:03}.bin": os.urandom(2000) for i in range(20)}
    files["copy.bin"] = files["f000.bin"]  # the same content under two names
    data = _tree(tmp_path / "data", files)
    v1 = client.push_dataset(project, "churn", data, message="first")
    assert (v1.version, v1.ref, v1.files, v1.created, v1.message) == (
        1,
        "churn@1",
        21,
        True,
        "first",
    )
    assert v1.size == sum(len(c) for c in files.values()) and v1.rows is None
    expected = manifest_digest(
        (f"data/{n}", hashlib.sha256(c).hexdigest(), len(c)) for n, c in files.items()
    )
    assert v1.digest == expected
    assert len(uploads) == 20  # each content once

    uploads.clear()
    again = client.push_dataset(project, "churn", data)
    assert (again.version, again.created, uploads) == (1, False, [])
    assert len(client.list_dataset_versions(project, "churn")) == 1

    (data / "f007.bin").write_bytes(b"changed")
    v2 = client.push_dataset(project, "churn", data, message="one changed")
    assert (v2.version, v2.created) == (2, True)
    assert uploads == [hashlib.sha256(b"changed").hexdigest()]  # only the changed file
    d = client.get_dataset(project, "churn")
    assert (d.versions, d.latest_version) == (2, 2)
    assert [x.name for x in client.list_datasets(project)] == ["churn"]
    assert client.get_dataset_version(project, "churn").version == 2
    assert client.get_dataset_version(project, "churn@1").digest == v1.digest


def test_the_small_files_of_a_push_are_stored_as_one_pack_and_read_back_from_it(
    client: Client, project: str, tmp_path: Path, platform: Platform
) -> None:
    files = {f"f{i:03}.bin": os.urandom(300 + i) for i in range(30)}
    files["copy.bin"] = files["f000.bin"]
    data = _tree(tmp_path / "data", files)
    client.push_dataset(project, "churn", data)
    root = Path(client.settings.resolved_artifacts_url())

    def stored() -> list[Path]:
        return sorted(p for p in root.rglob("*") if p.is_file())

    packs = stored()
    # one object, named in packs/, holding each content once: no blob per file
    assert [p.relative_to(root).parts[0] for p in packs] == ["packs"]
    assert packs[0].stat().st_size == sum(len(c) for n, c in files.items() if n != "copy.bin")
    client.pull_dataset(project, "churn@1", tmp_path / "out")
    for name, content in files.items():
        assert (tmp_path / "out" / "data" / name).read_bytes() == content
    http = raw_http(client)
    one = http.get(f"/api/v1/projects/{project}/datasets/churn/versions/1/files/data/f007.bin")
    assert one.status_code == 200 and one.content == files["f007.bin"]

    # what the project holds is claimed where it lies; another project holds nothing
    digest = hashlib.sha256(files["f007.bin"]).hexdigest()
    with platform.db.read() as conn:
        pid = conn.execute(sa.select(projects.c.id).where(projects.c.name == project)).scalar()
        held = platform.artifacts.claim(conn, pid, digest, len(files["f007.bin"]))
        assert held.pack == packs[0].name
        assert packs[0].read_bytes()[held.start : held.start + held.size] == files["f007.bin"]
    other = f"{project}-b"
    client.push_dataset(other, "churn", data)  # its own pack: no bytes are shared by name
    assert len(stored()) == 2

    packs[0].unlink()  # the store lost it: said so, never other bytes
    with platform.db.read() as conn, pytest.raises(BlobMissing):
        platform.artifacts.claim(conn, pid, digest, len(files["f007.bin"]))
    one = http.get(f"/api/v1/projects/{project}/datasets/churn/versions/1/files/data/f007.bin")
    assert one.status_code == 404
    client.pull_dataset(other, "churn@1", tmp_path / "other")
    assert (tmp_path / "other" / "data" / "f007.bin").read_bytes() == files["f007.bin"]


def test_a_batch_sent_again_stores_only_what_is_lost_and_a_failed_pack_holds_nothing(
    client: Client, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = raw_http(client)
    base = f"/api/v1/projects/{project}/datasets/churn"
    good = [os.urandom(900 + i) for i in range(12)]
    members = [(hashlib.sha256(c).hexdigest(), len(c), lambda c=c: [c]) for c in good]
    digests = [d for d, _, _ in members]

    def send() -> httpx.Response:
        return http.put(
            f"{base}/content/batch", content=b"".join(data_client.write_tar(members)[1])
        )

    root = Path(client.settings.resolved_artifacts_url())

    def packs() -> list[Path]:
        return sorted(p for p in (root / "packs").rglob("*") if p.is_file())

    assert send().status_code == 201
    first = packs()
    assert len(first) == 1
    assert send().status_code == 201  # all held where they lie: nothing stored again
    assert packs() == first
    first[0].unlink()  # the store lost the pack: sending the bytes again restores them
    assert send().status_code == 201
    assert len(packs()) == 1 and packs() != first
    version = http.post(
        f"{base}/versions",
        json={
            "files": [
                {"path": f"f{i}", "digest": d, "size": len(good[i])} for i, d in enumerate(digests)
            ]
        },
    )
    assert version.status_code in (200, 201), version.text
    for i in (0, 11):
        r = http.get(f"{base}/versions/1/files/f{i}")
        assert r.status_code == 200 and r.content == good[i]

    # a pack that cannot be made durable: the request fails, nothing is held, no temp file
    other = [os.urandom(700) for _ in range(3)]
    members = [(hashlib.sha256(c).hexdigest(), len(c), lambda c=c: [c]) for c in other]

    def no_sync(self: Any) -> None:
        raise OSError(errno.EIO, "the disk failed")

    monkeypatch.setattr(blobs_module._LocalWriter, "commit", no_sync)
    r = send()
    assert r.status_code == 503, r.text
    monkeypatch.undo()
    r = http.post(f"{base}/content/missing", json={"digests": [d for d, _, _ in members]})
    assert len(r.json()["missing"]) == 3
    assert not [p for p in root.rglob(".tmp-*")]


def test_a_sealed_store_keeps_a_blob_per_file(
    project: str, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    settings = make_settings(tmp_path / "home", db, master_key=MasterKey.generate().to_text())
    files = {f"f{i}.bin": os.urandom(500) for i in range(5)}
    with Client(settings=settings) as client:
        client.push_dataset(project, "churn", _tree(tmp_path / "data", files))
        root = Path(settings.resolved_artifacts_url())
        assert not (root / "packs").exists()
        client.pull_dataset(project, "churn@1", tmp_path / "out")
    for name, content in files.items():
        assert (tmp_path / "out" / "data" / name).read_bytes() == content


def test_tabular_files_carry_their_schema_and_rows_and_a_diff_names_changes(
    client: Client, project: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    table = pa.table(
        {"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", None], "x": [0.5, 1.5, 2.5]},
        schema=pa.schema(
            [pa.field("id", pa.int64(), nullable=False), ("name", pa.string()), ("x", pa.float64())]
        ),
    )
    pq.write_table(table, data / "train.parquet")
    (data / "test.csv").write_text("id,name\n1,x\n2,y\n")
    (data / "events.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4}\n')
    (data / "notes.txt").write_text("not a table")
    (data / "broken.csv").write_bytes(b"a,b\n1,2,3\n")
    v1 = client.push_dataset(project, "churn", data)
    assert v1.rows == 3 + 2 + 4
    files = {f.path: f for f in client.dataset_files(project, "churn@1")}
    parquet = files["data/train.parquet"].table
    assert parquet is not None and (parquet.format, parquet.rows) == ("parquet", 3)
    assert [(c.name, c.type, c.nullable) for c in parquet.columns] == [
        ("id", "int64", False),
        ("name", "string", True),
        ("x", "double", True),
    ]
    csv = files["data/test.csv"].table
    assert csv is not None and (csv.format, csv.rows) == ("csv", 2)
    assert [c.name for c in csv.columns] == ["id", "name"]
    events = files["data/events.jsonl"].table
    assert events is not None and (events.rows, events.columns[0].type) == (4, "int64")
    assert files["data/notes.txt"].table is None
    assert files["data/broken.csv"].table is None  # kept, without a schema

    (data / "test.csv").write_text("id,name,age\n1,x,30\n")
    (data / "notes.txt").unlink()
    (data / "more.txt").write_text("new")
    client.push_dataset(project, "churn", data)
    d = client.diff_datasets(project, "churn@1", "churn@2")
    assert (d.old, d.new, d.added, d.removed, d.changed, d.unchanged) == (1, 2, 1, 1, 1, 3)
    assert d.rows == (9, 8)
    by_path = {c.path: c for c in d.changes}
    assert by_path["data/more.txt"].change == "added"
    assert by_path["data/notes.txt"].change == "removed"
    changed = by_path["data/test.csv"]
    assert changed.change == "changed" and changed.old and changed.new
    assert changed.old.table and changed.new.table
    assert (changed.old.table.rows, changed.new.table.rows) == (2, 1)
    assert [(c.name, c.change, c.new) for c in changed.columns] == [("age", "added", "int64")]
    with pytest.raises(InvalidInput):
        client.diff_datasets(project, "churn@1", "other@2")


def test_a_pull_is_verified_resumable_and_writes_only_inside_its_folder(
    client: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"a.txt": b"alpha", "sub/b.txt": b"beta" * 1000, "sub/deep/c.bin": os.urandom(5000)}
    client.push_dataset(project, "churn", _tree(tmp_path / "data", files))
    dest = tmp_path / "out"
    found = client.pull_dataset(project, "churn@1", dest)
    assert found.version == 1
    for name, content in files.items():
        assert (dest / "data" / name).read_bytes() == content

    fetched: list[str] = []
    real = data_client.DataCalls._fetch

    def counted(self: Any, base: str, items: list[tuple[Any, Path]], *rest: Any) -> None:
        fetched.extend(f.path for f, _ in items)
        real(self, base, items, *rest)

    monkeypatch.setattr(data_client.DataCalls, "_fetch", counted)
    (dest / "data" / "sub" / "b.txt").write_bytes(b"tampered" + b"x" * 3992)  # same size
    (dest / "data" / "a.txt").unlink()
    client.pull_dataset(project, "churn", dest)
    assert sorted(fetched) == ["data/a.txt", "data/sub/b.txt"]  # c.bin was already right
    assert (dest / "data" / "sub" / "b.txt").read_bytes() == files["sub/b.txt"]

    # a folder in dest that is a link out of it: nothing is written through it
    outside = tmp_path / "outside"
    outside.mkdir()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "data").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput, match="outside"):
        client.pull_dataset(project, "churn", linked)
    assert list(outside.iterdir()) == []
    # nor a file in dest that is a link out of it
    (linked / "data").unlink()
    (linked / "data" / "sub").mkdir(parents=True)
    (linked / "data" / "sub" / "b.txt").symlink_to(outside / "b.txt")
    with pytest.raises(InvalidInput, match="outside"):
        client.pull_dataset(project, "churn", linked)
    assert list(outside.iterdir()) == []
    with pytest.raises(NotFound):
        client.pull_dataset(project, "churn@9", tmp_path / "none")
    assert not (tmp_path / "none").exists()


class Killed(Exception):
    pass


def test_a_killed_push_leaves_no_version_and_its_retry_sends_the_rest(
    client: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small files, sent in one tar stream of 1 MiB chunks: the first three make one
    files = {f"f{i}.bin": os.urandom(400_000) for i in range(6)}
    data = _tree(tmp_path / "data", files)
    real = data_client._read
    opened = 0

    def dies_at_the_fourth(src: Any, advance: Any) -> Any:
        nonlocal opened
        opened += 1
        if opened == 4:
            raise Killed  # the process stops mid-push, mid-stream
        return real(src, advance)

    monkeypatch.setattr(data_client, "_read", dies_at_the_fourth)
    with pytest.raises(Killed):
        client.push_dataset(project, "churn", data)
    with pytest.raises(NotFound):
        client.get_dataset(project, "churn")  # nothing was named
    monkeypatch.setattr(data_client, "_read", real)
    counted: list[str] = []
    send = data_client.DataCalls._send_content

    def counting(self: Any, base: str, items: list[tuple[str, Any]], *rest: Any) -> None:
        counted.extend(digest for digest, _ in items)
        send(self, base, items, *rest)

    monkeypatch.setattr(data_client.DataCalls, "_send_content", counting)
    v = client.push_dataset(project, "churn", data)
    assert v.version == 1 and len(counted) == 3  # what had arrived whole was kept
    client.pull_dataset(project, "churn@1", tmp_path / "out")
    for name, content in files.items():
        assert (tmp_path / "out" / "data" / name).read_bytes() == content


def test_a_broken_batch_keeps_what_arrived_whole_and_refuses_the_rest(
    client: Client, project: str
) -> None:
    http = raw_http(client)
    base = f"/api/v1/projects/{project}/datasets/churn"
    good = [os.urandom(700) for _ in range(3)]
    members = [(hashlib.sha256(c).hexdigest(), len(c), lambda c=c: [c]) for c in good]
    _length, stream = data_client.write_tar(members)
    whole = b"".join(stream)
    cut = whole[: len(whole) - 1024 - 512 - 200]  # the third member cut short
    r = http.put(
        f"{base}/content/batch", content=cut, headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 400, r.text
    digests = [d for d, _, _ in members]
    r = http.post(f"{base}/content/missing", json={"digests": digests})
    assert r.json()["missing"] == [digests[2]]  # the two whole ones were kept

    lying = data_client.write_tar([(digests[0], 700, lambda: [good[1]])])[1]
    r = http.put(f"{base}/content/batch", content=b"".join(lying))
    assert r.status_code == 400  # bytes that do not hash to their member's name
    named = data_client.write_tar([("../../etc/passwd", 3, lambda: [b"abc"])])[1]
    r = http.put(f"{base}/content/batch", content=b"".join(named))
    assert r.status_code == 400
    r = http.put(f"{base}/content/batch", content=b"not a tar at all" * 100)
    assert r.status_code == 400
    r = http.post(f"{base}/versions/1/archive", json={"paths": ["../x"]})
    assert r.status_code in (400, 404, 422)
    r = http.post(f"{base}/versions/1/archive", json={"paths": ["a.txt"] * 10_000})
    assert r.status_code == 400 and "named more than once" in r.text  # not 10,000 copies


def test_large_files_travel_alone_and_small_ones_in_batches(
    client: Client,
    project: str,
    tmp_path: Path,
    uploads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(data_client, "SMALL", 4096)
    monkeypatch.setattr(data_client.packs, "BATCH_FILES", 3)
    files = {f"s{i}.bin": os.urandom(100 + i) for i in range(7)}
    files |= {"big1.bin": os.urandom(9000), "big2.bin": os.urandom(12000)}
    data = _tree(tmp_path / "data", files)
    groups: list[int] = []
    send = data_client.DataCalls._send_content

    def grouped(self: Any, base: str, items: list[tuple[str, Any]], *rest: Any) -> None:
        groups.append(len(items))
        send(self, base, items, *rest)

    monkeypatch.setattr(data_client.DataCalls, "_send_content", grouped)
    client.push_dataset(project, "churn", data)
    assert sorted(groups) == [1, 1, 1, 3, 3]  # two large alone, seven small in threes
    client.pull_dataset(project, "churn", tmp_path / "out")
    for name, content in files.items():
        assert (tmp_path / "out" / "data" / name).read_bytes() == content


BAD_PATHS = [
    "../escape.txt",
    "a/../../escape.txt",
    "/etc/passwd",
    "a\\b.txt",
    "a/\x00b",
    "%2e%2e/escape.txt",
    "a//b",
    "./a",
    "C:/x",
]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_a_manifest_with_a_bad_path_is_refused_and_changes_nothing(
    client: Client, project: str, bad: str
) -> None:
    http = raw_http(client)
    digest = hashlib.sha256(b"x").hexdigest()
    base = f"/api/v1/projects/{project}/datasets/churn"
    r = http.put(f"{base}/content", content=b"x", headers={"X-Plinth-Digest": digest})
    assert r.status_code == 201
    body = {"files": [{"path": bad, "digest": digest, "size": 1}]}
    r = http.post(f"{base}/versions", json=body)
    assert r.status_code in (400, 422), r.text
    assert http.get(f"{base}").status_code == 404


def test_manifests_are_checked_before_anything_is_named(client: Client, project: str) -> None:
    http = raw_http(client)
    base = f"/api/v1/projects/{project}/datasets/churn"
    held = hashlib.sha256(b"x").hexdigest()
    lacking = hashlib.sha256(b"never sent").hexdigest()
    assert http.put(f"{base}/content", content=b"x", headers={"X-Plinth-Digest": held}).is_success
    r = http.put(f"{base}/content", content=b"y", headers={"X-Plinth-Digest": held})
    assert r.status_code == 400  # bytes that do not hash to the digest are not kept
    r = http.post(f"{base}/content/missing", json={"digests": [held, lacking]})
    assert r.json() == {"missing": [lacking]}
    cases = [
        [{"path": "a", "digest": lacking, "size": 10}],  # content never sent
        [{"path": "a", "digest": held, "size": 2}],  # wrong size
        [{"path": "a", "digest": held, "size": 1}, {"path": "a", "digest": held, "size": 1}],
        [{"path": "a", "digest": held, "size": 1}, {"path": "a/b", "digest": held, "size": 1}],
        [],
    ]
    for files in cases:
        r = http.post(f"{base}/versions", json={"files": files})
        assert 400 <= r.status_code < 500 and r.status_code != 403, (files, r.text)
    assert http.get(base).status_code == 404
    ok = http.post(f"{base}/versions", json={"files": [{"path": "a", "digest": held, "size": 1}]})
    assert ok.status_code == 201
    again = http.post(
        f"{base}/versions", json={"files": [{"path": "a", "digest": held, "size": 1}]}
    )
    assert (again.status_code, again.json()["version"], again.json()["created"]) == (200, 1, False)
    for bad in ("0", "-1", "x", "99999999999"):
        assert http.get(f"{base}/versions/{bad}").status_code in (400, 422)
    assert http.get(f"{base}/versions/1/files/..%2Fa").status_code in (400, 404, 422)
    with pytest.raises(InvalidInput):
        client.push_dataset(project, "bad name!", ".")


def test_concurrent_pushes_number_versions_one_after_the_other(
    client: Client, project: str, tmp_path: Path
) -> None:
    dirs = [_tree(tmp_path / str(i) / "data", {"x.bin": bytes([i]) * 100}) for i in range(5)]
    numbers: list[int] = []
    threads = [
        threading.Thread(
            target=lambda d=d: numbers.append(client.push_dataset(project, "c", d).version)
        )
        for d in dirs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5]


def test_viewers_read_editors_push_outsiders_see_nothing_and_pushes_are_audited(
    own_settings: Settings, project: str, tmp_path: Path
) -> None:
    settings = own_settings
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    data = _tree(tmp_path / "data", {"a.csv": b"x,y\n1,2\n"})
    with as_user(root_token) as root:
        root.create_run(project)
        users = {name: root.create_user(name).token.token for name in ("ed", "vic", "out")}
        root.add_member(project, "ed", "editor")
        root.add_member(project, "vic", "viewer")
        with as_user(users["ed"]) as ed:
            v = ed.push_dataset(project, "churn", data, message="by ed")
            assert v.created_by == "ed"
        with as_user(users["vic"]) as vic:
            assert vic.get_dataset_version(project, "churn@1").digest == v.digest
            vic.pull_dataset(project, "churn@1", tmp_path / "vic")
            assert (tmp_path / "vic" / "data" / "a.csv").read_bytes() == b"x,y\n1,2\n"
            (data / "b.csv").write_bytes(b"z\n3\n")
            with pytest.raises(PermissionDenied):
                vic.push_dataset(project, "churn", data)
        with as_user(users["out"]) as out:
            for call in (
                lambda: out.get_dataset(project, "churn"),
                lambda: out.list_datasets(project),
                lambda: out.get_dataset_version(project, "churn@1"),
                lambda: out.dataset_files(project, "churn@1"),
                lambda: out.diff_datasets(project, "churn@1", "churn@1"),
                lambda: out.pull_dataset(project, "churn@1", tmp_path / "out"),
                lambda: out.push_dataset(project, "churn", data),
            ):
                with pytest.raises(NotFound) as caught:
                    call()
                assert "churn" not in str(caught.value) or project in str(caught.value)
            with pytest.raises(NotFound):
                out.get_dataset(project, "nonexistent")
        pushes = [e for e in root.audit_events(project=project) if e.action == "datasets.push"]
        assert [(e.actor, e.object, e.outcome) for e in pushes if e.outcome == "ok"] == [
            ("ed", "churn@1", "ok")
        ]
        assert any(e.actor == "vic" and e.outcome == "refused" for e in pushes)


def test_an_unchanged_local_file_is_not_hashed_again_and_a_changed_one_is(
    client: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _tree(tmp_path / "data", {f"f{i}.bin": os.urandom(500) for i in range(5)})
    client.push_dataset(project, "c", data)
    hashed: list[str] = []
    real = data_client.file_digest

    def counted(path: Any, *rest: Any) -> Any:
        hashed.append(Path(path).name)
        return real(path, *rest)

    monkeypatch.setattr(data_client, "file_digest", counted)
    assert client.push_dataset(project, "c", data).created is False
    assert hashed == []  # all five remembered
    (data / "f2.bin").write_bytes(os.urandom(500))  # same size, new content
    v = client.push_dataset(project, "c", data)
    assert (hashed, v.version) == (["f2.bin"], 2)
    client.pull_dataset(project, "c@2", tmp_path / "out")
    assert (tmp_path / "out" / "data" / "f2.bin").read_bytes() == (data / "f2.bin").read_bytes()
    cache = Path(client.settings.home) / "cache" / "file-digests.sqlite"
    cache.write_bytes(b"not a database")  # a broken cache is no cache, never an error
    hashed.clear()
    assert client.push_dataset(project, "c", data).created is False
    assert len(hashed) == 5


def test_a_folder_is_read_as_its_regular_files_links_to_files_included(tmp_path: Path) -> None:
    """What a push of a folder takes: every regular file under it, hidden ones too, and
    a link to a file (as its target's bytes); not a broken link, nor what a link to a
    folder leads to. Each with its size, as the one walk found it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not in the dataset")
    data = _tree(tmp_path / "data", {"a.txt": b"alpha", ".hidden": b"h", "sub/deep/c.bin": b"ccc"})
    (data / "sub" / "to-a").symlink_to(data / "a.txt")
    (data / "broken").symlink_to(tmp_path / "nowhere")
    (data / "elsewhere").symlink_to(outside, target_is_directory=True)
    found = data_client.sources_of([data], {})
    assert [(src.path, src.size) for src in found] == [
        ("data/.hidden", 1),
        ("data/a.txt", 5),
        ("data/sub/deep/c.bin", 3),
        ("data/sub/to-a", 5),
    ]
    with found[-1].open() as f:
        assert f.read() == b"alpha"
    assert all(src.stat is not None and src.stat.st_size == src.size for src in found)


def test_a_file_the_walk_cannot_read_stops_the_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a version silently missing it (as root no folder refuses, so the refusal is
    made here): only what is no file at all (a broken link) is passed over."""
    data = _tree(tmp_path / "data", {"a.txt": b"alpha", "locked/b.txt": b"beta"})
    real = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).endswith("b.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(InvalidInput, match=r"cannot read .*b\.txt: Permission denied"):
        data_client.sources_of([data], {})


def test_recording_that_a_run_read_a_version_is_a_write_to_the_run(
    own_settings: Settings, project: str, tmp_path: Path
) -> None:
    """A viewer of the run's project is refused (403) and an outsider finds nothing
    (404); neither leaves an edge. Reading the dataset is enough on its side."""
    settings = own_settings
    with Client(settings=settings) as anonymous:
        root_token = anonymous.init_admin("root").token.token
    as_user = lambda token: Client(settings=settings.model_copy(update={"token": token}))  # noqa: E731
    data = _tree(tmp_path / "data", {"a.csv": b"x,y\n1,2\n"})
    other = f"{project}-runs"
    with as_user(root_token) as root:
        run = root.create_run(project)
        elsewhere = root.create_run(other)
        users = {name: root.create_user(name).token.token for name in ("ed", "vic", "out")}
        root.add_member(project, "ed", "editor")
        root.add_member(project, "vic", "viewer")
        root.add_member(other, "vic", "editor")
        root.push_dataset(project, "churn", data)
        with as_user(users["vic"]) as vic:
            with pytest.raises(PermissionDenied):
                vic.use_dataset("churn@1", run_id=run.id, project=project)
            r = raw_http(vic).post(
                f"/api/v1/projects/{project}/datasets/churn/versions/1/uses",
                json={"run_id": run.id},
            )
            assert r.status_code == 403, r.text
            # a reader of the dataset who writes to the run's project records it
            assert vic.use_dataset("churn@1", run_id=elsewhere.id, project=project).version == 1
        with as_user(users["out"]) as out, pytest.raises(NotFound):
            out.use_dataset("churn@1", run_id=run.id, project=project)
        with as_user(users["ed"]) as ed:
            assert ed.use_dataset("churn@1", run_id=run.id, project=project).version == 1
        uses = [e for e in root.audit_events(project=project) if e.action == "datasets.use"]
        assert sorted((e.actor, e.outcome) for e in uses if e.outcome == "ok") == [
            ("ed", "ok"),
            ("vic", "ok"),
        ]
        graph = root.lineage(f"runs:/{run.id}", project=project)
        assert [n.uri for n in graph.nodes if n.uri.startswith("datasets:")] == [
            f"datasets:/{project}/churn@1"
        ]
