"""One contract every flavor passes, then each flavor's own safety checks.

Each flavor saves a small real model trained here; the contract is a round trip
(save -> MLmodel.json -> load -> the original's predictions), a signature, and readable
failures for missing, empty and truncated files. TensorFlow and Keras models are built
once, in one module-scoped fixture: importing TensorFlow is the slow part.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# TensorFlow and Keras are imported here, while the module is collected, not in a
# fixture: Python 3.11 before 3.11.8 shares one counter between threads converting
# ASTs (CPython gh-106905), and an import that rewrites or parses modules while another
# thread of the session does the same (an embedded app's background work) now and then
# fails with "SystemError: AST constructor recursion depth mismatch". At collection no
# test has started a thread yet.
import keras
import numpy as np
import pytest
import tensorflow  # noqa: F401

from plinth.errors import Conflict, InvalidInput, PermissionDenied, ServiceUnavailable
from plinth.registry.flavors import (
    ModelMeta,
    flavor_of,
    load_model,
    read_meta,
    save_model,
)
from plinth.registry.flavors.meta import write_meta
from plinth.registry.flavors.sklearn import allowed_type
from tests.registry import flavor_models

# TensorFlow's variables predate NumPy 2's copy= keyword; Keras converts them on save.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

FLAVORS = ["sklearn", "onnx", "pytorch", "keras", "tensorflow", "python"]
META_KEYS = {"flavor", "signature", "unsafe_pickle", "files", "flavor_options", "plinth_version"}
MAIN_FILE = {
    "sklearn": "model.skops",
    "onnx": "model.onnx",
    "pytorch": "model.safetensors",
    "keras": "model.keras",
    "tensorflow": "saved_model/saved_model.pb",
    "python": "model.pkl",
}


@dataclass
class Trained:
    flavor: str
    model: Any
    payload: Any  # a JSON request body's "instances" for the rows below
    expected: np.ndarray  # the original model's answer for them
    example: Any = None  # the input_example; None: the files declare the signature
    inputs: list[str] = field(default_factory=lambda: ["input"])


def iris() -> tuple[Any, np.ndarray]:
    from sklearn.datasets import load_iris

    frame, target = load_iris(return_X_y=True, as_frame=True)
    return frame, target.to_numpy()


def train_sklearn() -> Trained:
    from sklearn.linear_model import LogisticRegression

    frame, target = iris()
    model = LogisticRegression(max_iter=500).fit(frame, target)
    rows = frame.iloc[::15]
    records = rows.to_dict(orient="records")
    return Trained("sklearn", model, records, model.predict(rows), frame[:5], list(frame.columns))


def train_onnx() -> Trained:
    from onnx import TensorProto, helper

    frame, target = iris()
    weights, bias = least_squares(frame.to_numpy(), target)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "iris",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_tensor("W", TensorProto.FLOAT, [4, 3], weights.ravel().tolist()),
            helper.make_tensor("b", TensorProto.FLOAT, [3], bias.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rows = frame.to_numpy(dtype=np.float32)[::15]
    return Trained("onnx", model, rows.tolist(), rows @ weights + bias, inputs=["x"])


def least_squares(features: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A linear classifier fitted in closed form: weights [4, 3] and bias [3], float32."""
    design = np.hstack([features, np.ones((len(features), 1))])
    solution = np.linalg.lstsq(design, np.eye(3)[target], rcond=None)[0].astype(np.float32)
    return solution[:4], solution[4]


def train_pytorch() -> Trained:
    import torch

    frame, target = iris()
    features = torch.tensor(frame.to_numpy(dtype=np.float32))
    torch.manual_seed(0)
    net = flavor_models.TinyNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(50):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(features), torch.tensor(target)).backward()
        optimizer.step()
    rows = features[::15]
    with torch.no_grad():
        expected = net(rows).numpy()
    return Trained("pytorch", net, rows.tolist(), expected, features[:5].numpy())


def train_python() -> Trained:
    rows = np.arange(12.0).reshape(3, 4)
    return Trained("python", flavor_models.Doubler(3.0), rows.tolist(), rows * 3.0, rows[:2])


@pytest.fixture(scope="module")
def tf_models() -> dict[str, Trained]:
    """A Keras Sequential and a tf.Module, trained on iris: built once for the module."""
    import tensorflow as tf

    frame, target = iris()
    features = frame.to_numpy(dtype=np.float32)
    keras.utils.set_random_seed(0)
    sequential = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )
    sequential.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    sequential.fit(features, target, epochs=5, batch_size=32, verbose=0)
    rows = features[::15]
    keras_case = Trained(
        "keras", sequential, rows.tolist(), np.asarray(sequential(rows)), features[:5]
    )

    weights, bias = least_squares(features, target)

    class Linear(tf.Module):
        def __init__(self) -> None:
            self.weights = tf.Variable(weights)
            self.bias = tf.Variable(bias)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def __call__(self, x: Any) -> Any:
            return {"scores": tf.matmul(x, self.weights) + self.bias}

    module = Linear()
    expected = module(tf.constant(rows))["scores"].numpy()
    tf_case = Trained("tensorflow", module, rows.tolist(), expected, inputs=["x"])
    return {"keras": keras_case, "tensorflow": tf_case}


BUILDERS: dict[str, Callable[[], Trained]] = {
    "sklearn": train_sklearn,
    "onnx": train_onnx,
    "pytorch": train_pytorch,
    "python": train_python,
}


@pytest.fixture(scope="module", params=FLAVORS)
def trained(request: pytest.FixtureRequest) -> Trained:
    if request.param in ("keras", "tensorflow"):
        cases: dict[str, Trained] = request.getfixturevalue("tf_models")
        return cases[request.param]
    return BUILDERS[request.param]()


@pytest.fixture
def saved(trained: Trained, tmp_path: Path) -> Path:
    save_model(trained.model, tmp_path / "model", input_example=trained.example)
    return tmp_path / "model"


def load(trained: Trained, directory: Path, **kwargs: Any) -> Any:
    return load_model(directory, allow_pickle=trained.flavor == "python", **kwargs)


# The contract


def test_flavor_of_picks_the_flavor(trained: Trained) -> None:
    assert flavor_of(trained.model).name == trained.flavor


def test_round_trip_predicts_as_the_original(trained: Trained, saved: Path) -> None:
    meta = read_meta(saved)
    assert meta.signature is not None
    predictor = load(trained, saved, timeout=120)
    predictions = predictor.predict(meta.signature.coerce(trained.payload))
    np.testing.assert_allclose(np.asarray(predictions), trained.expected, rtol=1e-5, atol=1e-5)


def test_signature_is_inferred(trained: Trained, saved: Path) -> None:
    signature = read_meta(saved).signature
    assert signature is not None
    assert [spec.name for spec in signature.inputs] == trained.inputs
    assert signature.outputs is not None
    expected_shape = [-1, *trained.expected.shape[1:]]
    assert signature.outputs[0].shape == expected_shape


def test_mlmodel_json_has_the_agreed_shape(trained: Trained, saved: Path) -> None:
    document = json.loads((saved / "MLmodel.json").read_text())
    assert set(document) == META_KEYS
    assert document["flavor"] == trained.flavor
    assert document["unsafe_pickle"] is (trained.flavor == "python")
    assert document["plinth_version"] == "0.1.0"
    assert isinstance(document["flavor_options"], dict)
    assert MAIN_FILE[trained.flavor] in document["files"]
    assert all((saved / name).is_file() for name in document["files"])
    on_disk = {p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()}
    assert on_disk == {*document["files"], "MLmodel.json"}


def test_a_missing_file_is_named(trained: Trained, saved: Path) -> None:
    (saved / MAIN_FILE[trained.flavor]).unlink()
    with pytest.raises(InvalidInput, match=f"'{MAIN_FILE[trained.flavor]}'.* missing"):
        load(trained, saved)


@pytest.mark.parametrize("cut", ["empty", "truncated"])
def test_a_damaged_file_fails_readably(trained: Trained, saved: Path, cut: str) -> None:
    path = saved / MAIN_FILE[trained.flavor]
    data = path.read_bytes()
    path.write_bytes(b"" if cut == "empty" else data[: len(data) // 2])
    with pytest.raises(InvalidInput) as caught:
        load(trained, saved, timeout=120)
    message = caught.value.message
    assert MAIN_FILE[trained.flavor].split("/")[-1] in message or trained.flavor in message
    if cut == "empty":
        assert "empty" in message


def test_a_model_that_cannot_answer_its_example_is_not_saved(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="could not predict its input_example"):
        save_model(flavor_models.Doubler(), tmp_path, input_example=[{"city": "Oslo"}])
    assert list(tmp_path.iterdir()) == []


def test_saving_over_a_saved_model_is_refused(trained: Trained, saved: Path) -> None:
    with pytest.raises(Conflict):
        save_model(trained.model, saved)


# What every load checks before a flavor runs


def test_a_directory_without_mlmodel_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"no MLmodel\.json"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "MLmodel.json is not valid"),
        ('{"flavor": "sklearn"}', "files"),
        ('{"flavor": "sklearn", "files": ["../../etc/passwd"]}', "not a relative path"),
        ('{"flavor": "cobol", "files": []}', "unknown flavor 'cobol'"),
    ],
)
def test_junk_mlmodel_json_is_refused(tmp_path: Path, document: str, message: str) -> None:
    (tmp_path / "MLmodel.json").write_text(document)
    with pytest.raises(InvalidInput, match=message):
        load_model(tmp_path)


def test_importing_the_flavors_imports_no_heavy_library() -> None:
    code = (
        "import sys, plinth.registry.flavors, plinth.registry.signature\n"
        "heavy = {'torch', 'tensorflow', 'keras', 'onnxruntime', 'onnx', 'sklearn', 'pandas'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# scikit-learn: skops with an allow-list


def test_sklearn_save_refuses_a_type_outside_the_allow_list(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    frame, target = iris()
    pipeline = make_pipeline(flavor_models.NotAllowListed(), LogisticRegression(max_iter=500))
    pipeline.fit(frame, target)
    with pytest.raises(InvalidInput, match=r"NotAllowListed.*flavor='python'"):
        save_model(pipeline, tmp_path)
    assert not (tmp_path / "model.skops").exists()


def test_sklearn_load_refuses_an_untrusted_type(tmp_path: Path) -> None:
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    frame, target = iris()
    save_model(LogisticRegression(max_iter=500).fit(frame, target), tmp_path)
    swapped = make_pipeline(flavor_models.NotAllowListed(), LogisticRegression())
    skops.io.dump(swapped, tmp_path / "model.skops")
    with pytest.raises(PermissionDenied, match=r"not trusted.*flavor_models\.NotAllowListed"):
        load_model(tmp_path)
    # Listing the type as trusted in MLmodel.json does not help: the allow-list is code.
    document = json.loads((tmp_path / "MLmodel.json").read_text())
    document["flavor_options"]["trusted_types"] = ["tests.registry.flavor_models.NotAllowListed"]
    (tmp_path / "MLmodel.json").write_text(json.dumps(document))
    with pytest.raises(PermissionDenied, match="NotAllowListed"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("sklearn.linear_model.LogisticRegression", True),
        ("numpy.log1p", True),
        ("numpy.float64", True),
        ("numpy.load", False),
        ("numpy.memmap", False),
        ("numpy.lib.npyio.NpzFile", False),
        ("scipy.io.loadmat", False),
        ("builtins.eval", False),
        ("os.system", False),
        ("sklearn", False),
        ("sklearn.no_such_module.Thing", False),
    ],
)
def test_the_skops_allow_list(name: str, allowed: bool) -> None:
    assert allowed_type(name) is allowed


# python: pickle only when allowed


def test_a_pickle_is_never_loaded_without_allow_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    directory = tmp_path / "model"
    meta = save_model(flavor_models.CreatesFileOnLoad(marker), directory)
    assert meta.flavor == "python" and meta.unsafe_pickle
    with pytest.raises(PermissionDenied, match="unsafe_pickle"):
        load_model(directory)
    # MLmodel.json edited to say "no pickle": the flavor's own needs_pickle still holds.
    document = json.loads((directory / "MLmodel.json").read_text())
    (directory / "MLmodel.json").write_text(json.dumps(document | {"unsafe_pickle": False}))
    with pytest.raises(PermissionDenied, match="unsafe_pickle"):
        load_model(directory)
    assert not marker.exists()


@pytest.mark.parametrize(("flavor", "name"), [("sklearn", "model.skops"), ("onnx", "model.onnx")])
def test_a_pickle_disguised_as_another_flavor_is_not_unpickled(
    tmp_path: Path, flavor: str, name: str
) -> None:
    marker = tmp_path / "pwned"
    directory = tmp_path / "model"
    save_model(flavor_models.CreatesFileOnLoad(marker), directory)
    (directory / "model.pkl").rename(directory / name)
    document = {"flavor": flavor, "files": [name], "flavor_options": {}}
    (directory / "MLmodel.json").write_text(json.dumps(document))
    with pytest.raises(InvalidInput):
        load_model(directory)
    assert not marker.exists()


def test_allow_pickle_does_load_it(tmp_path: Path) -> None:
    """The control for the two tests above: this pickle really does write its file."""
    marker = tmp_path / "pwned"
    save_model(flavor_models.CreatesFileOnLoad(marker), tmp_path / "model")
    with pytest.raises(InvalidInput):  # it unpickles to None, which cannot predict
        load_model(tmp_path / "model", allow_pickle=True)
    assert marker.exists()


# pytorch: an installed class, exact weights, no code from the model's files


def test_pytorch_refuses_a_class_from_main(tmp_path: Path) -> None:
    import torch

    main_class = type("Net", (torch.nn.Module,), {"__module__": "__main__"})
    with pytest.raises(InvalidInput, match="__main__"):
        save_model(main_class(), tmp_path)

    class Local(torch.nn.Module):
        pass

    with pytest.raises(InvalidInput, match="importable"):
        save_model(Local(), tmp_path)


def tamper(directory: Path, **flavor_options: Any) -> None:
    document = json.loads((directory / "MLmodel.json").read_text())
    document["flavor_options"].update(flavor_options)
    (directory / "MLmodel.json").write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"class_path": "os:system"}, "not a torch.nn.Module class"),
        ({"class_path": "no_such_package_here:Net"}, "cannot be imported"),
        ({"class_path": "TinyNet"}, "is not 'package.module:ClassName'"),
        ({"init_kwargs": {"features": 5}}, "does not fit"),
    ],
)
def test_pytorch_load_refuses_what_does_not_fit(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    save_model(flavor_models.TinyNet(), tmp_path)
    tamper(tmp_path, **options)
    with pytest.raises(InvalidInput, match=message):
        load_model(tmp_path)


def test_pytorch_never_imports_code_from_the_model_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model(flavor_models.TinyNet(), tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "shipped_code.py").write_text(f"open({str(marker)!r}, 'w')\nNet = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tamper(tmp_path, class_path="shipped_code:Net")
    with pytest.raises(InvalidInput, match="model's own files"):
        load_model(tmp_path)
    assert not marker.exists()
    assert "shipped_code" not in sys.modules


def test_a_load_that_hangs_hits_the_timeout(tmp_path: Path) -> None:
    flavor_models.RELEASE.set()
    model = flavor_models.HangsOnInit()
    flavor_models.RELEASE.clear()
    save_model(model, tmp_path)
    try:
        with pytest.raises(ServiceUnavailable, match=r"did not finish within 0\.5 s"):
            load_model(tmp_path, timeout=0.5)
    finally:
        flavor_models.RELEASE.set()  # lets the abandoned load thread end


# keras / tensorflow


def test_keras_safe_mode_refuses_a_lambda_layer(
    tf_models: dict[str, Trained], tmp_path: Path
) -> None:

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    save_model(model, tmp_path)
    with pytest.raises(InvalidInput, match="safe_mode"):
        load_model(tmp_path)


def test_a_saved_model_without_a_serving_signature_is_refused(
    tf_models: dict[str, Trained], tmp_path: Path
) -> None:
    import tensorflow as tf

    with pytest.raises(InvalidInput, match="no 'serving_default' signature"):
        save_model(tf.Module(), tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-saved is left behind


def _as_tensorflow_flavor(directory: Path) -> Path:
    """MLmodel.json beside a SavedModel written by TensorFlow itself (not save_model,
    whose own load would refuse it), as the tensorflow flavor describes one."""
    root = directory / "saved_model"
    files = sorted(p.relative_to(directory).as_posix() for p in root.rglob("*") if p.is_file())
    options = {"format": "saved_model", "signature_key": "serving_default"}
    write_meta(directory, ModelMeta(flavor="tensorflow", files=files, flavor_options=options))
    return directory


@pytest.mark.parametrize(
    ("reach", "named"),
    [
        ("read", "ReadFile"),
        ("write in a loop", "WriteFile (in while_body"),  # a function the graph calls
        ("print to a file", "PrintV2 to 'file://"),
    ],
)
def test_a_saved_model_whose_graph_reaches_the_servers_files_is_refused(
    tf_models: dict[str, Trained], tmp_path: Path, reach: str, named: str
) -> None:
    """No Python in a SavedModel, but ops that read or write any path when it runs:
    refused before TensorFlow loads it, and so before save_model's own check too."""
    import tensorflow as tf

    secret, written = tmp_path / "secret.txt", tmp_path / "written.txt"
    secret.write_text("the server's secret")

    class Reaches(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            if reach == "read":
                size = tf.strings.length(tf.io.read_file(str(secret)))
                return {"y": x + tf.cast(size, tf.float32)}
            if reach == "write in a loop":

                def body(i: Any) -> Any:
                    tf.io.write_file(str(written), "pwned")
                    return i + 1

                tf.while_loop(lambda i: i < 1, body, [0])
            else:
                tf.print(x, output_stream=f"file://{written}")
            return {"y": x}

    module = Reaches()
    tf.saved_model.save(module, str(tmp_path / "m" / "saved_model"), signatures=module.serve)
    with pytest.raises(PermissionDenied, match=re.escape(named)) as refused:
        load_model(_as_tensorflow_flavor(tmp_path / "m"))
    assert "read or write files" in refused.value.message
    with pytest.raises(PermissionDenied, match=re.escape(named)):
        save_model(module, tmp_path / "saved")
    assert list((tmp_path / "saved").iterdir()) == []  # nothing half-saved is left behind
    assert not written.exists()


def test_a_saved_model_keras_exported_loads_and_predicts(
    tf_models: dict[str, Trained], tmp_path: Path
) -> None:
    """An ordinary model's SavedModel holds the saver's own SaveV2 and RestoreV2
    functions: they are not reached from the model's objects, so it still loads."""
    keras_case = tf_models["keras"]
    keras_case.model.export(str(tmp_path / "m" / "saved_model"), verbose=False)
    model = load_model(_as_tensorflow_flavor(tmp_path / "m"))
    rows = np.asarray(keras_case.payload, dtype=np.float32)
    np.testing.assert_allclose(model.predict(rows), keras_case.expected, rtol=1e-5)


# onnx


def test_onnx_saves_from_a_path_and_reads_the_signature_from_the_graph(tmp_path: Path) -> None:
    import onnx

    source = tmp_path / "exported.onnx"
    onnx.save_model(train_onnx().model, source)
    meta = save_model(source, tmp_path / "model")
    assert meta.flavor == "onnx" and meta.signature is not None
    assert [(s.name, s.dtype, s.shape) for s in meta.signature.inputs] == [
        ("x", "float32", [-1, 4])
    ]
    source.write_bytes(source.read_bytes()[:100])
    with pytest.raises(InvalidInput, match="not a valid ONNX model"):
        save_model(source, tmp_path / "truncated")


def test_an_mlflow_models_mlmodel_is_read_as_data() -> None:
    """MLflow's ``MLmodel`` (YAML): skops sklearn is Plinth's safe sklearn flavor with
    MLflow's trusted types; anything else needs pickle; junk is refused, never built."""
    from plinth.registry.flavors.meta import meta_from_mlflow

    skops = meta_from_mlflow(
        b"flavors:\n  sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n"
        b"    skops_trusted_types: [sklearn.tree._tree.Tree]\n"
    )
    assert (skops.flavor, skops.files, skops.unsafe_pickle) == ("sklearn", ["model.skops"], False)
    assert skops.flavor_options == {"trusted_types": ["sklearn.tree._tree.Tree"]}
    pickled = meta_from_mlflow(b"flavors:\n  sklearn: {pickled_model: model.pkl}\n")
    assert (pickled.flavor, pickled.unsafe_pickle) == ("mlflow", True)
    for junk in (
        b"flavors: [unclosed",
        b"just text",
        b"flavors: {}",
        b"\xff\xfe",
        b"!!python/object/apply:os.system ['true']",  # a tag that builds objects: refused
        b"flavors:\n  sklearn: {serialization_format: skops, pickled_model: model.skops,"
        b" skops_trusted_types: 3}\n",
    ):
        with pytest.raises(InvalidInput):
            meta_from_mlflow(junk)
