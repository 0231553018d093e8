"""Artifacts encrypted at rest, end to end: SDK → server → disk, and key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

import plinth
from plinth.client import Client
from plinth.core.crypto import MasterKey
from plinth.governance.keys import rotate_master_key
from plinth.settings import Settings
from tests.conftest import make_settings

MARKER = b"TOP-SECRET-WEIGHTS-" * 50_000  # ~1 MB, easy to spot at rest


def _with_key(settings: Settings, key: MasterKey | None) -> Settings:
    return settings.model_copy(update={"master_key": SecretStr(key.to_text()) if key else None})


def _stored_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (home / "artifacts").rglob("*") if p.is_file())


def _log(settings: Settings, tmp_path: Path, name: str, content: bytes) -> str:
    source = tmp_path / name
    source.write_bytes(content)
    with Client(settings=settings) as client:
        run = client.create_run("secret-project")
        client.log_artifact(run.id, source)
        return run.id


def test_encrypted_artifacts_never_sit_in_the_clear(tmp_path: Path) -> None:
    key = MasterKey.generate()
    settings = _with_key(make_settings(tmp_path / "home"), key)
    run_id = _log(settings, tmp_path, "model.bin", MARKER)
    assert b"TOP-SECRET-WEIGHTS" not in _stored_bytes(tmp_path / "home")
    with Client(settings=settings) as client:
        [artifact] = client.list_artifacts(run_id)
        assert artifact.encrypted and artifact.size == len(MARKER)
        out = client.download_artifact(run_id, "model.bin", tmp_path / "out")
        assert out.read_bytes() == MARKER
        [event] = list(client.audit_events(action="artifacts.put"))
        assert event.details["encrypted"] is True


@pytest.mark.parametrize("key", ["missing", "wrong"])
def test_a_missing_or_wrong_key_is_a_clear_error_not_garbage(tmp_path: Path, key: str) -> None:
    settings = make_settings(tmp_path / "home")
    run_id = _log(_with_key(settings, MasterKey.generate()), tmp_path, "m.bin", MARKER)
    other = None if key == "missing" else MasterKey.generate()
    with (
        Client(settings=_with_key(settings, other)) as client,
        pytest.raises(plinth.PermissionDenied, match="master key"),
    ):
        client.download_artifact(run_id, "m.bin", tmp_path / "out")
    assert not (tmp_path / "out" / "m.bin").exists()


def test_clear_artifacts_stay_readable_once_encryption_is_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    before = _log(settings, tmp_path, "old.bin", b"logged before the key")
    with Client(settings=_with_key(settings, MasterKey.generate())) as client:
        [artifact] = client.list_artifacts(before)
        assert not artifact.encrypted
        out = client.download_artifact(before, "old.bin", tmp_path / "out")
        assert out.read_bytes() == b"logged before the key"


def test_rotation_rewraps_keys_and_keeps_every_artifact_readable(tmp_path: Path) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    settings = make_settings(tmp_path / "home")
    runs = [
        _log(_with_key(settings, old), tmp_path, f"m{i}.bin", MARKER + bytes([i])) for i in range(3)
    ]
    at_rest = _stored_bytes(tmp_path / "home")
    assert rotate_master_key(_with_key(settings, old), new) == 1  # one project, one key
    assert _stored_bytes(tmp_path / "home") == at_rest  # no blob was rewritten
    with Client(settings=_with_key(settings, new)) as client:
        for i, run_id in enumerate(runs):
            out = client.download_artifact(run_id, f"m{i}.bin", tmp_path / f"out{i}")
            assert out.read_bytes() == MARKER + bytes([i])
        assert [e.action for e in client.audit_events(action="keys.rotate")] == ["keys.rotate"]
    with (
        Client(settings=_with_key(settings, old)) as client,
        pytest.raises(plinth.PermissionDenied),
    ):
        client.download_artifact(runs[0], "m0.bin", tmp_path / "stale")


def test_keys_cli_generates_and_rotates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "PLINTH_HOME": str(home)}
    env.pop("PLINTH_MASTER_KEY", None)

    def plinth_cmd(*args: str, key_file: Path | None = None) -> subprocess.CompletedProcess[str]:
        extra = {"PLINTH_MASTER_KEY_FILE": str(key_file)} if key_file else {}
        return subprocess.run(
            [sys.executable, "-m", "plinth", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    for name in ("old.key", "new.key"):
        assert plinth_cmd("keys", "generate", "--output", str(tmp_path / name)).returncode == 0
    assert oct((tmp_path / "old.key").stat().st_mode & 0o777) == "0o600"
    refused = plinth_cmd("keys", "generate", "--output", str(tmp_path / "old.key"))
    assert refused.returncode == 1 and "refusing to overwrite" in refused.stderr
    old = MasterKey.from_text((tmp_path / "old.key").read_text())
    run_id = _log(_with_key(make_settings(home), old), tmp_path, "m.bin", MARKER)
    rotated = plinth_cmd(
        "keys", "rotate", "--new-key-file", str(tmp_path / "new.key"), key_file=tmp_path / "old.key"
    )
    assert rotated.returncode == 0, rotated.stderr
    got = plinth_cmd(
        "artifacts",
        "download",
        run_id,
        "m.bin",
        str(tmp_path / "dl"),
        key_file=tmp_path / "new.key",
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "dl" / "m.bin").read_bytes() == MARKER
