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
from plinth.core.platform import Platform
from plinth.governance.secrets import SecretsService
from plinth.settings import Settings
from tests.conftest import make_settings, raw_http

VALUE = "AKIA-super-secret-value-0123456789"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    plain = make_settings(tmp_path / "home")
    return plain.model_copy(update={"master_key": SecretStr(MasterKey.generate().to_text())})


@pytest.fixture
def client(settings: Settings) -> Client:  # type: ignore[misc]
    with Client(settings=settings) as c:
        c.create_run("jobs")
        yield c


def test_a_secret_is_sealed_and_never_comes_back(
    client: Client, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        client.set_secret("jobs", "AWS_KEY", VALUE)
        listed = client.list_secrets("jobs")
    assert [s.name for s in listed] == ["AWS_KEY"]
    assert VALUE not in repr(listed) and VALUE not in caplog.text
    with platform.db.engine.connect() as conn:
        for table in ("secrets", "audit_events"):
            assert (
                VALUE.encode()
                not in repr(conn.execute(sa.text(f"SELECT * FROM {table}")).all()).encode()
            )
    events = list(client.audit_events(action="secrets.set"))
    assert [e.object for e in events] == ["AWS_KEY"] and VALUE not in repr(events)
    # only the job runner, in-process, may open it
    assert SecretsService(platform).reveal("jobs", "AWS_KEY", principal=LOCAL) == VALUE
    for path in ("/api/v1/projects/jobs/secrets/AWS_KEY",):
        assert raw_http(client).get(path).status_code in (404, 405)


def test_bad_input_never_echoes_the_value(client: Client) -> None:
    response = raw_http(client).put(
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
        with pytest.raises(
            plinth.PermissionDenied, match=r"its secrets.*no master key is configured"
        ):
            plain.set_secret("jobs", "AWS_KEY", VALUE)
        assert plain.list_secrets("jobs") == []


@pytest.mark.parametrize("name", ["PLINTH_TOKEN", "CUDA_VISIBLE_DEVICES", "IFS", "RANK"])
def test_a_secret_a_job_could_never_be_given_is_refused(client: Client, name: str) -> None:
    response = raw_http(client).put(
        "/api/v1/projects/jobs/secrets", json={"name": name, "value": VALUE}
    )
    assert response.status_code == 400, response.text
    assert f"{name} is Plinth's to set" in response.text and VALUE not in response.text
    assert client.list_secrets("jobs") == []
    assert list(client.audit_events(action="secrets.set")) == []
