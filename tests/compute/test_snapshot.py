"""Working-directory snapshots: what is in them (.gitignore as git reads it), that the
same tree always packs to the same bytes, the size cap's message, and that a hostile
archive is refused before anything lands outside the target."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from plinth.compute.snapshot import collect, pack, unpack
from plinth.errors import InvalidInput

CAP = 1 << 20


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)


def paths(root: Path) -> list[str]:
    return [f.path for f in collect(root, CAP)]


def test_gitignore_root_nested_negation_and_directories(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".gitignore": "*.log\n!keep.log\nbuild/\n/only-top.txt\n# a comment\n",
            "train.py": "print(1)",
            "run.log": "x",
            "keep.log": "kept by negation",
            "only-top.txt": "ignored at the top only",
            "build/out.bin": "ignored directory",
            "src/only-top.txt": "anchored pattern: kept here",
            "src/build/x": "directory pattern matches at any depth",
            "src/.gitignore": "*.csv\n!important.csv\n",
            "src/data.csv": "ignored by the nested file",
            "src/important.csv": "re-included by the nested file",
            "src/deep/more.csv": "nested rules reach deeper",
            "src/deep/ok.txt": "kept",
            "other/data.csv": "the nested file does not reach here",
            ".git/HEAD": "never in a snapshot",
        },
    )
    assert paths(tmp_path) == [
        ".gitignore",
        "keep.log",
        "other/data.csv",
        "src/.gitignore",
        "src/deep/ok.txt",
        "src/important.csv",
        "src/only-top.txt",
        "train.py",
    ]


def test_a_deeper_gitignore_overrides_a_shallower_one(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".gitignore": "*.txt\n",
            "a.txt": "ignored",
            "sub/.gitignore": "!wanted.txt\n",
            "sub/wanted.txt": "re-included below",
            "sub/other.txt": "still ignored",
        },
    )
    assert paths(tmp_path) == [".gitignore", "sub/.gitignore", "sub/wanted.txt"]


def test_symlinks_out_of_the_tree_are_left_out_with_a_note(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the job")
    root = tmp_path / "work"
    write(root, {"inside.txt": "in", "dir/x.txt": "x"})
    (root / "escape").symlink_to(outside)
    (root / "alias.txt").symlink_to(root / "inside.txt")
    (root / "loop").symlink_to(root / "dir")
    (root / "broken").symlink_to(root / "missing")
    notes: list[str] = []
    files = collect(root, CAP, notes)
    assert [f.path for f in files] == ["alias.txt", "dir/x.txt", "inside.txt"]
    assert files[0].size == 2  # stored as the file it names
    assert any(n.startswith("escape: a symlink out of the directory") for n in notes)
    assert any(n.startswith("loop: a symlinked directory") for n in notes)
    assert any(n.startswith("broken: a broken symlink") for n in notes)


def test_the_cap_names_the_size_the_cap_and_the_biggest_files(tmp_path: Path) -> None:
    write(tmp_path, {"small.txt": "s", "data/big.bin": b"0" * 3000, "mid.bin": b"1" * 1500})
    with pytest.raises(InvalidInput) as raised:
        collect(tmp_path, 4000)
    message = raised.value.message
    assert "4501 bytes" in message and "4000 bytes" in message
    assert message.index("data/big.bin (2.9 KiB)") < message.index("mid.bin (1.5 KiB)")
    assert ".gitignore" in message and "snapshot_max_bytes" in message
    (tmp_path / ".gitignore").write_text("data/\n")
    assert paths(tmp_path) == [".gitignore", "mid.bin", "small.txt"]


def test_pack_is_deterministic_across_times_and_listing_order(tmp_path: Path) -> None:
    files = {"b.py": "b", "a/z.txt": "z", "a/a.txt": "a", "run.sh": "#!/bin/sh\n"}
    write(tmp_path / "one", files)
    write(tmp_path / "two", dict(reversed(files.items())))  # created in another order
    for root in (tmp_path / "one", tmp_path / "two"):
        (root / "run.sh").chmod(0o755)
    os.utime(tmp_path / "two" / "b.py", (1_000_000, 1_000_000))
    first = pack(tmp_path / "one", CAP)
    assert pack(tmp_path / "one", CAP) == first
    second = pack(tmp_path / "two", CAP)
    assert hashlib.sha256(second).hexdigest() == hashlib.sha256(first).hexdigest()
    (tmp_path / "two" / "b.py").write_text("changed")
    assert pack(tmp_path / "two", CAP) != first
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == ["a/a.txt", "a/z.txt", "b.py", "run.sh"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert [m.mode for m in members] == [0o644, 0o644, 0o644, 0o755]


def test_round_trip_keeps_content_and_the_executable_bit(tmp_path: Path) -> None:
    write(tmp_path / "src", {"train.py": "print('hi')", "deep/er/data.bin": bytes(range(256))})
    (tmp_path / "src" / "train.py").chmod(0o755)
    long_name = "x" * 120 + "/" + "y" * 120 + ".txt"  # past ustar's 100 characters
    write(tmp_path / "src", {long_name: "long", "ünïcode.txt": "u"})
    data = pack(tmp_path / "src", CAP)
    out = tmp_path / "out"
    written = unpack(data, out)
    assert sorted(written) == sorted(paths(tmp_path / "src"))
    for rel in written:
        assert (out / rel).read_bytes() == (tmp_path / "src" / rel).read_bytes()
    assert os.stat(out / "train.py").st_mode & stat.S_IXUSR
    assert not os.stat(out / "deep/er/data.bin").st_mode & stat.S_IXUSR
    assert pack(out, CAP) == data


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, content in members:
            info.size = len(content) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return buffer.getvalue()


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"payload"


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([_file("../escape.txt")], "plain relative path"),
        ([_file("ok/../../escape.txt")], "plain relative path"),
        ([_file("/etc/evil")], "not a relative path"),
        ([_link("link", "/etc/passwd")], "not a regular file"),
        ([_link("hard", "/etc/passwd", tarfile.LNKTYPE)], "not a regular file"),
        ([_link("dev", "", tarfile.CHRTYPE)], "not a regular file"),
        ([_link("dir", "", tarfile.DIRTYPE)], "not a regular file"),
        ([_file("twice.txt"), _file("twice.txt")], "appears twice"),
        # a link then a file through it: refused at the link, nothing is written
        ([_link("sub", ".."), _file("sub/escape.txt")], "not a regular file"),
    ],
)
def test_hostile_archives_are_refused_and_leave_nothing(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], reason: str
) -> None:
    data = _tar(_file("first.txt"), *members)
    dest = tmp_path / "dest"
    with pytest.raises(InvalidInput, match=reason):
        unpack(data, dest)
    assert list(dest.iterdir()) == []  # what was written before the refusal is gone
    assert not (tmp_path / "escape.txt").exists()


def _headed(headers: dict[str, str], name: str = "f.txt") -> tuple[tarfile.TarInfo, bytes]:
    info, content = _file(name)
    info.pax_headers = headers
    return info, content


@pytest.mark.parametrize(
    ("member", "said"),
    [
        # a sparse map tarfile cannot parse (it raised a bare ValueError)
        (_headed({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}), "not enough values"),
        # a name the file system refuses: its words, not the server's path
        (_file("a" * 300), "File name too long"),
    ],
)
def test_an_unreadable_archive_is_refused_in_a_few_words_of_its_own(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes], said: str
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(InvalidInput) as refused:
        unpack(_tar(member), dest)
    assert refused.value.message.startswith("not a readable snapshot archive: ")
    assert said in refused.value.message and len(refused.value.message) < 300
    assert str(tmp_path) not in refused.value.message
    assert list(dest.iterdir()) == []


def test_a_refused_entry_is_named_in_a_few_words(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as refused:
        unpack(_tar(_file("../" + "x" * 5000)), tmp_path / "dest")
    assert "plain relative path" in refused.value.message
    assert len(refused.value.message) < 300


def test_unpack_honours_the_cap_and_wants_an_empty_directory(tmp_path: Path) -> None:
    data = _tar(_file("a.txt"), _file("b.txt"))  # 7 bytes each
    with pytest.raises(InvalidInput, match="cap of 10 bytes"):
        unpack(data, tmp_path / "capped", max_bytes=10)
    assert unpack(data, tmp_path / "fits", max_bytes=14) == ["a.txt", "b.txt"]
    with pytest.raises(InvalidInput, match="not empty"):
        unpack(data, tmp_path / "fits")
    with pytest.raises(InvalidInput, match="not a readable snapshot"):
        unpack(b"not a tar at all" * 64, tmp_path / "garbage")


def test_unpack_reads_an_archive_file_too(tmp_path: Path) -> None:
    write(tmp_path / "src", {"a.txt": "a"})
    archive = tmp_path / "snapshot.tar"
    archive.write_bytes(pack(tmp_path / "src", CAP))
    assert unpack(archive, tmp_path / "out") == ["a.txt"]
    archive.write_bytes(_tar(_file("../x")))
    with pytest.raises(InvalidInput, match="plain relative path"):
        unpack(archive, tmp_path / "out2")


def test_a_plinth_home_inside_the_tree_is_left_out(tmp_path: Path) -> None:
    root = tmp_path / "work"
    write(root, {"flow.py": "x = 1", "home/plinth.db": b"db", "home/artifacts/blob": b"b"})
    write(root, {"notes/plinth.txt": "kept"})
    notes: list[str] = []
    assert [f.path for f in collect(root, CAP, notes)] == ["flow.py", "notes/plinth.txt"]
    assert notes == ["home/: a Plinth home (its database and stores), left out"]
