"""The control plane's hands: make what runs match what the database says.

``reconcile`` brings one deployment's replicas to its spec: starts the missing ones,
restarts a crashed one with exponential back-off, pushes a new config (weights,
shadow, versions) to running replicas without restarting them, stops the extra ones
and every replica of a deployment that is gone. The replicas' pids and states live in
``deployment_replicas``, so a restarted Plinth server adopts replicas still running
and restarts the others. It runs at the app's start, every second (``tick``, which
also autoscales), and after each change the service commits.

The files of each version a deployment serves are fetched once into the home's cache
(``serving/models``) and linked (or copied) read-only into the deployment's own folder
(``versions/N``), checked against the version's digest first: a damaged cache is
fetched again, and a replica that stops has its deployment's versions checked, so that
damaged files are linked afresh before it starts again. On a server with sign-in
(and ``compute.local_sandbox``, as for jobs) replicas run in the jobs' sandbox, which
compute's dispatcher hands over (``use_sandbox``; runtime.py); one whose sandbox cannot
be made is ``failed``, and the deployment's history says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from plinth.core.access import Principal
from plinth.core.platform import Platform
from plinth.errors import DigestMismatch
from plinth.registry.manifest import check_directory, manifest_digest
from plinth.registry.service import RegistryService
from plinth.serving import autoscaler
from plinth.serving import schemas as s
from plinth.serving import tables as t
from plinth.serving.runtime import (
    LocalProcessRuntime,
    MemoryRuntime,
    ReplicaPlan,
    ReplicaRuntime,
    ReplicaStartError,
    Sandbox,
    prepare_folder,
)

log = logging.getLogger("plinth.serving")
SYSTEM = Principal(name="plinth-supervisor", is_admin=True)
CLAIM_SECONDS = 30.0  # a replica being started by another supervisor is left alone this long
FAILED = "replica-failed"  # the history's entry for a replica that could not start


def backoff(restarts: int) -> float:
    """Seconds before the next start of a replica that crashed ``restarts`` times."""
    return float(min(60.0, 0.5 * 2 ** max(0, restarts - 1)))


class DeploymentSupervisor:
    def __init__(self, platform: Platform, *, registry: RegistryService) -> None:
        self.db = platform.db
        self.projects = platform.projects
        self.registry = registry
        self.settings = platform.settings
        self.root = platform.settings.home / "serving"
        self._signed_in = False  # once on, sign-in never turns off
        # the jobs' sandbox, handed over by compute's dispatcher (use_sandbox)
        self.sandbox: Sandbox | None = None
        self.runtimes: dict[str, ReplicaRuntime] = {
            "local": LocalProcessRuntime(),
            "memory": MemoryRuntime(),
        }
        self._lock = threading.RLock()

    # entry points ----------------------------------------------------------------------

    def start(self) -> None:
        """At the app's start: adopt or restart every deployment's replicas."""
        self.tick(autoscale=False)

    def tick(self, autoscale: bool = True) -> None:
        for deployment_id in self._all_ids():
            self.follow(deployment_id, autoscale=autoscale)

    def follow(self, deployment_id: str, *, autoscale: bool = False) -> None:
        """Bring one deployment's replicas to its spec. A failure (a full disk, a blob
        store away) is logged and the next tick tries again: it never stalls the other
        deployments, nor turns a change already committed into an error."""
        try:
            self.reconcile(deployment_id)
            if autoscale:
                self.autoscale(deployment_id)
        except Exception:
            log.exception("supervising deployment %s failed", deployment_id)

    def stop_all(self) -> None:
        """Stop every replica this home runs (a served Plinth server's shutdown)."""
        for deployment_id in self._all_ids():
            with self._lock:
                row = self._deployment(deployment_id)
                if row is not None:
                    self._stop_extra(self._plan(row, materialize=False), row.runtime, 0)

    # one deployment --------------------------------------------------------------------

    def reconcile(self, deployment_id: str) -> None:
        with self._lock:
            row = self._deployment(deployment_id)
            if row is None:
                self._forget(deployment_id)
                return
            spec = s.DeploymentSpec.model_validate_json(row.spec)
            plan = self._plan(row)
            for replica in range(spec.replicas):
                self._keep(plan, row.runtime, replica)
            self._stop_extra(plan, row.runtime, spec.replicas)

    def autoscale(self, deployment_id: str) -> None:
        row = self._deployment(deployment_id)
        if row is None:
            return
        spec = s.DeploymentSpec.model_validate_json(row.spec)
        if spec.min_replicas == spec.max_replicas:
            return
        runtime = self.runtimes[row.runtime]
        plan = self._plan(row, materialize=False)
        seen = [runtime.metrics(plan, r) for r in range(spec.replicas)]
        loads = [v for v in (autoscaler.in_flight(m) for m in seen if m) if v is not None]
        wanted = autoscaler.decide(spec.replicas, loads, spec.min_replicas, spec.max_replicas)
        if wanted != spec.replicas:
            self._set_replicas(deployment_id, spec, wanted)
            self.reconcile(deployment_id)

    def replica_metrics(self, deployment_id: str) -> list[str | None]:
        """Each ready replica's Prometheus text (None where one did not answer), read
        through the deployment's runtime. The caller checks who may see it."""
        row = self._deployment(deployment_id)
        if row is None:
            return []
        plan = self._plan(row, materialize=False)  # addresses only: no model files
        ready = [r.replica for r in self.replicas(row.id) if r.state == "ready"]
        return [self.runtimes[row.runtime].metrics(plan, replica) for replica in ready]

    def replicas(self, deployment_id: str) -> list[s.Replica]:
        r = t.deployment_replicas
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(r).where(r.c.deployment_id == deployment_id).order_by(r.c.replica)
            ).all()
        return [
            s.Replica(
                replica=x.replica,
                pid=x.pid,
                state=x.state,
                restarts=x.restarts,
                started_at=x.started_at,
            )
            for x in rows
        ]

    # replicas --------------------------------------------------------------------------

    def _keep(self, plan: ReplicaPlan, runtime_name: str, replica: int) -> None:
        runtime = self.runtimes[runtime_name]
        row = self._replica(plan.deployment_id, replica)
        now = time.time()
        if row is None:
            if self._claim_new(plan.deployment_id, replica, now):
                self._launch(plan, runtime_name, replica, restarts=0)
            return
        state = runtime.status(plan, replica, row.pid)
        if state == "stale":
            state = "ready" if runtime.apply_config(plan, replica) else "starting"
        if state != "gone":
            if state != row.state:
                self._update(plan.deployment_id, replica, state=state)
            return
        claimed = row.state == "starting" and row.pid is None
        if claimed and now - (row.started_at or 0) < CLAIM_SECONDS:
            return  # another supervisor is starting it
        if row.state in ("starting", "ready"):  # it ran, and is gone: a crash
            restarts = row.restarts + 1
            self._update(
                plan.deployment_id,
                replica,
                state="crashed",
                pid=None,
                restarts=restarts,
                next_start_at=now + backoff(restarts),
            )
            log.warning("replica %s of deployment %s stopped", replica, plan.deployment_id)
            self._drop_damaged(plan)  # refused its files? they are linked afresh
            return
        if (row.next_start_at or 0) <= now and self._claim_restart(row, now):
            self._launch(plan, runtime_name, replica, restarts=row.restarts)

    def _launch(self, plan: ReplicaPlan, runtime_name: str, replica: int, restarts: int) -> None:
        runtime = self.runtimes[runtime_name]
        try:
            if runtime_name == "local" and self._sandboxed():
                if self.sandbox is None:
                    raise ReplicaStartError(
                        "replicas of a server with sign-in run in a sandbox, and none was given"
                    )
                hidden = self.sandbox.server_paths()
                plan = dataclasses.replace(plan, sandbox=self.sandbox, hidden=hidden)
            pid = runtime.start(plan, replica)
        except ReplicaStartError as exc:
            self._failed(plan.deployment_id, replica, restarts + 1, exc.message)
            return
        state = "starting" if pid is not None else runtime.status(plan, replica, None)
        self._update(plan.deployment_id, replica, pid=pid, state=state, restarts=restarts)

    def use_sandbox(self, sandbox: Sandbox) -> None:
        """Run local replicas in ``sandbox`` where they must (compute gives it)."""
        self.sandbox = sandbox

    def _sandboxed(self) -> bool:
        """Whether a local replica runs in the sandbox, by the jobs' rule (the
        dispatcher's ``_sandboxed``): on a server with sign-in, unless
        ``compute.local_sandbox`` is off."""
        return self.settings.compute.local_sandbox and self._auth_enabled()

    def _auth_enabled(self) -> bool:
        """Whether the server has sign-in: a user exists (governance's table, read by
        name: serving may not import governance, which imports serving)."""
        if not self._signed_in:
            users = sa.table("users")
            with self.db.read() as conn:
                found = conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()
            self._signed_in = bool(found)
        return self._signed_in

    def _failed(self, deployment_id: str, replica: int, restarts: int, why: str) -> None:
        """A replica that could not start at all: ``failed``, tried again after the
        back-off; the reason is logged and, once, written in the deployment's history."""
        now = time.time()
        self._update(
            deployment_id,
            replica,
            state="failed",
            pid=None,
            restarts=restarts,
            next_start_at=now + backoff(restarts),
        )
        log.error("replica %s of deployment %s cannot start: %s", replica, deployment_id, why)
        ev = t.deployment_events
        with self.db.write() as conn:
            last = conn.execute(
                sa.select(ev.c.action, ev.c.reason)
                .where(ev.c.deployment_id == deployment_id)
                .order_by(ev.c.id.desc())
                .limit(1)
            ).first()
            spec = conn.execute(
                sa.select(t.deployments.c.spec).where(t.deployments.c.id == deployment_id)
            ).scalar()
            if spec is None or (last is not None and tuple(last) == (FAILED, why)):
                return
            values = {"deployment_id": deployment_id, "action": FAILED, "before": spec}
            values |= {"after": spec, "actor": SYSTEM.name, "at": now, "reason": why}
            conn.execute(ev.insert(), values)

    def _stop_extra(self, plan: ReplicaPlan, runtime_name: str, keep: int) -> None:
        runtime = self.runtimes[runtime_name]
        r = t.deployment_replicas
        for row in self._replica_rows(plan.deployment_id):
            if row.replica >= keep:
                runtime.stop(plan, row.replica, row.pid)
                with self.db.write() as conn:
                    conn.execute(
                        r.delete().where(
                            r.c.deployment_id == plan.deployment_id, r.c.replica == row.replica
                        )
                    )

    def _forget(self, deployment_id: str) -> None:
        """Stop the replicas of a deployment that was deleted."""
        rows = self._replica_rows(deployment_id)
        if not rows:
            return
        directory = self.root / "deployments" / deployment_id
        plan = ReplicaPlan(deployment_id, 0, "", {"generation": -1}, directory)
        for runtime in self.runtimes.values():
            for row in rows:
                runtime.stop(plan, row.replica, row.pid)
        r = t.deployment_replicas
        with self.db.write() as conn:
            conn.execute(r.delete().where(r.c.deployment_id == deployment_id))
        shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(Exception):  # a socket folder not ours to enter: left
            shutil.rmtree(plan.socket_dir(), ignore_errors=True)

    # plans and model files -------------------------------------------------------------

    def _plan(self, row: Any, *, materialize: bool = True) -> ReplicaPlan:
        spec = s.DeploymentSpec.model_validate_json(row.spec)
        with self.db.read() as conn:
            project = self.projects.names(conn, {row.project_id})[row.project_id]
        directory = self.root / "deployments" / row.id
        versions = []
        for version in spec.versions():
            entry: dict[str, Any] = {"version": version, "allow_pickle": False}
            if materialize and row.runtime == "local":
                served, allow, digest = self._served(project, spec.model, version, directory)
                entry.update(directory=str(served), allow_pickle=allow, digest=digest)
            versions.append(entry)
        config = {
            "name": spec.model,
            "generation": row.generation,
            "versions": versions,
            "split": [{"version": e.version, "weight": e.weight} for e in spec.split],
            "shadow": None if spec.shadow is None else spec.shadow.version,
            "record_sample": spec.record_sample,
            "allowed_hosts": list(self.settings.server.allowed_hosts),  # read at start
            "device": spec.device,
        }
        return ReplicaPlan(row.id, row.port, row.secret, config, directory)

    def _served(
        self, project: str, name: str, version: int, directory: Path
    ) -> tuple[Path, bool, str]:
        """The version's files in the deployment's own ``directory`` (all that its
        replicas see of the home, in a sandbox), linked there read-only from the cache
        once the cache is found to match the digest (else fetched again, once); whether
        it may unpickle, and its digest."""
        cache, allow, digest = self._files(project, name, version)
        target = directory / "versions" / str(version)
        if (target / "MLmodel.json").is_file():
            return target, allow, digest
        what = f"version {version} of {name!r}"
        try:
            check_directory(cache, digest, what)
        except DigestMismatch:
            log.warning("%s: the cached files do not match its digest: fetching them again", what)
            shutil.rmtree(cache, ignore_errors=True)
            cache, allow, digest = self._files(project, name, version)
            check_directory(cache, digest, what)
        prepare_folder(directory)
        _link_tree(cache, target)
        return target, allow, digest

    def _drop_damaged(self, plan: ReplicaPlan) -> None:
        """Remove each version in the deployment's folder whose files no longer match
        its digest (a replica refuses them): the next start links them afresh from the
        cache, which is itself checked (and fetched again if damaged)."""
        versions = plan.directory / "versions"
        for entry in plan.config["versions"]:
            served, digest = entry.get("directory"), entry.get("digest")
            if not served or not digest or not Path(served).is_relative_to(versions):
                continue
            try:
                check_directory(Path(served), digest, f"version {entry['version']}")
            except DigestMismatch:
                log.warning("deployment %s: %s is damaged: removed", plan.deployment_id, served)
                shutil.rmtree(served, ignore_errors=True)
            except OSError:
                shutil.rmtree(served, ignore_errors=True)

    def _files(self, project: str, name: str, version: int) -> tuple[Path, bool, str]:
        """The version's files in the home's cache (a replica checks them against the
        digest before it loads them), whether it may unpickle, and its digest."""
        found = self.registry.get_version(project, name, version, principal=SYSTEM)
        directory = self.root / "models" / project / name / str(version)
        if (directory / "MLmodel.json").is_file():
            return directory, found.unsafe_pickle, found.digest
        files = self.registry.version_files(project, name, version, principal=SYSTEM)
        if manifest_digest(files) != found.digest:
            raise DigestMismatch(f"version {version} of {name!r}: its files do not match")
        with _filled(directory) as incoming:
            for f in files:
                _, chunks = self.registry.open_version_file(
                    project, name, version, f.path, principal=SYSTEM
                )
                target = incoming / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    for chunk in chunks:  # the replica checks the whole against the digest
                        out.write(chunk)
        return directory, found.unsafe_pickle, found.digest

    # database --------------------------------------------------------------------------

    def _all_ids(self) -> list[str]:
        d, r = t.deployments, t.deployment_replicas
        with self.db.read() as conn:
            live = set(conn.execute(sa.select(d.c.id)).scalars())
            live |= set(conn.execute(sa.select(r.c.deployment_id).distinct()).scalars())
        return sorted(live)

    def _deployment(self, deployment_id: str) -> Any:
        d = t.deployments
        with self.db.read() as conn:
            return conn.execute(sa.select(d).where(d.c.id == deployment_id)).first()

    def _replica_rows(self, deployment_id: str) -> list[Any]:
        r = t.deployment_replicas
        with self.db.read() as conn:
            return list(conn.execute(sa.select(r).where(r.c.deployment_id == deployment_id)))

    def _replica(self, deployment_id: str, replica: int) -> Any:
        r = t.deployment_replicas
        with self.db.read() as conn:
            return conn.execute(
                sa.select(r).where(r.c.deployment_id == deployment_id, r.c.replica == replica)
            ).first()

    def _claim_new(self, deployment_id: str, replica: int, now: float) -> bool:
        values = {"deployment_id": deployment_id, "replica": replica, "state": "starting"}
        try:
            with self.db.write() as conn:
                conn.execute(t.deployment_replicas.insert(), {**values, "started_at": now})
        except sa.exc.IntegrityError:
            return False  # another supervisor took it
        return True

    def _claim_restart(self, row: Any, now: float) -> bool:
        r = t.deployment_replicas
        with self.db.write() as conn:
            taken = conn.execute(
                r.update()
                .where(
                    r.c.deployment_id == row.deployment_id,
                    r.c.replica == row.replica,
                    r.c.state == row.state,
                    r.c.restarts == row.restarts,
                )
                .values(state="starting", pid=None, started_at=now)
            ).rowcount
        return bool(taken)

    def _update(self, deployment_id: str, replica: int, **values: Any) -> None:
        r = t.deployment_replicas
        if values.get("state") == "starting" and "pid" in values:
            values["started_at"] = time.time()
        with self.db.write() as conn:
            conn.execute(
                r.update()
                .where(r.c.deployment_id == deployment_id, r.c.replica == replica)
                .values(**values)
            )

    def _set_replicas(self, deployment_id: str, spec: s.DeploymentSpec, wanted: int) -> None:
        """Change the replica count only, on the spec as it is now: a promote or a
        rollback committed while the metrics were read is kept, never written over."""
        d = t.deployments
        with self.db.write() as conn:
            row = conn.execute(sa.select(d).where(d.c.id == deployment_id)).first()
            if row is None:
                return
            now = s.DeploymentSpec.model_validate_json(row.spec)
            if now.replicas != spec.replicas:  # someone scaled meanwhile: theirs stands
                return
            spec, changed = now, now.model_copy(update={"replicas": wanted})
            written = conn.execute(
                d.update()
                .where(d.c.id == deployment_id, d.c.generation == row.generation)
                .values(spec=changed.model_dump_json(), updated_at=time.time())
            ).rowcount
            if written != 1:  # changed meanwhile: the next tick decides again
                return
            conn.execute(
                t.deployment_events.insert(),
                {
                    "deployment_id": deployment_id,
                    "action": "autoscale",
                    "before": spec.model_dump_json(),
                    "after": changed.model_dump_json(),
                    "actor": SYSTEM.name,
                    "at": time.time(),
                    "reason": f"{spec.replicas} -> {wanted} replicas on in-flight requests",
                },
            )


def _link_tree(source: Path, target: Path) -> None:
    """``source``'s files at ``target``, hard links where the file system allows (else
    copies), each file read-only (mode 0444, open to the replicas' user) and made
    whole before it appears under its name. Only plain files and folders: a link in
    the cache is refused."""
    with _filled(target) as incoming:
        for path in sorted(source.rglob("*")):
            placed = incoming / path.relative_to(source)
            if path.is_symlink():
                raise DigestMismatch(f"{path}: a link in the model cache")
            if path.is_dir():
                placed.mkdir(mode=0o755)
                continue
            try:
                os.link(path, placed)
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(path, placed)
            os.chmod(placed, 0o444)
        for folder in (incoming, *(p for p in incoming.rglob("*") if p.is_dir())):
            os.chmod(folder, 0o755)


@contextlib.contextmanager
def _filled(target: Path) -> Iterator[Path]:
    """A scratch folder beside ``target``, to fill; then it becomes ``target`` whole
    (where another supervisor placed it first, theirs is as good) or is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=target.parent))
    try:
        yield incoming
        try:
            incoming.rename(target)
        except OSError:
            if not (target / "MLmodel.json").is_file():
                raise
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
