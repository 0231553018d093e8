"""Where a PyTorch model runs when served: ``--device`` (plinth serve) and ``device``
(deployments). On this machine, without CUDA: ``cpu`` and ``auto`` serve on the CPU
with the model's own answers; ``cuda`` is refused in words before any file is read,
and a name that is no device is refused at once; other flavors ignore the option; a
deployment hands its device to every replica. The GPU itself is checked by hand
with tests/device/gpu_serving.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from plinth import Client
from plinth.errors import InvalidInput
from plinth.registry.flavors import load_model, save_model
from tests.conftest import make_settings, raw_http
from tests.processes import REPO, child_env
from tests.registry import flavor_models
from tests.registry.files import model_files
from tests.serving.conftest import served

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusals of a machine without CUDA"
)
ROWS = np.arange(24, dtype=np.float32).reshape(6, 4) / 10


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    torch.manual_seed(0)
    net = flavor_models.TinyNet().eval()
    directory = tmp_path_factory.mktemp("torch") / "model"
    save_model(net, directory, input_example=ROWS[:2])
    with torch.inference_mode():
        return directory, net(torch.from_numpy(ROWS)).numpy()


def test_cpu_and_auto_load_on_the_cpu_and_answer_as_the_model(
    torch_dir: tuple[Path, np.ndarray],
) -> None:
    directory, expected = torch_dir
    for device in ("cpu", "auto", None):
        predictor = load_model(directory, device=device)
        assert predictor.device.type == "cpu"  # type: ignore[attr-defined]
        np.testing.assert_allclose(predictor.predict(ROWS), expected, rtol=1e-6)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_refused_in_words(
    torch_dir: tuple[Path, np.ndarray], device: str
) -> None:
    directory, _ = torch_dir
    with pytest.raises(InvalidInput, match=f"device '{device}': CUDA is not available here"):
        load_model(directory, device=device)


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cpu "])
def test_a_name_that_is_no_device_is_refused(
    torch_dir: tuple[Path, np.ndarray], device: str
) -> None:
    directory, _ = torch_dir
    with pytest.raises(InvalidInput, match="use auto, cpu, cuda or cuda:N"):
        load_model(directory, device=device)


def test_other_flavors_ignore_the_device(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    target = np.array([0, 1, 0, 1, 0, 1])
    model = LogisticRegression().fit(ROWS, target)
    save_model(model, tmp_path / "model", input_example=ROWS[:2])
    predictor = load_model(tmp_path / "model", device="cuda")
    assert list(predictor.predict(ROWS)) == list(model.predict(ROWS))


def _serve(directory: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "plinth.serving", str(directory), "--name", "net", *options]


@pytest.mark.slow
def test_plinth_serve_device_cpu_answers_in_batches_as_the_model(
    torch_dir: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    directory, expected = torch_dir
    with served(_serve(directory, "--device", "cpu"), tmp_path) as server:
        answers = server.concurrently(
            "/v1/models/net:predict", [{"instances": [row.tolist()]} for row in ROWS] * 4
        )
        status, _, body = server.post("/v1/models/net:predict", {"instances": ROWS.tolist()})
    assert [a[0] for a in answers] == [200] * len(answers) and status == 200
    got = np.array([a[2]["predictions"][0] for a in answers], dtype=np.float32)
    np.testing.assert_allclose(got, np.concatenate([expected] * 4), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(body["predictions"]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "error: cannot load the model: device 'cuda': CUDA is not available here"),
        ("tpu", "error: --device 'tpu': use auto, cpu, cuda or cuda:N"),
    ],
)
def test_plinth_serve_refuses_a_device_it_cannot_use_and_exits(
    torch_dir: tuple[Path, np.ndarray], device: str, message: str
) -> None:
    directory, _ = torch_dir
    finished = subprocess.run(
        [*_serve(directory, "--device", device), "--port", "0"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode != 0
    assert message in finished.stderr, finished.stderr


def test_a_deployment_keeps_its_device_and_refuses_one_that_is_not(
    client: Client, tmp_path: Path
) -> None:
    run = client.create_run("gpu-team")
    client.log_artifacts(run.id, model_files(tmp_path / "m", b"w"), "m")
    client.register_model(run.id, "m", "net")
    uri = "models:/gpu-team/net/1"
    d = client.create_deployment("gpu-team", "svc", uri, runtime="memory", device="cuda:0")
    assert d.device == "cuda:0" and client.get_deployment("gpu-team", "svc").device == "cuda:0"
    assert client.create_deployment("gpu-team", "plain", uri, runtime="memory").device == "auto"
    refused = raw_http(client).post(
        "/api/v1/projects/gpu-team/deployments",
        json={"name": "bad", "model": uri, "runtime": "memory", "device": "gpu"},
    )
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("device")
    assert [x.name for x in client.list_deployments("gpu-team")] == ["plain", "svc"]


def test_a_replica_loads_its_versions_on_its_configs_device(
    torch_dir: tuple[Path, np.ndarray],
) -> None:
    from plinth.registry.manifest import directory_files, manifest_digest
    from plinth.serving.split import from_config

    directory, expected = torch_dir
    entry = {"version": "1", "directory": str(directory)}
    entry["digest"] = manifest_digest(directory_files(directory))
    config = {
        "name": "net",
        "generation": 1,
        "versions": [entry],
        "split": [entry | {"weight": 100}],
    }
    split = from_config({**config, "device": "cpu"})
    predictor = split.models["1"].predictor
    assert predictor.device.type == "cpu"  # type: ignore[attr-defined]
    np.testing.assert_allclose(predictor.predict(ROWS), expected, rtol=1e-6)
    with pytest.raises(InvalidInput, match="CUDA is not available"):
        from_config({**config, "device": "cuda"})


@pytest.mark.slow
def test_a_deployed_pytorch_model_runs_on_the_deployments_device(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = flavor_models.TinyNet().eval()
    with torch.inference_mode():
        expected = net(torch.from_numpy(ROWS)).numpy()
    with Client(settings=make_settings(tmp_path / "home")) as client:
        run = client.create_run("gpu-team")
        client.log_model(run.id, net, "net", input_example=ROWS[:2])
        d = client.create_deployment("gpu-team", "svc", "models:/gpu-team/net/1", device="cpu")
        try:
            deadline = time.monotonic() + 90
            while not (d.replicas and all(r.state == "ready" for r in d.replicas)):
                assert time.monotonic() < deadline, d.replicas
                time.sleep(0.3)
                d = client.get_deployment("gpu-team", "svc")
            answer = httpx.post(f"{d.url}/v1/models/net:predict", json={"instances": ROWS.tolist()})
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-5, atol=1e-6)
            [config] = (tmp_path / "home" / "serving" / "deployments").glob("*/config.json")
            assert json.loads(config.read_text())["device"] == "cpu"
        finally:
            client.delete_deployment("gpu-team", "svc")
