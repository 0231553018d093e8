"""The audit trail: every change recorded in its own transaction, and tampering found."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

import plinth
from plinth.client import Client
from plinth.core.audit import audit_events, audit_head
from plinth.core.platform import Platform
from tests.conftest import raw_http


def _actions(client: Client, project: str) -> list[tuple[str, str]]:
    return [(e.action, e.outcome) for e in client.audit_events(project=project)]


def test_every_change_is_recorded_with_who_what_and_where(
    client: Client, project: str, tmp_path: Path
) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    with plinth.start_run(project, params={"lr": 0.1}, client=client) as run:
        run.log({"loss": 1.0}, step=0)
        run.flush()  # points go in the background; make their order certain
        run.log({"loss": 0.5}, step=1)
        run.flush()
        run.log_artifact(str(model))
    with pytest.raises(plinth.Conflict):
        run.client.log_batch(run.id, params={"lr": 0.2})
    assert _actions(client, project) == [
        ("projects.create", "ok"),
        ("runs.create", "ok"),  # with its first batch: the SDK held the create back
        ("runs.log", "ok"),
        ("artifacts.put", "ok"),
        ("runs.end", "ok"),
        ("runs.log", "refused"),
    ]
    events = list(client.audit_events(project=project))
    assert {e.actor for e in events} == {"local"}
    assert events[1].object == run.id and events[1].details["params"] == ["lr"]
    assert events[1].details["batch"]["points"] == 1
    assert events[2].details["points"] == 1
    assert events[3].details["digest"] and events[3].object == f"{run.id}/model.bin"
    assert events[5].details["error"] == "Conflict"
    assert client.verify_audit().ok


def test_a_retried_batch_is_not_recorded_twice(client: Client, project: str) -> None:
    run = client.create_run(project)
    points = [{"key": "m", "value": 1.0, "step": 0, "timestamp": 1.0}]
    client.log_batch(run.id, metrics=points, batch_id="same-batch-1")
    client.log_batch(run.id, metrics=points, batch_id="same-batch-1")
    assert _actions(client, project) == [
        ("projects.create", "ok"),
        ("runs.create", "ok"),
        ("runs.log", "ok"),
    ]


def test_filters_and_paging(client: Client, project: str) -> None:
    for _ in range(5):
        client.create_run(project)
    events = list(client.audit_events(project=project, action="runs.create"))
    assert len(events) == 5
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert len(list(client.audit_events(project=project, limit=3))) == 3
    assert list(client.audit_events(project=project, since=events[-1].at + 1)) == []
    assert list(client.audit_events(project=project, actor="someone-else")) == []


def _tamper(platform: Platform, statement: str, **params: object) -> None:
    with platform.db.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _ids(client: Client, project: str) -> list[int]:
    return [e.id for e in client.audit_events(project=project)]


@pytest.mark.parametrize("attack", ["edit", "delete", "reorder", "insert", "truncate"])
def test_tampering_with_sql_is_found_at_the_first_bad_event(
    client: Client, platform: Platform, project: str, attack: str
) -> None:
    for _ in range(4):
        client.create_run(project)
    ids = _ids(client, project)
    assert client.verify_audit().ok
    if attack == "edit":
        _tamper(platform, "UPDATE audit_events SET actor = 'mallory' WHERE id = :id", id=ids[1])
        expected = ids[1]
    elif attack == "delete":
        _tamper(platform, "DELETE FROM audit_events WHERE id = :id", id=ids[1])
        expected = ids[2]
    elif attack == "reorder":  # swap the contents of two rows
        with platform.db.engine.begin() as conn:
            rows = {
                r.id: dict(r._mapping)
                for r in conn.execute(
                    sa.select(audit_events).where(audit_events.c.id.in_(ids[1:3]))
                )
            }
            for a, b in ((ids[1], ids[2]), (ids[2], ids[1])):
                values = {k: v for k, v in rows[b].items() if k != "id"}
                conn.execute(audit_events.update().where(audit_events.c.id == a).values(values))
        expected = ids[1]
    elif attack == "insert":  # a forged event between two real ones: shift the later ones
        with platform.db.engine.begin() as conn:
            last = dict(
                conn.execute(sa.select(audit_events).where(audit_events.c.id == ids[-1]))
                .one()
                ._mapping
            )
            conn.execute(
                audit_events.update().where(audit_events.c.id == ids[-1]).values(actor="forged")
            )
            conn.execute(audit_events.insert().values({**last, "id": ids[-1] + 1000}))
        expected = ids[-1]
    else:  # cut the newest event off the end
        _tamper(platform, "DELETE FROM audit_events WHERE id = :id", id=ids[-1])
        expected = ids[-2]
    verdict = client.verify_audit()
    assert not verdict.ok
    assert verdict.broken_at == expected, verdict


def test_concurrent_writers_keep_one_unbroken_chain(
    client: Client, platform: Platform, project: str
) -> None:
    errors: list[BaseException] = []

    def create() -> None:
        try:
            for _ in range(10):
                client.create_run(project)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(_ids(client, project)) == 41  # the project's creation, then 40 runs
    verdict = client.verify_audit()
    assert verdict.ok, verdict
    with platform.db.engine.connect() as conn:
        assert conn.execute(sa.select(audit_head.c.hash)).scalar_one() == verdict.head


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_api_changes_the_trail(client: Client, method: str) -> None:
    for path in ("/api/v1/audit", "/api/v1/audit/1", "/api/v1/audit/verify"):
        response = raw_http(client).request(method, path)
        assert response.status_code in (404, 405), (method, path, response.status_code)
