"""What a pipeline step's job runs: ``python -m plinth.pipelines.worker PROJECT RUN STEP``.

In the run's snapshot of the working directory, as the user who started the run: read
the step's resolved inputs from the server, fetch each (upstream outputs verified
against their digests, dataset versions pulled), import the step's function, call it,
and log what it returns as artifacts ``outputs/<i>/…`` of this job's tracked run
(``values.py`` says in which safe format). The exit status is the step's outcome.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from plinth.pipelines import dsl, values
from plinth.pipelines import schemas as s

ERROR_CHARS = 500


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m plinth.pipelines.worker PROJECT RUN STEP", file=sys.stderr)
        return 2
    project, run_id, name = argv
    dsl.IN_WORKER = True
    from plinth.client import Client

    client = Client()
    run = client.get_pipeline_run(project, run_id)
    step = run.step(name)
    if step.inputs is None:
        print(f"step {name} has no inputs resolved: it was not started", file=sys.stderr)
        return 2
    job_run = os.environ.get("PLINTH_RUN_ID")
    if job_run:
        client.log_batch(
            job_run,
            params={k: _param(v) for k, v in step.inputs.items() if v.kind == "value"},
            tags={
                "plinth.pipeline": run.name,
                "plinth.pipeline.run": run.id,
                "plinth.step": name,
                s.ERROR_TAG: "",  # an earlier attempt's error, if any, is not this one's
            },
        )
    work = Path(dsl.SCRATCH)
    shutil.rmtree(work, ignore_errors=True)
    function = dsl.load_function(step.function, Path.cwd())
    fn = function.fn if isinstance(function, dsl.Step) else function
    found = dsl.code_digest(fn, Path.cwd())
    if found != step.code_digest:
        print(
            f"step {name}: the code in this run's snapshot is not the code that was traced "
            f"(digest {found[:12]}, traced {step.code_digest[:12]}): a file changed between "
            "tracing and snapshotting, or the spec did not come from this snapshot. Run the "
            "pipeline again.",
            file=sys.stderr,
        )
        return 1
    kwargs = {
        arg: _fetch(client, project, arg, source, work) for arg, source in step.inputs.items()
    }
    print(f"step {name}: {step.function}({', '.join(kwargs)})", flush=True)
    started = time.perf_counter()
    try:
        result = fn(**kwargs)
    except BaseException as exc:  # the traceback goes to the log; the gist to the run
        if job_run:
            gist = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
            client.log_batch(job_run, tags={s.ERROR_TAG: gist})
        raise
    print(f"step {name}: returned in {time.perf_counter() - started:.2f} s", flush=True)
    results = (result,) if step.outputs == 1 else result
    if not isinstance(results, tuple | list) or len(results) != step.outputs:
        print(
            f"step {name} declares outputs={step.outputs} but returned "
            f"{type(result).__name__}: return a tuple of {step.outputs}",
            file=sys.stderr,
        )
        return 1
    out = work / "out"
    for i, value in enumerate(results):
        values.save(value, out / str(i), f"output {i} of step {name}")
    if job_run is None:
        print("PLINTH_RUN_ID is not set: this runs only as a pipeline step's job", file=sys.stderr)
        return 2
    client.log_artifacts(job_run, out, "outputs", progress=False)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _fetch(client: Any, project: str, arg: str, source: s.ResolvedInput, work: Path) -> Any:
    if source.kind == "value":
        return source.value
    if source.kind == "output":
        assert source.run_id is not None and source.path is not None
        folder = client.download_artifact(source.run_id, source.path, work / "in" / arg)
        if _folder_digest(folder) != source.digest:  # files added to that run since
            raise RuntimeError(
                f"argument {arg}: the output in run {source.run_id} under {source.path}/ is "
                "not what its step made (files were added to that run since)"
            )
        return values.load(folder)
    assert source.ref is not None
    dest = work / "data" / arg
    client.pull_dataset(project, source.ref, dest, progress=False)
    return dest.resolve()


def _folder_digest(folder: Path) -> str:
    """The manifest digest of the files under ``folder``, as the server computed its
    output's (paths relative to it)."""
    from plinth.core.blobs import file_digest, manifest_digest

    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        info = file_digest(path)
        files.append((path.relative_to(folder).as_posix(), info.digest, info.size))
    return manifest_digest(files)


def _param(value: s.ResolvedInput) -> str:
    import json

    return json.dumps(value.value)[:500]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
