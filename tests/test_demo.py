from __future__ import annotations

from pathlib import Path

import skops.io as sio

from plinth.client import Client
from plinth.demo import DATASET, EPOCHS, MODEL, RULES, SWEEP, run_demo
from tests.conftest import make_settings


def test_demo_tracks_a_sweep_with_models(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with Client(settings=make_settings(tmp_path / "home")) as client:
        run_demo("demo", client=client, keep_serving=False)
        runs = client.search_runs("demo", order_by="metrics.val_acc desc").runs
        assert len(runs) == len(SWEEP["alpha"]) * len(SWEEP["eta0"]) * len(SWEEP["penalty"])
        assert {r.status for r in runs} == {"finished"}
        best = runs[0]
        assert best.metrics["val_acc"] > 0.9
        assert len(client.metric_history(best.id, "val_loss")) == EPOCHS
        path = client.download_artifact(best.id, "model/model.skops", tmp_path / "out")
        untrusted = sio.get_untrusted_types(file=path)
        assert all(name.startswith(("sklearn.", "numpy.")) for name in untrusted)
        model = sio.load(path, trusted=untrusted)
        assert model.predict([[0.0] * 30]).shape == (1,)
        champion = client.get_model_version(f"models:/demo/{MODEL}@champion")
        assert (champion.run_id, champion.flavor) == (best.id, "sklearn")
        assert client.list_deployments("demo") == []  # stopped at the end, as asked
        # the data went in as a dataset version, checked and profiled, and every trial read it
        data = client.get_dataset_version("demo", DATASET)
        assert (data.version, data.files, data.rows) == (1, 2, 569)
        assert data.validation is not None and len(data.validation.results) == 2 * len(RULES)
        assert all(r.passed for r in data.validation.results)
        profiles = client.dataset_profiles("demo", data.ref)
        assert set(profiles) == {f"{DATASET}/train.parquet", f"{DATASET}/val.parquet"}
        graph = client.lineage(champion.uri)
        assert (f"datasets:/demo/{data.ref}", "read", f"runs:/{best.id}") in {
            (e.src, e.relation, e.dst) for e in graph.edges
        }
    shown = capsys.readouterr().out
    assert best.name in shown and "plinth server" in shown
    assert f"{MODEL}/{champion.version}: " in shown  # the champion answered, over HTTP
    assert f"serve models:/demo/{MODEL}@champion --port 9000" in shown and "curl -s" in shown
