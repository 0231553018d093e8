"""The durability promises, proven with real processes and real kills.

A 2xx means committed: nothing acknowledged is lost when the server is SIGKILLed, and
a retried batch is applied once. An artifact is complete with its digest or absent.
Many processes can share one embedded SQLite home without "database is locked".
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from plinth import Client
from tests.processes import Processes, Server, get, wait_all

pytestmark = pytest.mark.slow


def _wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# 1. kill -9 the server while clients log ----------------------------------------------

LOGGER = """
    import sys, time
    from plinth import Client
    from plinth.errors import ServiceUnavailable

    url, run_id, who, batches, size, acks = sys.argv[1:]
    batches, size = int(batches), int(size)
    client = Client(url=url)
    with open(acks, "a") as out:
        for b in range(batches):
            metrics = [
                {"key": who, "value": float(b * size + j), "step": b * size + j,
                 "timestamp": time.time()}
                for j in range(size)
            ]
            deadline = time.monotonic() + 60
            while True:  # the same batch id until acknowledged: applied at most once
                try:
                    if not client.log_batch(run_id, metrics=metrics, batch_id=f"{who}-{b:06d}"):
                        print("repeat", b, flush=True)  # committed before a crash hid the reply
                    break
                except ServiceUnavailable:  # the SDK's own retries ran out
                    if time.monotonic() > deadline:
                        raise
                    print("outer retry", flush=True)
                    time.sleep(0.2)
            out.write(f"{b}\\n")  # a 2xx came back for batch b
            out.flush()
"""


def test_acknowledged_batches_survive_kill_9_exactly_once(
    processes: Processes, tmp_path: Path
) -> None:
    clients, batches, size = 4, 150, 50
    server = processes.server(tmp_path / "home")
    with Client(url=server.url) as client:
        run_id = client.create_run("durable").id
    acks = [tmp_path / f"acks-{i}.txt" for i in range(clients)]
    workers = [
        processes.python(LOGGER, server.url, run_id, f"c{i}", str(batches), str(size), str(ack))
        for i, ack in enumerate(acks)
    ]

    def acked() -> int:
        return sum(len(_lines(a)) for a in acks)

    for fraction in (0.15, 0.35, 0.55, 0.75):  # crashes with every client mid-stream
        target = fraction * clients * batches
        _wait_for(lambda: acked() >= target, 60, "acknowledgements")  # noqa: B023
        server.kill()
        time.sleep(0.3)
        server.start()
    wait_all(workers, timeout=90)

    with Client(url=server.url) as client:
        for i, ack in enumerate(acks):
            acknowledged = {int(b) for b in _lines(ack)}
            assert acknowledged == set(range(batches))  # each client retried to the end
            points = client.metric_history(run_id, f"c{i}")
            per_step = Counter(p.step for p in points)
            twice = [step for step, n in per_step.items() if n > 1]
            assert not twice, f"c{i}: steps stored more than once: {twice[:10]}"
            for b in acknowledged:
                missing = [s for s in range(b * size, (b + 1) * size) if per_step[s] != 1]
                assert not missing, f"c{i}: acknowledged batch {b} lost steps {missing[:10]}"
            assert all(p.value == p.step for p in points)
            assert len(points) == batches * size


# 2. an artifact upload killed midway ------------------------------------------------------

MIB = 1 << 20
UPLOAD_MIB = 200

STREAMER = """
    import http.client, sys, time
    from pathlib import Path

    port, path, digest, total_mib, send_mib, marker = sys.argv[1:]
    block = Path(sys.argv[0]).with_name("block.bin").read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", int(port))
    conn.putrequest("PUT", path)
    conn.putheader("Content-Length", str(int(total_mib) << 20))
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("X-Plinth-Digest", digest)
    conn.endheaders()
    for i in range(int(send_mib)):
        conn.send(i.to_bytes(8, "big") + block[8:])
    Path(marker).write_text("sent")
    time.sleep(600)  # killed here, half-way through the body
"""


def _content_digest(block: bytes) -> str:
    """The digest of the whole upload: block i is ``block`` with i in its first 8 bytes."""
    h = hashlib.sha256()
    for i in range(UPLOAD_MIB):
        h.update(i.to_bytes(8, "big") + block[8:])
    return h.hexdigest()


def _blob_files(home: Path) -> list[Path]:
    root = home / "artifacts"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _partial_uploads(home: Path) -> list[Path]:
    return [p for p in _blob_files(home) if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("victim", ["client", "server"])
def test_artifact_upload_killed_midway_leaves_no_artifact(
    processes: Processes, tmp_path: Path, victim: str
) -> None:
    home = tmp_path / "home"
    server: Server = processes.server(home)
    block = random.Random(victim).randbytes(MIB)
    (tmp_path / "block.bin").write_bytes(block)
    digest = _content_digest(block)
    with Client(url=server.url) as client:
        run_id = client.create_run("uploads").id
    path = f"/api/v1/runs/{run_id}/artifacts/model.bin"
    marker = tmp_path / "half-sent"
    half = UPLOAD_MIB // 2
    streamer = processes.python(
        STREAMER, str(server.port), path, digest, str(UPLOAD_MIB), str(half), str(marker)
    )
    _wait_for(marker.exists, 60, f"the streamer to send half:\n{streamer.output()}")

    def received() -> int:
        return sum(p.stat().st_size for p in _blob_files(home))

    # The server has taken in (almost) half when the store holds it.
    _wait_for(lambda: received() >= (half - 8) * MIB, 30, "the server to receive half")

    if victim == "client":
        streamer.kill()
        # The server notices the disconnect and discards the temp file.
        _wait_for(lambda: not _partial_uploads(home), 15, "the partial upload to be discarded")
    else:
        server.kill()
        streamer.kill()
        leftovers = _partial_uploads(home)
        assert leftovers  # the killed server could not clean up after itself
        server.start()  # at once, as a supervisor restarts a crashed server
        # Removed by the start-up sweep (no writer holds its lock), not hours later.
        assert not _partial_uploads(home)

    with Client(url=server.url) as client:
        assert client.list_artifacts(run_id) == []
    assert get(server.port, path)[0] == 404
    for blob in _blob_files(home):
        named = blob.parent.name + blob.name
        actual = hashlib.sha256(blob.read_bytes()).hexdigest()
        assert actual == named, f"{blob} holds content that does not match its name"
    final = home / "artifacts" / "sha256" / digest[:2] / digest[2:]
    assert not final.exists()


# 3. many processes on one embedded SQLite home --------------------------------------------

EMBEDDED_LOGGER = """
    import sys
    import plinth

    home, who, steps, out = sys.argv[1:]
    client = plinth.Client(home=home)
    extra = []
    with plinth.start_run("shared", name=who, client=client) as run:
        for step in range(int(steps)):
            run.log({"loss": 1.0 / (step + 1), "acc": step / int(steps)}, step=step)
            if step % 500 == 0:  # other writers' transactions among the batches
                extra.append(client.create_run("shared", name=f"{who}-extra{step}").id)
    with open(out, "w") as f:
        f.write(" ".join([run.id, *extra]))
"""


def test_eight_processes_share_one_embedded_home(processes: Processes, tmp_path: Path) -> None:
    home, writers, steps = tmp_path / "home", 8, 3000
    outs = [tmp_path / f"run-{i}.txt" for i in range(writers)]
    # A fresh home: the processes also race to create and migrate the database.
    workers = [
        processes.python(
            EMBEDDED_LOGGER,
            str(home),
            f"w{i}",
            str(steps),
            str(out),
            PLINTH_TRACKING__FLUSH_BATCH_POINTS="200",  # many small commits
        )
        for i, out in enumerate(outs)
    ]
    try:
        wait_all(workers, timeout=120)
    finally:
        locked = [w.output() for w in workers if "database is locked" in w.output()]
        assert not locked, locked[0][-3000:]

    with Client(home=str(home)) as client:
        for out in outs:
            run_id, *extra = out.read_text().split()
            assert client.get_run(run_id).status == "finished"
            for key in ("loss", "acc"):
                points = client.metric_history(run_id, key)
                assert sorted(p.step for p in points) == list(range(steps))
            assert len(extra) == steps // 500
        every = client.search_runs("shared", limit=1000).runs
        assert len(every) == writers * (1 + steps // 500)
