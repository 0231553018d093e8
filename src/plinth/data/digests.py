"""The sha256 of local files, remembered between pushes (as DVC keeps its state
database): a file whose path, size, inode, modification and change times are all as
they were when it was hashed is not read again. The change time moves on any write and
cannot be set back, so a stale digest would need a write that leaves all five as they
were. Best effort: a cache that cannot be opened or written is no cache, never an
error, and a digest it gives still has to match the bytes on upload and on the server.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

_SCHEMA = """CREATE TABLE IF NOT EXISTS digests (
    path TEXT PRIMARY KEY, size INTEGER, inode INTEGER, mtime_ns INTEGER,
    ctime_ns INTEGER, digest TEXT)"""


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


class DigestCache:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=2)
            conn.execute(_SCHEMA)
            return conn
        except (OSError, sqlite3.Error):
            return None

    def known(self, files: dict[str, os.stat_result | None]) -> dict[str, str]:
        """The remembered digest of each file that has not changed since: ``files``
        are paths with their stat taken now (None: stat it here)."""
        conn = self._connect()
        if conn is None or not files:
            return {}
        given = {os.path.abspath(p): p for p in files}  # remembered by absolute path
        absolute = list(given)
        found: dict[str, str] = {}
        try:
            with contextlib.closing(conn):
                for start in range(0, len(absolute), 500):
                    part = absolute[start : start + 500]
                    marks = ",".join("?" * len(part))
                    rows = conn.execute(
                        f"SELECT path, size, inode, mtime_ns, ctime_ns, digest FROM digests "
                        f"WHERE path IN ({marks})",
                        part,
                    )
                    for path, size, inode, mtime, ctime, digest in rows:
                        with contextlib.suppress(OSError):
                            now = files[given[path]] or os.stat(path)
                            if _key(now) == (size, inode, mtime, ctime):
                                found[given[path]] = digest
        except sqlite3.Error:
            return {}
        return found

    def remember(self, hashed: list[tuple[str, os.stat_result, str]]) -> None:
        """``(path, the stat taken before hashing, digest)`` of files just hashed; a file
        that changed while it was hashed is not remembered."""
        rows = []
        for path, before, digest in hashed:
            with contextlib.suppress(OSError):
                if _key(os.stat(path)) == _key(before):
                    rows.append((os.path.abspath(path), *_key(before), digest))
        conn = self._connect()
        if conn is None or not rows:
            return
        with contextlib.suppress(sqlite3.Error), contextlib.closing(conn), conn:
            conn.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", rows)
