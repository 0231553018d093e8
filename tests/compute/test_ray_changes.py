"""What a launcher tells a poller that keeps count (``Launcher.changes``), and how the
executor's view of a launcher takes it (``_View.learn``). The logic above Ray only: the
launcher's Ray calls are not made here (its node id is given, its tasks' outcomes are
handed to ``_settle`` as Ray would); the executor against a real cluster is in
``test_ray_executor.py`` and the executor contract."""

from __future__ import annotations

import time
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from plinth.compute.executors import _ray_launcher as remote
from plinth.compute.executors.ray import _View

RUNNING = {"state": "running"}


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> remote.Launcher:
    import ray

    context = SimpleNamespace(get_node_id=lambda: "node-1")
    monkeypatch.setattr(ray, "get_runtime_context", lambda: context)
    return remote.Launcher()


def add(launcher: remote.Launcher, name: str, token: str) -> remote._Worker:
    worker = remote._Worker(name, token, ref=None, here=True)
    launcher._workers[name] = worker
    return worker


def end(launcher: remote.Launcher, worker: remote._Worker, code: int) -> dict[str, Any]:
    done: Future[Any] = Future()
    done.set_result({"code": code, "reason": None})
    launcher._settle(worker, done)
    return {"state": "exited", "code": code, "reason": None}


def test_a_launcher_tells_what_ended_since_the_number_a_poller_keeps(
    launcher: remote.Launcher,
) -> None:
    a, b = add(launcher, "plinth-a-1-0", "ta"), add(launcher, "plinth-b-1-0", "tb")
    seq, ends, answers = launcher.changes(None, [("plinth-a-1-0", "ta"), ("plinth-b-1-0", "tb")])
    assert (seq, ends, answers) == (0, None, [RUNNING, RUNNING])  # no number: no ends

    a_end = end(launcher, a, 0)
    assert launcher.changes(0, []) == (1, [("plinth-a-1-0", remote.token_digest("ta"), a_end)], [])
    assert launcher.changes(1, []) == (1, [], [])  # nothing since
    b_end = end(launcher, b, 3)
    seq, ends, _ = launcher.changes(1, [])
    assert (seq, ends) == (2, [("plinth-b-1-0", remote.token_digest("tb"), b_end)])
    assert launcher.changes(0, [])[1] == [
        ("plinth-a-1-0", remote.token_digest("ta"), a_end),
        ("plinth-b-1-0", remote.token_digest("tb"), b_end),
    ]
    # a query still names its worker by token: another token is told it is unknown
    assert launcher.changes(2, [("plinth-a-1-0", "not its token")])[2] == [
        {"state": "lost", "reason": remote.UNKNOWN}
    ]
    told = repr(launcher.changes(0, []))
    assert "ta'" not in told and "tb'" not in told  # a token never leaves the launcher


def test_a_poller_whose_number_is_older_than_every_end_kept_is_told_so(
    launcher: remote.Launcher,
) -> None:
    a, b = add(launcher, "plinth-a-1-0", "ta"), add(launcher, "plinth-b-1-0", "tb")
    end(launcher, a, 0)
    end(launcher, b, 0)
    a.ended_at = time.time() - remote.KEEP_SECONDS - 1  # a's end is old, b's is not
    launcher._ends[0] = (*launcher._ends[0][:4], a.ended_at)
    launcher._pruned_at = 0.0
    launcher._prune()
    assert "plinth-a-1-0" not in launcher._workers and "plinth-b-1-0" in launcher._workers
    assert launcher.changes(0, [])[1] is None  # end 1 is forgotten: ask about each
    assert [name for name, _, _ in launcher.changes(1, [])[1] or []] == ["plinth-b-1-0"]


def test_a_view_asks_about_new_workers_only_and_learns_ends_from_the_list() -> None:
    view = _View()
    a, b = ("plinth-a-1-0", "ta"), ("plinth-b-1-0", "tb")
    view.watch(a)
    view.watch(b)
    assert view.new == {a, b}
    view.learn(5, None, [a, b], [RUNNING, RUNNING])  # the first answer: no number yet
    assert (view.seq, view.new, view.running) == (5, set(), {a, b})

    a_end = {"state": "exited", "code": 0, "reason": None}
    c = ("plinth-c-1-0", "tc")
    view.watch(c)
    view.learn(6, [("plinth-a-1-0", remote.token_digest("ta"), a_end)], [c], [RUNNING])
    assert view.ended == {a: a_end} and view.running == {b, c} and view.seq == 6

    other = {"state": "exited", "code": 9, "reason": None}  # same name, another token
    view.learn(7, [("plinth-b-1-0", remote.token_digest("not tb"), other)], [], [])
    assert b in view.running and b not in view.ended

    view.forget(a)
    assert a not in view.ended and a not in view.watched


def test_a_view_asks_about_every_worker_again_when_the_launcher_forgot_past_its_number() -> None:
    view = _View()
    a, b = ("plinth-a-1-0", "ta"), ("plinth-b-1-0", None)  # b: any worker of that name
    for key in (a, b):
        view.watch(key)
    view.learn(1, None, [a, b], [RUNNING, RUNNING])
    view.learn(9, None, [], [])  # ends of None after a number: lapsed
    assert view.seq is None and view.new == {a, b} and not view.running
    b_end = {"state": "lost", "reason": remote.LOST}
    view.learn(9, None, [a, b], [RUNNING, b_end])  # asked anew, without a number
    assert view.seq == 9 and view.running == {a} and view.ended == {b: b_end}


def test_an_answer_for_a_worker_whose_poll_went_final_meanwhile_is_dropped() -> None:
    view = _View()
    a = ("plinth-a-1-0", "ta")
    view.watch(a)
    view.forget(a)
    view.learn(1, None, [a], [RUNNING])
    assert not view.running and not view.ended and not view.new


def test_a_view_of_a_launcher_that_keeps_no_count_asks_about_every_worker_each_time() -> None:
    """A launcher made by an earlier Plinth answers ``status`` only: what it says runs
    is asked about again at the next answer, since no list of ends will tell."""
    view = _View()
    a, b = ("plinth-a-1-0", "ta"), ("plinth-b-1-0", "tb")
    for key in (a, b):
        view.watch(key)
    b_end = {"state": "exited", "code": 0, "reason": None}
    view.learn(None, None, [a, b], [RUNNING, b_end])
    assert view.seq is None and view.new == {a} and not view.running and view.ended == {b: b_end}
