"""Datasets' SDK calls, reached as methods of ``plinth.Client``.

A push reads the data where it is (local paths, or fsspec URLs: ``s3://``, ``gs://``,
``az://`` with their usual credentials): each file is hashed, and a tabular one's schema
and row count read with pyarrow, on parallel threads; the server is asked which content
it lacks, only that is uploaded, in parallel, and the version names it all.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from plinth.core.blobs import CHUNK, file_digest
from plinth.data import packs
from plinth.data import schemas as s
from plinth.data.digests import DigestCache
from plinth.data.packs import SMALL, member_chunks, read_tar, write_tar
from plinth.data.refs import check_dataset_name, parse_ref
from plinth.data.rules import Check, ValidationFailed, Validator, load_rules
from plinth.data.schemas import ValidationReport
from plinth.data.tabular import Read, format_of, read_table
from plinth.errors import CorruptArtifact, InvalidInput, NotFound
from plinth.tracking.schemas import check_artifact_path
from plinth.transfer import Resent, download_verified, save_verified, transfer_progress

if TYPE_CHECKING:
    from plinth.client import Transport

T = TypeVar("T")
R = TypeVar("R")
WORKERS = 4  # files hashed, and uploaded, at once (the server lets one principal run 8)
# Files are read in tasks of about TASK_COST: a local file costs its size, a remote one
# or a table (a request's latency, a parse) TASK_OVERHEAD more. A thousand small local
# files are one task, read in this thread: hashing 10 KiB at a time holds the GIL for
# most of each file, and threads taking turns at it made such a read twice as slow.
TASK_COST = 32 << 20
TASK_OVERHEAD = 1 << 20


@dataclass(frozen=True)
class Source:
    """One file to push: its path inside the dataset, its size, how to open it."""

    path: str
    size: int
    where: str  # the local path or URL, for messages
    open: Callable[[], IO[bytes]]
    local: str | None = None  # a local file's path: hashed without Python's loop
    stat: os.stat_result | None = None  # a local file's, as the walk found it


class DataCalls:
    _transport: Transport

    def push_dataset(
        self,
        project: str,
        name: str,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        message: str = "",
        storage_options: dict[str, Any] | None = None,
        profile: bool = True,
        checks: Sequence[Check] = (),
        progress: bool | None = None,
    ) -> s.DatasetVersion:
        """Push files as the next version of dataset ``name``; each path (a file or a
        folder, local or an fsspec URL) keeps its own name in the dataset. Content the
        project holds is not sent again; the same files as the newest version make no
        new version (``created`` is false).

        The dataset's rules, and ``checks`` (custom rules in Python), are checked on
        every tabular file as it is read; a failing blocking rule raises
        ``ValidationFailed`` (its ``report`` names each rule, file and sample rows)
        before anything is uploaded."""
        check_dataset_name(name)
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        sources = sources_of(paths, storage_options or {})
        rules = self._rules_for_push(project, name)
        validator = Validator(rules[0], checks) if rules[0].rules or checks else None
        home = getattr(getattr(self, "settings", None), "home", None)
        cache = DigestCache(Path(home) / "cache" / "file-digests.sqlite" if home else None)
        described = _described(sources, progress, profile, validator, cache)
        files = [f for f, _ in described]
        profiles = {f.path: r.profile for f, r in described if r.profile is not None}
        report = None
        if validator is not None:
            report = ValidationReport(
                rules_digest=rules[1], results=[x for _, r in described for x in r.results]
            )
            if report.blocking:
                raise ValidationFailed(report)
        base = _datasets(project, name)
        digests = sorted({f.digest for f in files})
        missing = set(
            self._transport.request(
                "POST", f"{base}/content/missing", json={"digests": digests}, retry=True
            )["missing"]
        )
        by_digest = {f.digest: src for f, src in zip(files, sources, strict=True)}
        todo = [(d, by_digest[d]) for d in digests if d in missing]
        total = sum(src.size for _, src in todo)
        with transfer_progress(f"uploading {len(todo)} files", total, progress) as advance:
            _in_parallel(
                lambda items: self._send_content(base, items, advance),
                _grouped(todo, lambda item: item[1].size),
            )
        body = {
            "files": [f.model_dump(exclude_none=True) for f in files],
            "message": message,
            "profiles": {path: p.model_dump(exclude_none=True) for path, p in profiles.items()},
            "validation": None if report is None else report.model_dump(mode="json"),
        }
        data = self._transport.request("POST", f"{base}/versions", json=body, retry=True)
        return s.DatasetVersion(**data)

    def _rules_for_push(self, project: str, name: str) -> tuple[s.RuleSet, str]:
        """The dataset's rules and their digest; none for a dataset not made yet."""
        try:
            found = self.dataset_rules(project, name)
        except NotFound:
            return s.RuleSet(), ""
        return s.RuleSet(rules=found.rules), found.digest

    def dataset_rules(self, project: str, name: str) -> s.Rules:
        """A dataset's validation rules, with the digest a push's report names."""
        return s.Rules(**self._transport.request("GET", f"{_datasets(project, name)}/rules"))

    def set_dataset_rules(
        self,
        project: str,
        name: str,
        rules: str | os.PathLike[str] | list[Any] | dict[str, Any] | s.RuleSet,
    ) -> s.Rules:
        """Replace a dataset's rules (from a YAML file, YAML text, or a list of rule
        dicts); an empty list removes them. Every later push checks them."""
        body = load_rules(rules).model_dump(mode="json", exclude_none=True)
        url = f"{_datasets(project, name)}/rules"
        return s.Rules(**self._transport.request("PUT", url, json=body, retry=True))

    def _send_content(
        self, base: str, items: list[tuple[str, Source]], advance: Callable[[int], None]
    ) -> None:
        """Upload content: a large file alone, small ones in one tar stream; read anew
        from the files if it must be sent again."""
        sent = Resent(advance)
        if len(items) == 1 and items[0][1].size > SMALL:
            digest, src = items[0]
            length, url, headers = src.size, f"{base}/content", {"X-Plinth-Digest": digest}

            def body() -> Iterator[bytes]:
                return _read(src, sent.again())
        else:
            url, headers = f"{base}/content/batch", {}

            def tar() -> tuple[int, Iterator[bytes]]:
                counted = sent.again()
                return write_tar(
                    (digest, src.size, partial(_read, src, counted)) for digest, src in items
                )

            length = tar()[0]

            def body() -> Iterator[bytes]:
                return tar()[1]

        self._transport.request(
            "PUT",
            url,
            content=body,
            headers={
                **headers,
                "Content-Length": str(length),
                "Content-Type": "application/octet-stream",
            },
        )

    def pull_dataset(
        self,
        project: str,
        ref: str,
        dest: str | os.PathLike[str],
        *,
        progress: bool | None = None,
    ) -> s.DatasetVersion:
        """Download a version (``churn@3``; ``churn`` is the newest) into ``dest``. Files
        already there with the right content are kept, so an interrupted pull goes on
        where it stopped; each file is verified against its digest before it is
        renamed into place, and no path leaves ``dest``."""
        found = self.get_dataset_version(project, ref)
        base = f"{_datasets(project, found.name)}/versions/{found.version}"
        files = self.dataset_files(project, found.ref)
        root = Path(dest)
        todo = []
        resolved: dict[Path, Path] = {}
        for f in files:
            target = _inside(root, f.path, resolved)
            if not _holds(target, f):
                todo.append((f, target))
        total = sum(f.size for f, _ in todo)
        with transfer_progress(f"pulling {found.ref}", total, progress) as advance:
            _in_parallel(
                lambda items: self._fetch(base, items, advance),
                _grouped(todo, lambda item: item[0].size),
            )
        return found

    def _fetch(
        self, base: str, items: list[tuple[s.DatasetFile, Path]], advance: Callable[[int], None]
    ) -> None:
        """Download files of a version: a large one alone, small ones in one tar
        stream; each is verified against its digest before it takes its place."""
        if len(items) == 1 and items[0][0].size > SMALL:
            f, target = items[0]
            download_verified(
                self._transport,
                f"{base}/files/{quote(f.path)}",
                f.path,
                f.digest,
                f.size,
                target,
                False,
            )
            advance(f.size)
            return
        wanted = {f.path: (f, target) for f, target in items}
        body = {"paths": list(wanted)}
        with self._transport.stream("POST", f"{base}/archive", json=body) as response:
            for name, _size, member in read_tar(response.iter_raw(CHUNK)):
                if name not in wanted:
                    raise CorruptArtifact(f"the server sent {name!r}, which was not asked for")
                f, target = wanted.pop(name)
                save_verified(member_chunks(member), target, f.digest, f.path, advance)
        if wanted:
            raise CorruptArtifact(f"the server's archive ended before {next(iter(wanted))!r}")

    def list_datasets(self, project: str) -> list[s.Dataset]:
        return [s.Dataset(**d) for d in self._transport.request("GET", _datasets(project))]

    def get_dataset(self, project: str, name: str) -> s.Dataset:
        return s.Dataset(**self._transport.request("GET", _datasets(project, name)))

    def list_dataset_versions(self, project: str, name: str) -> list[s.DatasetVersion]:
        url = f"{_datasets(project, name)}/versions"
        return [s.DatasetVersion(**v) for v in self._transport.request("GET", url)]

    def get_dataset_version(self, project: str, ref: str) -> s.DatasetVersion:
        """A version by reference: ``churn@3``, or ``churn`` / ``churn@latest``."""
        r = parse_ref(ref)
        url = f"{_datasets(project, r.name)}/versions/{r.selector}"
        return s.DatasetVersion(**self._transport.request("GET", url))

    def dataset_files(self, project: str, ref: str) -> list[s.DatasetFile]:
        """The files of a version, with each tabular file's schema and row count."""
        r = parse_ref(ref)
        url = f"{_datasets(project, r.name)}/versions/{r.selector}/files"
        return [s.DatasetFile(**f) for f in self._transport.request("GET", url)]

    def use_dataset(
        self, ref: str, *, run_id: str | None = None, project: str | None = None
    ) -> s.DatasetVersion:
        """Record that a run read a dataset version (``churn@3``; ``churn``: the newest,
        resolved now): an edge of the lineage graph. ``run_id`` defaults to the run of
        the job this runs in (``PLINTH_RUN_ID``), ``project`` to the run's project."""
        run_id = run_id or getattr(getattr(self, "settings", None), "run_id", None)
        if not run_id:
            raise InvalidInput("which run read it? pass run_id= (or use run.use_dataset)")
        if project is None:
            found = self._transport.request("GET", f"/api/v1/runs/{quote(run_id, safe='')}")
            project = str(found["project"])
        r = parse_ref(ref)
        url = f"{_datasets(project, r.name)}/versions/{r.selector}/uses"
        return s.DatasetVersion(**self._transport.request("POST", url, json={"run_id": run_id}))

    def dataset_profiles(self, project: str, ref: str) -> dict[str, s.Profile]:
        """Each tabular file's profile in a version, by path (``churn@3``)."""
        r = parse_ref(ref)
        url = f"{_datasets(project, r.name)}/versions/{r.selector}/profiles"
        found = self._transport.request("GET", url)
        return {path: s.Profile(**p) for path, p in found.items()}

    def diff_datasets(self, project: str, old: str, new: str) -> s.DatasetDiff:
        """What changed between two versions of one dataset (``churn@2``, ``churn@3``)."""
        a, b = parse_ref(old), parse_ref(new)
        if a.name != b.name:
            raise InvalidInput(f"compare versions of one dataset: {a.name!r} and {b.name!r} differ")
        params = {"old": a.selector, "new": b.selector}
        url = f"{_datasets(project, a.name)}/diff"
        return s.DatasetDiff(**self._transport.request("GET", url, params=params))


def sources_of(
    paths: Iterable[str | os.PathLike[str]], storage_options: dict[str, Any]
) -> list[Source]:
    """Every file the paths name, each under its path in the dataset: a file or folder
    keeps its own name (``data/`` gives ``data/train.csv``)."""
    found: list[Source] = []
    for path in paths:
        text = os.fspath(path)
        found += _remote(text, storage_options) if "://" in text else _local(text)
    if not found:
        raise InvalidInput("nothing to push: the paths hold no files")
    seen: dict[str, str] = {}
    for src in found:
        check_artifact_path(src.path)
        if src.path in seen:
            raise InvalidInput(f"{src.where} and {seen[src.path]} both give {src.path!r}")
        seen[src.path] = src.where
    return sorted(found, key=lambda src: src.path)


def _grouped(items: list[T], size: Callable[[T], int]) -> list[list[T]]:
    """Each large item alone, small ones in batches (``packs.batches``)."""
    large = [[item] for item in items if size(item) > SMALL]
    small = [(str(i), size(item)) for i, item in enumerate(items) if size(item) <= SMALL]
    return large + [[items[int(i)] for i in batch] for batch in packs.batches(small)]


def _in_parallel(work: Callable[[T], R], groups: list[T]) -> list[R]:
    """``work`` on each group, ``WORKERS`` at a time (one group in this thread), and
    what each gave, in order; the first error stops the rest."""
    if len(groups) == 1:
        return [work(groups[0])]
    with ThreadPoolExecutor(WORKERS, "plinth-data") as pool:
        return list(pool.map(work, groups))


def _read(src: Source, advance: Callable[[int], None]) -> Iterator[bytes]:
    with src.open() as f:
        while chunk := f.read(CHUNK):
            advance(len(chunk))
            yield chunk


def _local(text: str) -> list[Source]:
    local = Path(text)
    name = Path(os.path.abspath(local)).name
    if not local.exists():
        raise InvalidInput(f"no such file or directory: {text}")
    if not name:
        raise InvalidInput(f"{text} has no name of its own to push it under")
    if local.is_file():
        found = [(str(local), name, local.stat())]
    else:
        found = [(where, f"{name}/{inside}", st) for where, inside, st in _files(str(local))]
    return [
        Source(
            path=inside,
            size=st.st_size,
            where=where,
            open=_reader(where),
            local=where,
            stat=st,
        )
        for where, inside, st in found
    ]


_NOT_A_FILE = frozenset((errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP))  # as is_file


def _files(top: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """The regular files under ``top`` (a link to one counts; links to folders are not
    entered), each with its path, its path from ``top`` with ``/`` between parts, and
    its stat: one ``stat`` a file, which the digest cache then reuses."""
    for folder, _dirs, names in os.walk(top):
        inner = os.path.relpath(folder, top)
        prefix = "" if inner == "." else inner.replace(os.sep, "/") + "/"
        for entry in names:
            where = os.path.join(folder, entry)
            try:
                st = os.stat(where)
            except OSError as exc:  # a broken link, or gone since the listing: not a file
                if exc.errno in _NOT_A_FILE:
                    continue
                raise InvalidInput(f"cannot read {where}: {exc.strerror}") from None
            if stat.S_ISREG(st.st_mode):
                yield where, prefix + entry, st


def _reader(path: str) -> Callable[[], IO[bytes]]:
    def opened() -> IO[bytes]:
        return open(path, "rb")

    return opened


def _remote(url: str, storage_options: dict[str, Any]) -> list[Source]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options)
    except (ImportError, ValueError) as exc:
        raise InvalidInput(f"cannot read {url}: {exc}") from None
    root = root.rstrip("/")
    name = root.rsplit("/", 1)[-1]
    protocol = url.split("://", 1)[0]
    if fs.isfile(root):
        entries = {root: fs.info(root)}
        names = {root: name}
    elif fs.isdir(root):
        entries = {p: info for p, info in fs.find(root, detail=True).items()}
        names = {p: f"{name}/{p[len(root) :].lstrip('/')}" for p in entries}
    else:
        raise InvalidInput(f"no such file or directory: {url}")
    return [
        Source(
            path=names[p],
            size=int(info["size"]),
            where=f"{protocol}://{p}",
            open=partial(fs.open, p, "rb"),
        )
        for p, info in entries.items()
        if info.get("type") != "directory"
    ]


def _described(
    sources: list[Source],
    progress: bool | None,
    profile: bool,
    validator: Validator | None,
    cache: DigestCache,
) -> list[tuple[s.DatasetFile, Read]]:
    """Each source's digest and size, and for a tabular file its table, profile and
    rules' results, read in parallel. A local file unchanged since an earlier push is
    not hashed again (``DigestCache``)."""
    total = sum(src.size for src in sources)
    known = cache.known({src.local: src.stat for src in sources if src.local is not None})
    hashed: list[tuple[str, os.stat_result, str]] = []

    def one(src: Source) -> tuple[s.DatasetFile, Read]:
        if src.local is not None and src.local in known:
            advance(src.size)
            found = s.DatasetFile(path=src.path, digest=known[src.local], size=src.size)
        else:
            before = src.stat
            found = _digest(src, advance)
            if before is not None and src.local is not None:
                hashed.append((src.local, before, found.digest))
        read = read_table(src.path, src.open, profile, validator)
        return found.model_copy(update={"table": read.table}), read

    def some(part: list[Source]) -> list[tuple[s.DatasetFile, Read]]:
        return [one(src) for src in part]

    with transfer_progress(f"reading {len(sources)} files", total, progress) as advance:
        described = [found for part in _in_parallel(some, _tasks(sources)) for found in part]
    cache.remember(hashed)
    return described


def _tasks(sources: list[Source]) -> list[list[Source]]:
    """``sources`` cut into tasks of about ``TASK_COST``, in order."""
    tasks: list[list[Source]] = [[]]
    held = 0
    for src in sources:
        if held >= TASK_COST:
            tasks.append([])
            held = 0
        tasks[-1].append(src)
        slow = src.local is None or format_of(src.path) is not None
        held += src.size + (TASK_OVERHEAD if slow else 0)
    return tasks


def _digest(src: Source, advance: Callable[[int], None]) -> s.DatasetFile:
    if src.local is not None:
        info = file_digest(src.local, advance)
        digest, size = info.digest, info.size
    else:
        h, size = hashlib.sha256(), 0
        with src.open() as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                advance(len(chunk))
        digest = h.hexdigest()
    return s.DatasetFile(path=src.path, digest=digest, size=size)


def _inside(root: Path, path: str, resolved: dict[Path, Path]) -> Path:
    """Where a manifest's path lands under ``root``: checked like an artifact path,
    and never outside ``root`` (nor through a link that leads out of it). ``resolved``
    keeps each folder's real path, so a thousand files in one folder resolve it once."""
    check_artifact_path(path)
    target = root.joinpath(*path.split("/"))
    for folder in (root, target.parent):
        if folder not in resolved:
            resolved[folder] = folder.resolve()
    # a link's own target; else the file's name in its folder's real path
    landed = target.resolve() if target.is_symlink() else resolved[target.parent] / target.name
    if not landed.is_relative_to(resolved[root]):
        raise InvalidInput(f"{path!r} would land outside {root}")
    return target


def _holds(target: Path, f: s.DatasetFile) -> bool:
    """Whether ``target`` already is this file, byte for byte."""
    try:
        if not target.is_file() or target.is_symlink() or target.stat().st_size != f.size:
            return False
    except OSError:
        return False
    return file_digest(target).digest == f.digest


def _datasets(project: str, name: str | None = None) -> str:
    base = f"/api/v1/projects/{quote(project, safe='')}/datasets"
    return base if name is None else f"{base}/{quote(name, safe='')}"
