"""Secrets for jobs: sealed at rest, write-only over the API, never in logs or audit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

import plinth
from plinth.client import Client
from plinth.core.access import LOCAL
from plinth.core.crypto import MasterKey
from tests.conftest import make_settings

VALUE = "AKIA-super-secret-value-0123456789"


@pytest.fixture
def client(tmp_path: Path) -> Client:  # type: ignore[misc]
    settings = make_settings(tmp_path / "home")
    settings = settings.model_copy(update={"master_key": SecretStr(MasterKey.generate().to_text())})
    with Client(settings=settings) as c:
        c.create_run("jobs")
        yield c


def test_a_secret_is_sealed_and_never_comes_back(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        client.set_secret("jobs", "AWS_KEY", VALUE)
        listed = client.list_secrets("jobs")
    assert [s.name for s in listed] == ["AWS_KEY"]
    assert VALUE not in repr(listed) and VALUE not in caplog.text
    app = client._transport.http._transport.app  # type: ignore[attr-defined]
    with app.state.tracking.db.engine.connect() as conn:
        for table in ("secrets", "audit_events"):
            assert (
                VALUE.encode()
                not in repr(conn.execute(sa.text(f"SELECT * FROM {table}")).all()).encode()
            )
    events = list(client.audit_events(action="secrets.set"))
    assert [e.object for e in events] == ["AWS_KEY"] and VALUE not in repr(events)
    # only the job runner, in-process, may open it
    assert app.state.secrets.reveal("jobs", "AWS_KEY", principal=LOCAL) == VALUE
    for path in ("/api/v1/projects/jobs/secrets/AWS_KEY",):
        assert client._transport.http.get(path).status_code in (404, 405)


def test_bad_input_never_echoes_the_value(client: Client) -> None:
    response = client._transport.http.put(
        "/api/v1/projects/jobs/secrets", json={"name": "bad name!", "value": VALUE}
    )
    assert response.status_code == 400 and VALUE not in response.text
    with pytest.raises(plinth.NotFound):
        client.delete_secret("jobs", "NOPE")
    client.set_secret("jobs", "TOKEN", VALUE)
    client.delete_secret("jobs", "TOKEN")
    assert client.list_secrets("jobs") == []


def test_without_a_master_key_secrets_are_refused(tmp_path: Path) -> None:
    with Client(settings=make_settings(tmp_path / "home")) as plain:
        plain.create_run("jobs")
        with pytest.raises(plinth.PermissionDenied, match="master key"):
            plain.set_secret("jobs", "AWS_KEY", VALUE)
        assert plain.list_secrets("jobs") == []
