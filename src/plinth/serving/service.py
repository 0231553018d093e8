"""Deployments, the control plane of serving: create one from a model version, move
traffic (canary, shadow, promote, rollback), scale it, read its status and history,
delete it. Editors change, viewers read, every change is audited and kept in the
deployment's history with the spec before and after; the supervisor then makes the
replicas match (supervisor.py).

Every model is named by a ``models:/`` URI, resolved to a version number here, when
the spec is written. A version that may not be served (archived, an unmarked pickle,
a flavor with no loader: ``registry/servable.py``) is refused; a deployment's port
must be free, of other deployments and of other programs on 127.0.0.1.
"""

from __future__ import annotations

import errno
import json
import logging
import secrets
import socket
import time
import uuid
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from plinth.core import lineage
from plinth.core.access import Need, Principal
from plinth.core.platform import Platform
from plinth.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from plinth.registry.aliases import AliasService
from plinth.registry.servable import check_servable
from plinth.registry.service import RegistryService
from plinth.registry.uri import parse
from plinth.serving import schemas as s
from plinth.serving import tables as t
from plinth.serving.record_pages import PageQuery, decode_cursor, encode_cursor, read_page
from plinth.serving.records import deployment_records_dir
from plinth.serving.supervisor import DeploymentSupervisor

log = logging.getLogger("plinth.serving")
FIND_PAGE = 1000
FIND_LIMIT = 1_000_000  # records a prediction's lookup reads at most
HISTORY_LIMIT = 1000
SPLIT_CHANGES = ("update", "promote", "rollback")


class DeploymentService:
    def __init__(
        self,
        platform: Platform,
        *,
        registry: RegistryService,
        aliases: AliasService,
        supervisor: DeploymentSupervisor,
    ) -> None:
        self.db = platform.db
        self.audit = platform.audit
        self.projects = platform.projects
        self.registry = registry
        self.aliases = aliases
        self.supervisor = supervisor

    # change -----------------------------------------------------------------------------

    def create_deployment(
        self, project: str, req: s.DeploymentCreate, *, principal: Principal
    ) -> s.Deployment:
        pinned = self._pin(project, req.model, None, principal)
        name = parse(req.model).name
        spec = s.DeploymentSpec(
            model=name,
            split=[s.SplitEntry(**pinned.model_dump(), weight=100)],
            replicas=req.replicas,
            min_replicas=req.min_replicas if req.min_replicas is not None else min(1, req.replicas),
            max_replicas=req.max_replicas if req.max_replicas is not None else max(1, req.replicas),
            record_sample=req.record_sample,
            device=req.device,
        )
        act = "deployments.create"
        with self.audit.recorded(principal, act, project=project, object=req.name) as (conn, ch):
            pid = self.projects.require(conn, project, principal, Need.WRITE, record=False)
            d = t.deployments
            taken = sa.select(d.c.id).where(d.c.project_id == pid, d.c.name == req.name)
            if conn.execute(taken).first() is not None:
                raise Conflict(f"project {project!r} has a deployment {req.name!r} already")
            port = self._port(conn, req.port)
            deployment_id, now = uuid.uuid4().hex, time.time()
            conn.execute(
                d.insert(),
                {
                    "id": deployment_id,
                    "project_id": pid,
                    "name": req.name,
                    "spec": spec.model_dump_json(),
                    "runtime": req.runtime,
                    "port": port,
                    "status": "active",
                    "generation": 1,
                    "secret": secrets.token_hex(32),
                    "created_at": now,
                    "updated_at": now,
                    "created_by": principal.name,
                },
            )
            self._event(conn, deployment_id, "create", None, spec, principal, req.reason)
            self._served(conn, project, pid, req.name, spec)
            ch.details = {"model": req.model, "version": pinned.version, "port": port}
        return self._applied(project, req.name, deployment_id, principal)

    def update_deployment(
        self, project: str, name: str, req: s.DeploymentUpdate, *, principal: Principal
    ) -> s.Deployment:
        """A canary with ``weight`` percent (the heaviest version keeps the rest), a
        shadow, or new replica bounds."""
        canary = None if req.canary is None else self._pin(project, req.canary, name, principal)
        shadow = None if req.shadow is None else self._pin(project, req.shadow, name, principal)

        def change(spec: s.DeploymentSpec) -> s.DeploymentSpec:
            spec = spec.model_copy(deep=True)
            if canary is not None and req.weight is not None:
                spec.split = _with_canary(spec.split, canary, req.weight)
            if shadow is not None or req.shadow_off:
                spec.shadow = shadow
            if req.min_replicas is not None:
                spec.min_replicas = req.min_replicas
            if req.max_replicas is not None:
                spec.max_replicas = req.max_replicas
            if req.record_sample is not None:
                spec.record_sample = req.record_sample
            _check_bounds(spec)
            return spec

        return self._change(project, name, "update", change, req.reason, principal)

    def promote_deployment(
        self, project: str, name: str, reason: str = "", *, principal: Principal
    ) -> s.Deployment:
        """The canary (the version added last) takes the whole split."""

        def change(spec: s.DeploymentSpec) -> s.DeploymentSpec:
            if len(spec.split) < 2:
                raise Conflict(f"deployment {name!r} has no canary to promote")
            canary = spec.split[-1].model_copy(update={"weight": 100})
            return spec.model_copy(update={"split": [canary]})

        return self._change(project, name, "promote", change, reason, principal)

    def rollback_deployment(
        self, project: str, name: str, reason: str = "", *, principal: Principal
    ) -> s.Deployment:
        """Back to the split and shadow before the last change of them."""
        holder: dict[str, Any] = {}

        def change(spec: s.DeploymentSpec) -> s.DeploymentSpec:
            before = holder["before"]
            if before is None:
                raise Conflict(f"deployment {name!r} has no change of its traffic to roll back")
            for pinned in [*before.split, *([before.shadow] if before.shadow else [])]:
                # archived (or unmarked unsafe_pickle) since: not back into service
                found = self.registry.get_version(
                    project, spec.model, pinned.version, principal=principal
                )
                check_servable(found)
            return spec.model_copy(update={"split": before.split, "shadow": before.shadow})

        return self._change(project, name, "rollback", change, reason, principal, holder)

    def scale_deployment(
        self, project: str, name: str, req: s.DeploymentScale, *, principal: Principal
    ) -> s.Deployment:
        def change(spec: s.DeploymentSpec) -> s.DeploymentSpec:
            if not spec.min_replicas <= req.replicas <= spec.max_replicas:
                raise InvalidInput(
                    f"replicas must lie between min ({spec.min_replicas}) and max "
                    f"({spec.max_replicas}): change them with update first"
                )
            return spec.model_copy(update={"replicas": req.replicas})

        return self._change(project, name, "scale", change, req.reason, principal)

    def delete_deployment(
        self, project: str, name: str, reason: str = "", *, principal: Principal
    ) -> None:
        act = "deployments.delete"
        with self.audit.recorded(principal, act, project=project, object=name) as (conn, _):
            row = self._require(conn, project, name, principal, Need.WRITE, record=False)
            spec = s.DeploymentSpec.model_validate_json(row.spec)
            conn.execute(t.deployments.delete().where(t.deployments.c.id == row.id))
            self._event(conn, row.id, "delete", spec, None, principal, reason)
        self.supervisor.follow(row.id)  # its replicas stop now (or at the next tick)

    # read -------------------------------------------------------------------------------

    def get_deployment(self, project: str, name: str, *, principal: Principal) -> s.Deployment:
        with self.db.read() as conn:
            row = self._require(conn, project, name, principal, Need.READ)
            return self._deployment(conn, project, row)

    def list_deployments(self, project: str, *, principal: Principal) -> list[s.Deployment]:
        d = t.deployments
        with self.db.read() as conn:
            pid = self.projects.require(conn, project, principal, Need.READ)
            rows = conn.execute(sa.select(d).where(d.c.project_id == pid).order_by(d.c.name)).all()
            return [self._deployment(conn, project, row) for row in rows]

    def deployment_history(
        self, project: str, name: str, *, principal: Principal
    ) -> list[s.DeploymentEvent]:
        """Every change of the deployment, newest first."""
        ev = t.deployment_events
        with self.db.read() as conn:
            row = self._require(conn, project, name, principal, Need.READ)
            rows = conn.execute(
                sa.select(ev)
                .where(ev.c.deployment_id == row.id)
                .order_by(ev.c.id.desc())
                .limit(HISTORY_LIMIT)
            ).all()
        return [_event(e) for e in rows]

    def deployment_records(
        self, project: str, name: str, query: s.RecordsQuery, *, principal: Principal
    ) -> s.PredictionRecords:
        """A page of the predictions the deployment's replicas recorded, newest first
        unless ``order`` is asc, read from its record files (record_pages.py)."""
        try:
            after = None if query.cursor is None else decode_cursor(query.cursor)
        except ValueError as exc:
            raise InvalidInput(f"query.cursor: {exc}") from None
        with self.db.read() as conn:
            row = self._require(conn, project, name, principal, Need.READ)
        wanted = PageQuery(
            limit=query.limit,
            since=query.since,  # a time without an offset is UTC
            version=None if query.version is None else str(query.version),
            shadow=query.shadow,
            newest_first=query.order == "desc",
            after=after,
        )
        directory = deployment_records_dir(self.supervisor.root, row.id)
        try:
            page = read_page(directory, wanted)
        except OSError as exc:  # the home's disk failing: try again, never a 500
            log.warning("reading the records of %s failed: %s", row.id, exc)
            raise ServiceUnavailable("the prediction records cannot be read now") from None
        records, skipped = [], page.skipped
        for record in page.records:
            try:
                records.append(_prediction(record))
            except ValidationError:  # a line that is JSON but not a record
                skipped += 1
        cursor = None if page.next is None else encode_cursor(page.next)
        return s.PredictionRecords(records=records, next_cursor=cursor, skipped=skipped)

    def find_prediction(
        self, project: str, name: str, prediction_id: str, *, principal: Principal
    ) -> s.PredictionRecord:
        """The record of one prediction (its ``X-Plinth-Prediction-Id``), searched from
        the newest back through at most ``FIND_LIMIT`` records; NotFound past that."""
        with self.db.read() as conn:
            row = self._require(conn, project, name, principal, Need.READ)
        directory = deployment_records_dir(self.supervisor.root, row.id)
        after, seen = None, 0
        while seen < FIND_LIMIT:
            try:
                page = read_page(directory, PageQuery(limit=FIND_PAGE, after=after))
            except OSError as exc:
                log.warning("reading the records of %s failed: %s", row.id, exc)
                raise ServiceUnavailable("the prediction records cannot be read now") from None
            for record in page.records:
                if record.get("prediction_id") == prediction_id:
                    try:
                        return _prediction(record)
                    except ValidationError:
                        break
            seen += len(page.records)
            if page.next is None:
                break
            after = page.next
        raise NotFound(
            f"deployment {name!r} has no record of prediction {prediction_id!r} among its "
            f"newest {FIND_LIMIT:,} (records are sampled and rotated)"
        )

    # shared -----------------------------------------------------------------------------

    def _change(
        self,
        project: str,
        name: str,
        action: str,
        change: Any,
        reason: str,
        principal: Principal,
        holder: dict[str, Any] | None = None,
    ) -> s.Deployment:
        with self.audit.recorded(
            principal, f"deployments.{action}", project=project, object=name
        ) as (conn, ch):
            row = self._require(conn, project, name, principal, Need.WRITE, record=False)
            before = s.DeploymentSpec.model_validate_json(row.spec)
            if holder is not None:
                holder["before"] = self._last_traffic(conn, row.id)
            after = change(before)
            d = t.deployments
            written = conn.execute(
                d.update()
                .where(d.c.id == row.id, d.c.generation == row.generation)  # no lost update
                .values(
                    spec=after.model_dump_json(),
                    generation=row.generation + 1,
                    updated_at=time.time(),
                )
            ).rowcount
            if written != 1:
                raise Conflict(f"deployment {name!r} changed meanwhile: read it again and retry")
            self._event(conn, row.id, action, before, after, principal, reason)
            self._served(conn, project, row.project_id, name, after)
            ch.details = {"split": [[e.version, e.weight] for e in after.split], "reason": reason}
            ch.details |= {"replicas": after.replicas}
        return self._applied(project, name, row.id, principal)

    def _served(
        self, conn: Connection, project: str, project_id: str, name: str, spec: s.DeploymentSpec
    ) -> None:
        """Lineage: each version the deployment serves (or shadows) → the deployment."""
        shadow = [spec.shadow] if spec.shadow is not None else []
        for entry in [*spec.split, *shadow]:
            lineage.record(
                self.db,
                conn,
                lineage.Node(f"models:/{project}/{spec.model}/{entry.version}", project_id),
                lineage.Node(f"deployments:/{project}/{name}", project_id),
                "served",
            )

    def _last_traffic(self, conn: Connection, deployment_id: str) -> s.DeploymentSpec | None:
        """The spec before the last change of the split or the shadow."""
        ev = t.deployment_events
        rows = conn.execute(
            sa.select(ev.c.before, ev.c.after)
            .where(ev.c.deployment_id == deployment_id, ev.c.action.in_(SPLIT_CHANGES))
            .order_by(ev.c.id.desc())
        )
        for before, after in rows:
            old = s.DeploymentSpec.model_validate_json(before)
            new = s.DeploymentSpec.model_validate_json(after)
            if (old.split, old.shadow) != (new.split, new.shadow):
                return old
        return None

    def _applied(
        self, project: str, name: str, deployment_id: str, principal: Principal
    ) -> s.Deployment:
        """After a change commits, the replicas follow; then the deployment as it is."""
        self.supervisor.follow(deployment_id)
        return self.get_deployment(project, name, principal=principal)

    def _pin(self, project: str, uri: str, model: str | None, principal: Principal) -> s.Pinned:
        """The version a URI names now; refused when it may not be served."""
        ref = parse(uri)
        if ref.project != project:
            raise InvalidInput(f"{uri}: a deployment serves models of its own project {project!r}")
        if model is not None:
            with self.db.read() as conn:
                current = self._require(conn, project, model, principal, Need.READ)
            expected = s.DeploymentSpec.model_validate_json(current.spec).model
            if ref.name != expected:
                raise InvalidInput(f"{uri}: deployment {model!r} serves model {expected!r}")
        if ref.alias is not None:
            found = self.aliases.get_alias(project, ref.name, ref.alias, principal=principal)
        else:
            assert ref.version is not None
            found = self.registry.get_version(project, ref.name, ref.version, principal=principal)
        check_servable(found, uri)
        return s.Pinned(uri=uri, version=found.version, run_id=found.run_id)

    def _require(
        self,
        conn: Connection,
        project: str,
        name: str,
        principal: Principal,
        need: Need,
        *,
        record: bool = True,
    ) -> Any:
        hidden = NotFound(f"no deployment {name!r} in project {project!r}")
        try:
            pid = self.projects.require(conn, project, principal, need, record=record)
        except NotFound:
            raise hidden from None
        d = t.deployments
        row = conn.execute(sa.select(d).where(d.c.project_id == pid, d.c.name == name)).first()
        if row is None:
            raise hidden
        return row

    def _port(self, conn: Connection, wanted: int | None) -> int:
        d = t.deployments
        used = set(conn.execute(sa.select(d.c.port)).scalars())
        if wanted is not None:
            if wanted in used:
                raise Conflict(f"port {wanted} is taken by another deployment")
            _check_port_free(wanted)
            return wanted
        for _ in range(20):
            port = _free_port()
            if port not in used:
                return port
        raise Conflict("no free port found for the deployment: pass one")

    def _event(
        self,
        conn: Connection,
        deployment_id: str,
        action: str,
        before: s.DeploymentSpec | None,
        after: s.DeploymentSpec | None,
        principal: Principal,
        reason: str,
    ) -> None:
        conn.execute(
            t.deployment_events.insert(),
            {
                "deployment_id": deployment_id,
                "action": action,
                "before": None if before is None else before.model_dump_json(),
                "after": None if after is None else after.model_dump_json(),
                "actor": principal.name,
                "at": time.time(),
                "reason": reason,
            },
        )

    def _deployment(self, conn: Connection, project: str, row: Any) -> s.Deployment:
        ev = t.deployment_events
        last = conn.execute(
            sa.select(ev).where(ev.c.deployment_id == row.id).order_by(ev.c.id.desc()).limit(1)
        ).first()
        spec = s.DeploymentSpec.model_validate_json(row.spec)
        return s.Deployment(
            project=project,
            name=row.name,
            url=f"http://127.0.0.1:{row.port}",
            port=row.port,
            runtime=row.runtime,
            status=row.status,
            generation=row.generation,
            model=spec.model,
            split=spec.split,
            shadow=spec.shadow,
            desired_replicas=spec.replicas,
            record_sample=spec.record_sample,
            device=spec.device,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            replicas=self.supervisor.replicas(row.id),
            created_at=row.created_at,
            updated_at=row.updated_at,
            created_by=row.created_by,
            last_change=None if last is None else _event(last),
        )


def _event(e: Any) -> s.DeploymentEvent:
    return s.DeploymentEvent(
        action=e.action,
        before=None if e.before is None else json.loads(e.before),
        after=None if e.after is None else json.loads(e.after),
        actor=e.actor,
        at=e.at,
        reason=e.reason,
    )


def _prediction(record: dict[str, Any]) -> s.PredictionRecord:
    version = record.get("version")
    if isinstance(version, str) and version.isdecimal():
        record["version"] = int(version)  # a deployment's versions are numbers
    return s.PredictionRecord.model_validate(record)


def _with_canary(split: list[s.SplitEntry], canary: s.Pinned, weight: int) -> list[s.SplitEntry]:
    """The heaviest other version keeps ``100 - weight``; the canary comes last."""
    others = [e for e in split if e.version != canary.version]
    if not others:
        raise InvalidInput(f"version {canary.version} is the whole split already: no canary")
    primary = max(others, key=lambda e: e.weight)
    return [
        primary.model_copy(update={"weight": 100 - weight}),
        s.SplitEntry(**canary.model_dump(), weight=weight),
    ]


def _check_bounds(spec: s.DeploymentSpec) -> None:
    if not spec.min_replicas <= spec.max_replicas:
        raise InvalidInput(f"min_replicas {spec.min_replicas} exceeds max {spec.max_replicas}")
    spec.replicas = max(spec.min_replicas, min(spec.max_replicas, spec.replicas))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check_port_free(port: int) -> None:
    """Refuse a port another program listens on: replicas bind it with SO_REUSEPORT,
    so they would fail, or share its traffic with the stranger. The probe binds without
    SO_REUSEPORT (any listener there refuses it) but with SO_REUSEADDR, so connections
    closed lately (TIME_WAIT) do not count as a listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            why = (
                "in use on 127.0.0.1 by another program"
                if exc.errno == errno.EADDRINUSE
                else f"not usable on 127.0.0.1 ({exc.strerror})"
            )
            raise Conflict(
                f"port {port} is {why}: choose another port, or leave it out to get a free one"
            ) from None
