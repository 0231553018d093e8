"""``python -m plinth.compute.fetch DEST``: the job's working-directory snapshot,
fetched from the Plinth server and unpacked into DEST, for a worker that cannot see the
server's disk. A Kubernetes pod's init container runs it, in the job's own image (which
has Plinth in it for the job's tracking), before the worker starts in DEST.

It reads ``PLINTH_URL`` and ``PLINTH_TOKEN`` (the job's token, scoped to its project)
and ``PLINTH_SNAPSHOT`` (``PROJECT/DIGEST``) from its environment; streams the archive
to a temporary file while hashing it; refuses bytes that do not hash to the digest;
and unpacks with ``snapshot.unpack``, which refuses a hostile archive. A connection
error, a 5xx or a 429 is tried again with back-off; anything else fails at once, with
the reason on stderr (the job's log) and exit code 1.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from plinth.compute.snapshot import unpack
from plinth.errors import PlinthError

TRIES = 5
_RETRIED = {429, 500, 502, 503, 504}


class FetchError(Exception):
    pass


def fetch(url: str, token: str | None, snapshot: str, dest: Path, *, tries: int = TRIES) -> int:
    """Fetch ``PROJECT/DIGEST`` from the server at ``url`` and unpack it into ``dest``;
    the number of files written."""
    project, _, digest = snapshot.rpartition("/")
    if not project or len(digest) != 64:
        raise FetchError(f"PLINTH_SNAPSHOT must be PROJECT/DIGEST, not {snapshot!r}")
    where = f"{url.rstrip('/')}/api/v1/projects/{quote(project, safe='')}/snapshots/{digest}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with tempfile.TemporaryDirectory(prefix="plinth-fetch-") as tmp:
        archive = Path(tmp) / "snapshot.tar"
        for attempt in range(1, tries + 1):
            try:
                failed = _download(where, headers, archive)
                if failed is None:
                    break
                why, again = f"{where} answered {failed[0]}: {failed[1]}", failed[0] in _RETRIED
            except httpx.TransportError as exc:
                why, again = f"cannot reach {url}: {exc}", True
            if not again or attempt == tries:
                raise FetchError(why)
            time.sleep(min(2.0**attempt, 10.0))
        found = _sha256(archive)
        if found != digest:
            raise FetchError(f"the snapshot fetched hashes to {found}, not {digest}")
        return len(unpack(archive, dest))


def _download(where: str, headers: dict[str, str], archive: Path) -> tuple[int, str] | None:
    """Stream the archive into the file: None when whole, else the HTTP status and
    what the server said."""
    with httpx.stream("GET", where, headers=headers, timeout=60.0) as response:
        if response.status_code != 200:
            return response.status_code, response.read().decode(errors="replace")[:300]
        with open(archive, "wb") as out:
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m plinth.compute.fetch DEST", file=sys.stderr)
        return 2
    url = os.environ.get("PLINTH_URL")
    if not url:
        print(
            "plinth: PLINTH_URL is not set: a pool whose workers cannot see the server's "
            "disk needs a served Plinth (with auth on, compute.server_url)",
            file=sys.stderr,
        )
        return 1
    try:
        count = fetch(
            url, os.environ.get("PLINTH_TOKEN"), os.environ["PLINTH_SNAPSHOT"], Path(argv[0])
        )
    except (FetchError, PlinthError, KeyError, OSError) as exc:
        print(f"plinth: cannot fetch the job's snapshot: {exc}", file=sys.stderr)
        return 1
    print(f"plinth: the job's snapshot: {count} files in {argv[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
