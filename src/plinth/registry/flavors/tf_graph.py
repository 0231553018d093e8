"""What a TensorFlow SavedModel may run, checked on its ``saved_model.pb`` (parsed as a
protobuf, never executed) before TensorFlow loads it.

A SavedModel holds no Python, but its graph may hold ops that reach the server's files
or network when the model loads or answers: ``ReadFile`` of any path, ``WriteFile``,
checkpoint ``Save``/``Restore`` ops, readers and datasets over files, ``PrintV2`` to a
``file://`` stream, a summary writer. Refused here are the functions the loader wires
into the model's objects (every function the object graph names: methods, signatures,
resource initializers, saveable callbacks) and all they call, if they use one of the
ops below.

Why a deny-list rather than an allow-list of ops: an ordinary Keras or tf.Module graph
uses hundreds of math, array and control-flow ops that change with every TensorFlow
release, so an allow-list would refuse good models after each upgrade; the ops that
touch files, processes or the network form a small family, named below by name and by
prefix (``Experimental`` and ``V2``-style suffixes are stripped first). The saver's own
``_traced_save``/``_traced_restore`` functions (SaveV2, RestoreV2 on the SavedModel's
``variables/``) are not reached from the object graph: TensorFlow 2's loader restores
variables with its own ops, and never runs them. Reading a lookup table from a text
file (``InitializeTableFromTextFile``) is refused too: its path is a tensor the graph
may point anywhere; give the vocabulary as a constant (``KeyValueTensorInitializer``).
A TensorFlow 1 SavedModel (no object graph) is refused: loading it runs its graph's own
restore and init ops.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from plinth.errors import InvalidInput, PermissionDenied

# Ops (base names) that read, write or list files, start processes or reach the network.
DENIED_OPS = frozenset(
    {
        # files, whole
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "DeleteFile",
        "ImmutableConst",  # memory-maps a file named in an attribute
        # checkpoints
        "Save",
        "SaveSlices",
        "Restore",
        "RestoreSlice",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "ShardedFilespec",
        "LoadAndRemapMatrix",
        "GenerateVocabRemapping",
        # lookup tables filled from a file
        "InitializeTableFromTextFile",
        # datasets that read or write files, or reach another process
        "TFRecordDataset",
        "FixedLengthRecordDataset",
        "TextLineDataset",
        "MatchingFilesDataset",
        "CSVDataset",
        "LMDBDataset",
        "SqlDataset",
        "LoadDataset",
        "SaveDataset",
        "DistributedSave",
        "CacheDataset",
        "SnapshotDataset",
        "SnapshotChunkDataset",
        "ListSnapshotChunksDataset",
        "DatasetFromGraph",  # runs a GraphDef given as a tensor: any op at all
        "DatasetToTFRecord",
        "RegisterDataset",
        # summaries written to disk or a database
        "CreateSummaryFileWriter",
        "CreateSummaryDbWriter",
        # Python callbacks and the process itself
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        "Abort",
    }
)
DENIED_PREFIXES = ("Debug", "DataService", "Rpc", "TryRpc")  # dumps to files; network
DENIED_SUFFIXES = ("Reader",)  # TFRecordReader, WholeFileReader, LMDBReader, …
PRINT_STREAMS = frozenset({"stderr", "stdout", "log(info)", "log(warning)", "log(error)"})
PROTO_SOURCES = frozenset({"", "local://"})  # where DecodeProtoV2 finds its descriptors
_VERSION = re.compile(r"V\d+$")


def check_saved_model(root: Path) -> None:
    """Refuse the SavedModel in ``root`` if a function it may run uses a denied op."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((root / "saved_model.pb").read_bytes())
    except DecodeError as exc:
        raise InvalidInput(f"saved_model.pb is not a SavedModel: {exc}") from None
    if len(proto.meta_graphs) != 1 or not proto.meta_graphs[0].HasField("object_graph_def"):
        raise PermissionDenied(
            "a TensorFlow 1 SavedModel (no object graph) is not served: loading it runs its "
            "graph's own ops; save the model again with tf.saved_model.save in TensorFlow 2"
        )
    meta = proto.meta_graphs[0]
    for asset in meta.asset_file_def:
        _check_asset(asset.filename)
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    found = sorted(
        {
            f"{problem} (in {name})"
            for name in _reached(_entry_functions(meta.object_graph_def), library)
            for node in library[name].node_def
            if (problem := _denied(node)) is not None
        }
    )
    if found:
        raise PermissionDenied(
            "the SavedModel's graph uses ops that read or write files, or reach beyond "
            f"the model, when it loads or runs: {', '.join(found[:5])}; refusing to load it"
        )


def _check_asset(filename: str) -> None:
    path = PurePosixPath(filename)
    if not filename or path.is_absolute() or ".." in path.parts or "\\" in filename:
        raise PermissionDenied(f"the SavedModel names an asset outside its assets/: {filename!r}")


def _entry_functions(object_graph: Any) -> set[str]:
    """Every function the loader attaches to the model's objects."""
    names: set[str] = set()
    for node in object_graph.nodes:
        kind = node.WhichOneof("kind")
        if kind == "function":
            names.update(node.function.concrete_functions)
        elif kind == "bare_concrete_function":
            names.add(node.bare_concrete_function.concrete_function_name)
    names.update(object_graph.concrete_functions)
    return names


def _reached(entries: set[str], library: dict[str, Any]) -> set[str]:
    """``entries`` and every library function they call, however deep: a node whose
    op is a function, or any function-valued attribute (PartitionedCall's ``f``, the
    branches of If and Case, the body of While, a dataset's map function, …)."""
    seen: set[str] = set()
    todo = [name for name in entries if name in library]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in library[name].node_def:
            called = [node.op] if node.op in library else []
            called += list(_functions_in(node.attr.values()))
            todo.extend(f for f in called if f in library and f not in seen)
    return seen


def _functions_in(attrs: Any) -> Iterator[str]:
    for value in attrs:
        kind = value.WhichOneof("value")
        if kind == "func":
            yield value.func.name
            yield from _functions_in(value.func.attr.values())
        elif kind == "list":
            for func in value.list.func:
                yield func.name
                yield from _functions_in(func.attr.values())


def _denied(node: Any) -> str | None:
    """What is wrong with one node, or None."""
    op = node.op
    if op == "PrintV2":
        stream = node.attr["output_stream"].s.decode(errors="replace")
        return None if stream in PRINT_STREAMS else f"PrintV2 to {stream!r}"
    if op in ("DecodeProtoV2", "EncodeProto"):
        source = node.attr["descriptor_source"].s.decode(errors="replace")
        return None if source in PROTO_SOURCES else f"{op} reading {source!r}"
    base = _VERSION.sub("", op.removeprefix("Experimental"))
    if (
        base in DENIED_OPS
        or base.startswith(DENIED_PREFIXES)
        or base.endswith(DENIED_SUFFIXES)
        or op.startswith(DENIED_PREFIXES)
    ):
        return op
    return None
