"""The control plane's hands: make what runs match what the database says.

``reconcile`` brings one deployment's replicas to its spec: starts the missing ones,
restarts a crashed one with exponential back-off, pushes a new config (weights,
shadow, versions) to running replicas without restarting them, stops the extra ones
and every replica of a deployment that is gone. The replicas' pids and states live in
``deployment_replicas``, so a restarted Plinth server adopts replicas still running
and restarts the others. It runs at the app's start, every second (``tick``, which
also autoscales), and after each change the service commits.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from plinth.core.access import Principal
from plinth.core.platform import Platform
from plinth.errors import DigestMismatch
from plinth.registry.manifest import manifest_digest
from plinth.registry.service import RegistryService
from plinth.serving import autoscaler
from plinth.serving import schemas as s
from plinth.serving import tables as t
from plinth.serving.runtime import LocalProcessRuntime, MemoryRuntime, ReplicaPlan, ReplicaRuntime

log = logging.getLogger("plinth.serving")
SYSTEM = Principal(name="plinth-supervisor", is_admin=True)
CLAIM_SECONDS = 30.0  # a replica being started by another supervisor is left alone this long


def backoff(restarts: int) -> float:
    """Seconds before the next start of a replica that crashed ``restarts`` times."""
    return float(min(60.0, 0.5 * 2 ** max(0, restarts - 1)))


class DeploymentSupervisor:
    def __init__(self, platform: Platform, *, registry: RegistryService) -> None:
        self.db = platform.db
        self.projects = platform.projects
        self.registry = registry
        self.root = platform.settings.home / "serving"
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
                self._launch(plan, runtime, replica, restarts=0)
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
            return
        if (row.next_start_at or 0) <= now and self._claim_restart(row, now):
            self._launch(plan, runtime, replica, restarts=row.restarts)

    def _launch(
        self, plan: ReplicaPlan, runtime: ReplicaRuntime, replica: int, restarts: int
    ) -> None:
        pid = runtime.start(plan, replica)
        state = "starting" if pid is not None else runtime.status(plan, replica, None)
        self._update(plan.deployment_id, replica, pid=pid, state=state, restarts=restarts)

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

    # plans and model files -------------------------------------------------------------

    def _plan(self, row: Any, *, materialize: bool = True) -> ReplicaPlan:
        spec = s.DeploymentSpec.model_validate_json(row.spec)
        with self.db.read() as conn:
            project = self.projects.names(conn, {row.project_id})[row.project_id]
        versions = []
        for version in spec.versions():
            entry: dict[str, Any] = {"version": version, "allow_pickle": False}
            if materialize and row.runtime == "local":
                directory, allow, digest = self._files(project, spec.model, version)
                entry.update(directory=str(directory), allow_pickle=allow, digest=digest)
            versions.append(entry)
        config = {
            "name": spec.model,
            "generation": row.generation,
            "versions": versions,
            "split": [{"version": e.version, "weight": e.weight} for e in spec.split],
            "shadow": None if spec.shadow is None else spec.shadow.version,
            "record_sample": spec.record_sample,
            "device": spec.device,
        }
        directory = self.root / "deployments" / row.id
        return ReplicaPlan(row.id, row.port, row.secret, config, directory)

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
        directory.parent.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=directory.parent))
        try:
            for f in files:
                _, chunks = self.registry.open_version_file(
                    project, name, version, f.path, principal=SYSTEM
                )
                target = incoming / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    for chunk in chunks:  # the replica checks the whole against the digest
                        out.write(chunk)
            try:
                incoming.rename(directory)
            except OSError:  # another supervisor fetched it first: theirs is as good
                if not (directory / "MLmodel.json").is_file():
                    raise
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
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
