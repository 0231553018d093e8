"""No input makes a 500, and batches are bounded.

The corpus test walks every route of the app and every string field each one takes
(path, query, header, JSON body, form), found from the routes and their schemas
rather than listed by hand, so a new route is covered the day it lands. Each awkward
string goes into each field of an otherwise plausible request: nothing may answer
5xx, text no store can keep is a 422, a refused request stores nothing, an accepted
write reads back exactly through the API, and the pages still render at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.params import Form
from fastapi.routing import APIRoute
from pydantic import SecretStr, TypeAdapter

import plinth
from plinth.api.auth import declared_permissions as _declared
from plinth.api.context import all_routes
from plinth.client import Client
from plinth.core import blobs
from plinth.core.access import Permission
from plinth.core.crypto import MasterKey
from plinth.core.db import metadata
from plinth.core.platform import Platform
from plinth.errors import Unprocessable
from plinth.server.app import create_app
from plinth.settings import ComputeSettings, TrackingSettings
from plinth.tracking import schemas as s
from plinth.tracking.client import chunk_id, split_batch
from plinth.ui.login import LOGIN_CSRF_COOKIE
from tests import services
from tests.conftest import make_settings, raw_http
from tests.registry.files import model_files

CORPUS: dict[str, str] = {
    "lone high surrogate": "\ud800",
    "lone low surrogate": "x\udfff",
    "swapped pair": "\udc00\ud800",
    "NUL": "a\x00b",
    "RTL and LTR marks": "\u200f\u05e9\u05dc\u05d5\u05dd\u200e abc",
    "bidi override": "\u202eexe.txt\u202c",
    "zero-width joiners": "a\u200db\u200cc\u2060d\ufeff",
    "emoji ZWJ sequence": "👩\u200d👩\u200d👧\u200d👦",
    "flags": "🇺🇦🏳️\u200d🌈",
    "combining marks": "e\u0301\u0308\u20dd",
    "leading combining mark": "\u0301\u0302",
    "NFC": "\u00e9",
    "NFD": "e\u0301",
    "compatibility forms": "\ufb01 \u216b \uff46\uff55\uff4c\uff4c",
    "astral plane": "𝕏𐍈",
    "noncharacters": "\ufffe\uffff",
    "CRLF": "one\r\ntwo\rthree\n",
    "percent-encoded NUL": "%00",
    "encoded traversal": "%2e%2e%2fetc",
    "markup": "<script>alert(1)</script>&amp;",
    "superscript digit": "\u00b2",  # str.isdigit() says yes, int() says no
    "1 MB": "x" * (1 << 20),
}
# On Postgres, the part of the corpus whose storage differs from SQLite's: what it
# cannot store (NUL, surrogates), what UTF-8 holds in four bytes or as noncharacters,
# what a collation might fold (NFD, compatibility forms), line ends and size. The rest
# (marks, joiners, markup) is plain text to either database and the same code above it.
ON_POSTGRES = (
    "lone high surrogate",
    "swapped pair",
    "NUL",
    "NFD",
    "compatibility forms",
    "astral plane",
    "noncharacters",
    "CRLF",
    "percent-encoded NUL",
    "1 MB",
)
URL_TEXT = 8192  # servers refuse longer URLs and headers (414, 431) before any route
KEY, VALUE, ITEM = "{key}", "{value}", "[]"  # steps into a dict's keys, values, a list
READS = {Permission.PUBLIC, Permission.PROJECT_READ, Permission.PLATFORM_READ}
NOT_RETURNED = ("password", "batch_id")  # stored, never shown: nothing to read back
# The audit trail repeats what requests named: a value must read back from its own place.
NOT_READ_BACK_FROM = {"/api/v1/audit"}
_MODELS = "/api/v1/projects/{project}/models/{name}"
# A later value replaces the earlier one (a description, a tag's value, the reason an
# alias was last set): only the last accepted value can read back.
REPLACED = {
    f"PATCH {_MODELS}/versions/{{version}}",
    f"PUT {_MODELS}/versions/{{version}}/tags/{{key}}",
    f"PUT {_MODELS}/aliases/{{alias}}",
    "POST /mlflow/api/2.0/mlflow/runs/set-tag",
    "POST /mlflow/api/2.0/mlflow/runs/log-batch",
    "PUT /api/v1/projects/{project}/datasets/{name}/rules",  # the rules, all replaced
}
# Registering the same files again answers the version they made: only the first
# accepted description (or tag) is kept.
# A dataset's versions are read at version 1 here, which the first accepted push made.
FIRST_KEPT = {
    f"POST {_MODELS}/versions",
    "POST /api/v1/projects/{project}/datasets/{name}/versions",
}
# Read back through MLflow's API only (tests/mlflow_api reads each back there): a model
# MLflow code makes by name before any version is in no project yet (Plinth's API shows
# it from its first version on), and a run's dataset inputs wait for Plinth's datasets.
MLFLOW_READS_ONLY = {
    "POST /mlflow/api/2.0/mlflow/registered-models/create",
    "POST /mlflow/api/2.0/mlflow/runs/log-inputs",
    # MLflow's own: experiments' and registered models' tags; an upload is nothing to
    # read until it completes
    "POST /mlflow/api/2.0/mlflow/registered-models/set-tag",
    "POST /mlflow/api/2.0/mlflow/experiments/create",
    "POST /mlflow/api/2.0/mlflow/experiments/set-experiment-tag",
    "POST /mlflow/api/2.0/mlflow-artifacts/mpu/create/{artifact:path}",
}


# -- what the app takes: its routes and their schemas -----------------------------------


@dataclass(frozen=True)
class Field:
    """One string field of one route: ``where`` it travels, and ``at`` (a parameter's
    name, or a path into the body); ``returned``: whether the API ever shows it."""

    route: APIRoute
    where: str  # path, query, header, body, form
    at: tuple[str, ...]
    returned: bool = True

    @property
    def method(self) -> str:
        return method_of(self.route)

    def __str__(self) -> str:
        return f"{self.method} {self.route.path} {self.where} {'.'.join(self.at)}"


def app_routes() -> list[APIRoute]:
    """Every route of the app (the capabilities' and the app's own), from an app built
    over a throwaway home."""
    with tempfile.TemporaryDirectory(prefix="plinth-routes-") as home:
        app = create_app(make_settings(Path(home) / "home"), embedded=True)
        return [r for r in all_routes(app.routes) if isinstance(r, APIRoute)]


def method_of(route: APIRoute) -> str:
    return sorted(route.methods - {"HEAD"})[0]


def is_write(route: APIRoute) -> bool:
    declared = _declared(route.dependant)
    return method_of(route) in ("POST", "PUT", "PATCH") and declared[0] not in READS


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def parameters(route: APIRoute, where: str) -> list[Any]:
    return [p for d in _dependants(route.dependant) for p in getattr(d, f"{where}_params")]


def body_schema(route: APIRoute) -> dict[str, Any] | None:
    if route.body_field is None:
        return None
    return TypeAdapter(route.body_field.field_info.annotation).json_schema()


def is_form(route: APIRoute) -> bool:
    return route.body_field is not None and isinstance(route.body_field.field_info, Form)


def fields_of(route: APIRoute) -> Iterator[Field]:
    for where in ("path", "query", "header"):
        for param in parameters(route, where):
            if re.search(r"\bstr\b", repr(param.field_info.annotation)):
                yield Field(route, where, (param.alias,))
    schema = body_schema(route)
    if schema is not None:
        for at, slot in _slots(schema, schema.get("$defs", {})):
            returned = not slot.get("writeOnly") and not at[-1].endswith(NOT_RETURNED)
            yield Field(route, "form" if is_form(route) else "body", at, returned)


def _resolve(schema: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}  # additionalProperties: true, any value
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        return _resolve(next(b for b in schema["anyOf"] if b.get("type") != "null"), defs)
    return schema


def _slots(
    schema: Any, defs: dict[str, Any], at: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every place in a JSON schema where a string can go, with its schema."""
    resolved = _resolve(schema, defs)
    kind = resolved.get("type")
    if kind == "object":
        for name, sub in resolved.get("properties", {}).items():
            yield from _slots(sub, defs, (*at, name))
        extra = resolved.get("additionalProperties", False)
        if extra is not False:
            yield (*at, KEY), {}
            yield from _slots(extra, defs, (*at, VALUE))
    elif kind == "array":
        yield from _slots(resolved.get("items", {}), defs, (*at, ITEM))
    elif kind in (None, "string"):  # no type: any JSON value (a param's)
        yield at, resolved


# -- plausible requests, one field awkward ----------------------------------------------


@dataclass
class Scene:
    """What plausible requests name: a project of this field's own, with a run that
    has a metric ``m`` and an artifact ``a.txt``, and a secret, a model and a deployment
    named like the project; and the login form's CSRF token (its cookie is in the
    client)."""

    project: str
    run_id: str
    digest: str
    size: int
    csrf: Callable[[], str]  # the current one: each answer to a login sets a new one
    job_id: str = ""  # a queued job of the project (the module's app dispatches nothing)
    project_id: str = ""  # the project's MLflow experiment id

    def value_for(self, name: str) -> Any:
        return {
            "project": self.project,
            "name": self.project,  # a page's project, and the scene's secret
            "run_id": self.run_id,
            "runs": self.run_id,
            "path": "a.txt",
            "key": "m",
            "user": "member",
            "role": "viewer",
            "digest": self.digest,
            "digests": [self.digest],
            "size": self.size,
            "token_id": "0" * 16,
            "version": 1,  # of the model named like the project
            "alias": "champion",
            "model": f"models:/{self.project}/{self.project}/1",
            "runtime": "memory",  # a deployment's replicas on paper: no processes to leak
            "next": "/",
            "csrf": self.csrf(),
            "job_id": self.job_id,
            "experiment_id": self.project_id,
            "argv": ["true"],  # a job's command (never run here)
            "function": "flow:train",  # a pipeline's (never imported on the server)
            "code_digest": self.digest,
        }.get(name)


def plausible(schema: Any, defs: dict[str, Any], name: str, scene: Scene) -> Any:
    """A value ``schema`` accepts, naming the scene's objects where ``name`` asks."""
    resolved = _resolve(schema, defs)
    if name != "name" and scene.value_for(name) is not None:
        return scene.value_for(name)
    if "const" in resolved or "enum" in resolved:
        return resolved.get("const", (resolved.get("enum") or [None])[0])
    kind = resolved.get("type")
    if kind == "string":
        return _fresh_text(resolved)
    if kind in ("integer", "number"):
        return resolved.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "array":
        return [plausible(resolved.get("items", {}), defs, "", scene)]
    if kind == "object":
        return _plausible_object(resolved, defs, scene, leave_out="")
    return "v"


def _plausible_object(
    schema: dict[str, Any], defs: dict[str, Any], scene: Scene, leave_out: str
) -> dict[str, Any]:
    """The required properties, and the optional ones that name the scene's objects."""
    props, required = schema.get("properties", {}), schema.get("required", [])
    chosen = [p for p in props if p in required or scene.value_for(p) is not None]
    return {p: plausible(props[p], defs, p, scene) for p in chosen if p != leave_out}


def _fresh_text(schema: dict[str, Any]) -> str:
    candidate = f"k{uuid.uuid4().hex[:12]}"
    if "pattern" in schema:
        assert re.search(schema["pattern"], candidate), f"no plausible value for {schema}"
    return candidate + "x" * max(0, schema.get("minLength", 0) - len(candidate))


def with_value(
    schema: Any, defs: dict[str, Any], at: tuple[str, ...], value: str, scene: Scene
) -> Any:
    """A plausible instance of ``schema`` holding ``value`` at ``at``."""
    if not at:
        return value
    resolved, head, rest = _resolve(schema, defs), at[0], at[1:]
    if head == ITEM:
        return [with_value(resolved.get("items", {}), defs, rest, value, scene)]
    props = resolved.get("properties", {})
    body = _plausible_object(resolved, defs, scene, leave_out=head)
    extra = resolved.get("additionalProperties", {})
    if head == KEY:
        body[value] = plausible(extra, defs, "", scene)
    elif head == VALUE:  # a key of its own: params cannot change once logged
        body[_fresh_text({})] = with_value(extra, defs, rest, value, scene)
    else:
        body[head] = with_value(props[head], defs, rest, value, scene)
    return body


def _in_url(text: str) -> str:
    """Percent-encoded UTF-8 (a lone surrogate as the bytes a careless client sends)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@dataclass
class Call:
    method: str
    url: str
    headers: dict[str, Any]
    content: bytes | None

    def send(self, http: httpx.Client) -> httpx.Response:
        return http.request(self.method, self.url, headers=self.headers, content=self.content)


def request_for(route: APIRoute, scene: Scene, field: Field | None, value: str) -> Call:
    """A plausible request to ``route``, with ``value`` in ``field`` if one is given."""

    def given(where: str, name: str, otherwise: Any) -> Any:
        chosen = field is not None and field.where == where and field.at == (name,)
        return value if chosen else otherwise

    url = route.path_format
    for param in parameters(route, "path"):
        text = given("path", param.alias, scene.value_for(param.alias))
        url = url.replace(f"{{{param.alias}}}", _in_url(str(text)))
    query = []
    for param in parameters(route, "query"):
        required = param.field_info.is_required()
        text = given("query", param.alias, scene.value_for(param.alias) if required else None)
        if text is not None:
            query.append(f"{_in_url(param.alias)}={_in_url(str(text))}")
    headers: dict[str, Any] = {}
    for param in parameters(route, "header"):
        text = given("header", param.alias, None)
        if text is not None:
            headers[param.alias] = text.encode("utf-8", "surrogatepass")
    content = _body(route, scene, field, value, headers)
    target = url + ("?" + "&".join(query) if query else "")
    return Call(method_of(route), target, headers, content)


def _body(
    route: APIRoute, scene: Scene, field: Field | None, value: str, headers: dict[str, Any]
) -> bytes | None:
    schema = body_schema(route)
    if schema is None:
        if "requestBody" in (route.openapi_extra or {}):  # a streamed upload
            headers["content-type"] = "application/octet-stream"
            return b"uploaded bytes"
        return None
    defs = schema.get("$defs", {})
    if field is not None and field.where in ("body", "form"):
        body = with_value(schema, defs, field.at, value, scene)
    else:
        body = plausible(schema, defs, "", scene)
    if is_form(route):
        headers["content-type"] = "application/x-www-form-urlencoded"
        return "&".join(f"{_in_url(k)}={_in_url(str(v))}" for k, v in body.items()).encode()
    headers["content-type"] = "application/json"
    return json.dumps(body).encode()  # escaped: a lone surrogate arrives as "\ud800"


# -- the home the corpus runs against ---------------------------------------------------


class World:
    """A home with an admin and a member; what reads back, and what is stored."""

    def __init__(self, root: Client, platform: Platform, blobs: BlobFiles, tmp: Path) -> None:
        self.root, self.platform, self.blobs, self.tmp = root, platform, blobs, tmp
        self.corpus = CORPUS
        self.http = raw_http(root)
        self.reads = [
            r
            for r in APP_ROUTES
            if r.path.startswith("/api/")
            and r.path not in NOT_READ_BACK_FROM
            and r.response_model is not None  # JSON, not a download
            and (method_of(r) == "GET" or _declared(r.dependant)[0] in READS)
        ]
        self.counter = itertools.count()

    def scene(self) -> Scene:
        project = f"s{uuid.uuid4().hex[:10]}"
        run = self.root.create_run(project)
        self.root.log_batch(run.id, metrics=[{"key": "m", "value": 1.0}])
        (self.tmp / "a.txt").write_text(f"an artifact of {project}")
        artifact = self.root.log_artifact(run.id, self.tmp / "a.txt")[0]
        self.root.set_secret(project, project, "a secret")
        # a model named like the project, its version 1 from "model-1"; the files under
        # "model" (the default path) are left for a registration to make version 2
        self.root.log_artifacts(run.id, model_files(self.tmp / project / "1", b"1"), "model-1")
        self.root.log_artifacts(run.id, model_files(self.tmp / project / "2", b"2"), "model")
        self.root.register_model(run.id, "model-1", project)
        self.root.set_model_alias(project, project, "champion", 1)
        # a deployment named like the project, of version 1 (memory runtime: replicas on
        # paper), so that its routes (records, the page's forms) reach past the lookup
        uri = f"models:/{project}/{project}/1"
        self.root.create_deployment(project, project, uri, runtime="memory")
        job = self.root.submit_job(project, ["true"])  # queued: this home dispatches nothing
        self.stored = self.snapshot()  # as of the last write; reads change nothing
        self.http.get("/login")  # the form's CSRF cookie, for the login form's fields
        csrf = lambda: self.http.cookies.get(LOGIN_CSRF_COOKIE, "")  # noqa: E731
        [project_id] = [p.id for p in self.root.list_projects() if p.name == project]
        return Scene(project, run.id, artifact.digest, artifact.size, csrf, job.id, project_id)

    def snapshot(self) -> tuple[int, Any]:
        """Where the store stands, cheaply, however large the module's home grows: the
        last row change committed outside the audit trail (refusals are audited by
        design; ``watch_rows``), and the blob files made and removed (``BlobFiles``)."""
        with self.platform.db.read() as conn:
            last = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM _changes").scalar()
        return int(last or 0), self.blobs.state()

    def changed_tables(self, since: int) -> list[str]:
        with self.platform.db.read() as conn:
            found = conn.exec_driver_sql(
                f"SELECT DISTINCT tbl FROM _changes WHERE id > {int(since)}"
            ).scalars()
            return sorted(found)

    def read_back(self, scene: Scene) -> set[str]:
        """Every string (keys too) the API's reads return about the scene."""
        found: set[str] = set()
        for route in self.reads:
            response = request_for(route, scene, None, "").send(self.http)
            if response.headers.get("content-type", "").startswith("application/json"):
                found.update(_strings(response.json()))
        return found

    def send(self, field: Field, scene: Scene, label: str, text: str) -> tuple[str, str | None]:
        """Send ``text`` in ``field``: the value as the server received it, and what is
        wrong with the answer (None: nothing)."""
        if field.where in ("path", "query", "header"):
            text = text[:URL_TEXT]
        value = f"q{next(self.counter)}{text}"  # unique, so reading back finds this one
        write = is_write(field.route)
        response = request_for(field.route, scene, field, value).send(self.http)
        status = response.status_code
        said = f"{field} <- {label}: {status} {response.text[:300]!r}"
        if field.where != "body":  # URLs, headers, forms: UTF-8, so a surrogate is U+FFFD
            value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        if status >= 500:
            return "", said
        if _unstorable(value) and status != 422:
            return "", f"{said}: expected 422"
        if write:
            before, self.stored = self.stored, self.snapshot()
            if status >= 400 and self.stored != before:
                changed = self.changed_tables(before[0])
                if self.stored[1] != before[1]:
                    changed.append("blob files")
                return "", f"{said}: a refused request changed the store: {changed}"
        accepted = status < 400 and write and field.returned
        return (value if accepted else ""), None

    def pages_render(self, scene: Scene) -> list[str]:
        paths = ["/", f"/projects/{scene.project}"]
        paths += [f"/runs/{run.id}" for run in self.root.search_runs(scene.project).runs]
        answers = {path: self.http.get(path).status_code for path in paths}
        return [f"{path} answered {status}" for path, status in answers.items() if status != 200]


def watch_rows(platform: Platform) -> None:
    """Triggers that log every row change to every table but the audit trail's into
    ``_changes``; a rolled-back change leaves no row there."""
    tables = [t.name for t in metadata.sorted_tables if not t.name.startswith("audit")]
    with platform.db.write() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("CREATE TABLE _changes (id INTEGER PRIMARY KEY, tbl TEXT)")
            for table in tables:
                for op in ("INSERT", "UPDATE", "DELETE"):
                    conn.exec_driver_sql(
                        f'CREATE TRIGGER "_changes_{op}_{table}" AFTER {op} ON "{table}" '
                        f"BEGIN INSERT INTO _changes (tbl) VALUES ('{table}'); END"
                    )
            return
        conn.exec_driver_sql("CREATE TABLE _changes (id BIGSERIAL PRIMARY KEY, tbl TEXT)")
        conn.exec_driver_sql(
            "CREATE FUNCTION _changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO _changes (tbl) VALUES (TG_TABLE_NAME); RETURN NULL; END $$"
        )
        for table in tables:
            conn.exec_driver_sql(
                f'CREATE TRIGGER "_changes_{table}" AFTER INSERT OR UPDATE OR DELETE '
                f'ON "{table}" FOR EACH ROW EXECUTE FUNCTION _changed()'
            )


class BlobFiles:
    """The local blob store's files made and removed in this process (the home's app
    runs in it): a file committed and later removed (a temp file promoted) nets out."""

    def __init__(self) -> None:
        self.added: set[str] = set()
        self.removed: set[str] = set()

    def state(self) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(self.added), frozenset(self.removed)

    def _made(self, path: str) -> None:
        if path in self.removed:
            self.removed.discard(path)
        else:
            self.added.add(path)

    def _gone(self, path: str) -> None:
        if path in self.added:
            self.added.discard(path)
        else:
            self.removed.add(path)

    @classmethod
    @contextlib.contextmanager
    def watched(cls) -> Iterator[BlobFiles]:
        files = cls()
        commit, delete = blobs._LocalWriter.commit, blobs.LocalBackend.delete
        rename = blobs.LocalBackend.rename

        def committed(writer: Any) -> None:
            new = not os.path.exists(writer.final)
            commit(writer)
            if new:
                files._made(writer.final)

        def deleted(backend: Any, key: str) -> None:
            path = backend._path(key)
            existed = os.path.exists(path)
            delete(backend, key)
            if existed:
                files._gone(path)

        def renamed(backend: Any, key: str, new: str) -> None:
            path, final = backend._path(key), backend._path(new)
            made = not os.path.exists(final)
            rename(backend, key, new)
            files._gone(path)
            if made:
                files._made(final)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(blobs._LocalWriter, "commit", committed)
            patch.setattr(blobs.LocalBackend, "delete", deleted)
            patch.setattr(blobs.LocalBackend, "rename", renamed)
            yield files


def _unstorable(text: str) -> bool:
    return re.search("[\\x00\\ud800-\\udfff]", text) is not None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One home per backend for the module: with an admin, a member, a master key."""
    tmp = tmp_path_factory.mktemp("inputs")
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgres":
            server = request.getfixturevalue("postgres_server_url")
            template = request.getfixturevalue("postgres_template")
            url = stack.enter_context(services.postgres_database(server, template))
        # Durability is not what this module is about: fewer fsyncs, a shorter run. The
        # scenes' runs never send heartbeats: the reaper must not end them mid-module
        # (a background change would look like a refused request's).
        settings = make_settings(
            tmp / "home",
            url,
            db_synchronous="NORMAL",
            tracking=TrackingSettings(stale_after_seconds=24 * 3600),
            compute=ComputeSettings(dispatch=False),  # jobs stay queued: no background change
        )
        with Client(settings=settings) as anonymous:
            token = anonymous.init_admin("root").token.token
        key = SecretStr(MasterKey.generate().to_text())  # secrets need one
        root = stack.enter_context(
            Client(settings=settings.model_copy(update={"token": token, "master_key": key}))
        )
        root.create_user("member")
        platform = Platform.open(settings)
        stack.callback(platform.close)
        watch_rows(platform)
        world = World(root, platform, stack.enter_context(BlobFiles.watched()), tmp)
        if request.param == "postgres":
            world.corpus = {label: CORPUS[label] for label in ON_POSTGRES}
        yield world


# -- the tests ---------------------------------------------------------------------------

APP_ROUTES = app_routes()
ROUTES = {f"{method_of(r)} {r.path}": r for r in APP_ROUTES if any(fields_of(r))}


def test_the_corpus_reaches_every_kind_of_field() -> None:
    """A guard against walking nothing: the generator finds fields of every kind, in
    the capabilities' routes and in the app's own."""
    found = {(str(f), f.returned) for r in ROUTES.values() for f in fields_of(r)}
    for expected in (
        "POST /api/v1/runs body params.{value}",
        "POST /api/v1/runs/{run_id}/batches body metrics.[].key",
        "POST /api/v1/runs/{run_id}/batches body tags.{key}",
        "GET /projects/{name} query filter",
        "GET /api/v1/audit query actor",  # a Depends() model's fields
        "PUT /api/v1/runs/{run_id}/artifacts/{path:path} header X-Plinth-Digest",
        "POST /login form user",
        "GET /api/v1/docs/{asset} path asset",  # the app's own, not a capability's
    ):
        assert (expected, True) in found
    assert ("PUT /api/v1/projects/{project}/secrets body value", False) in found  # writeOnly


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_string_field_takes_any_text_or_refuses_it(world: World, route: str) -> None:
    problems = []
    for field in fields_of(ROUTES[route]):
        scene = world.scene()
        accepted = []
        for label, text in world.corpus.items():
            value, problem = world.send(field, scene, label, text)
            problems += [problem] if problem else []
            accepted += [(label, value)] if value else []
        if route in MLFLOW_READS_ONLY:
            accepted = []
        elif route in REPLACED:
            accepted = accepted[-1:]
        elif route in FIRST_KEPT:
            accepted = accepted[:1]
        if accepted:
            stored = world.read_back(scene)
            problems += [
                f"{field} <- {label}: accepted, but does not read back exactly"
                for label, value in accepted
                if value not in stored
            ]
        problems += world.pages_render(scene)
    assert problems == [], "\n".join(problems[:40])


# -- text no store can keep, however it arrives -----------------------------------------


def test_a_lone_surrogate_is_refused_and_the_project_still_renders(client: Client) -> None:
    """The issue's case: a param "\\ud800" was committed, then every search and page of
    the project answered 500 for everyone."""
    run = client.create_run("p-surrogate", params={"ok": "fine"})
    with pytest.raises(Unprocessable, match=r"params\.alpha: .*lone surrogate \(U\+D800\)"):
        client.create_run("p-surrogate", params={"alpha": "\ud800"})
    with pytest.raises(Unprocessable, match=r"tags\.note: .*NUL"):
        client.log_batch(run.id, tags={"note": "a\x00b"})
    with pytest.raises(Unprocessable, match=r"metrics\[0\]\.key"):
        client.send_batch(run.id, uuid.uuid4().hex, [_series("m\udc00", 1)])
    assert [r.id for r in client.search_runs("p-surrogate").runs] == [run.id]
    assert client.get_run(run.id).tags == {}
    http = raw_http(client)
    for page in ("/", "/projects/p-surrogate", f"/runs/{run.id}"):
        assert http.get(page).status_code == 200, page


def _json(body: bytes, **headers: str) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": "application/json", **headers}}


@pytest.mark.parametrize(
    ("where", "request_args"),
    [
        ("name", _json(b'{"project": "p-raw", "name": "\xed\xa0\x80"}')),  # UTF-8 of U+D800
        ("name", _json('{"project": "p-raw", "name": "\ud83d"}'.encode("utf-16", "surrogatepass"))),
        ("params.x[1]", _json(b'{"project": "p-raw", "params": {"x": ["ok", "\\u0000"]}}')),
        ("a key in tags", _json(b'{"project": "p-raw", "tags": {"\\uDBFF": "v"}}')),
    ],
)
def test_unstorable_text_in_a_json_body_is_a_422_naming_the_field(
    client: Client, where: str, request_args: dict[str, Any]
) -> None:
    response = raw_http(client).post("/api/v1/runs", **request_args)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "Unprocessable"
    assert response.json()["error"]["message"].startswith(f"{where}: ")
    assert not _project_exists(client, "p-raw")  # nor a run in it


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be"])
def test_a_json_body_not_in_utf8_is_refused_whole(client: Client, encoding: str) -> None:
    project = f"p-{encoding}"
    body = f'{{"project": "{project}", "name": "\u043f\u0440\u043e\u0431\u0430"}}'.encode(encoding)
    response = raw_http(client).post("/api/v1/runs", **_json(body))
    assert response.status_code == 422, response.text
    assert "UTF-8" in response.json()["error"]["message"]
    assert not _project_exists(client, project)
    same = raw_http(client).post("/api/v1/runs", **_json(body.decode(encoding).encode()))
    assert same.status_code == 201, same.text  # the same JSON in UTF-8 is welcome
    assert same.json()["name"] == "\u043f\u0440\u043e\u0431\u0430"


def _project_exists(client: Client, name: str) -> bool:
    return name in [p.name for p in client.list_projects()]


def test_an_escape_split_between_two_chunks_is_still_found(client: Client) -> None:
    body = b'{"project": "p-chunks", "name": "x\\u0000y"}'
    cut = body.index(b"\\u0000") + 3  # "\u0" | "000"
    chunks = iter([body[:cut], body[cut:]])
    response = raw_http(client).post(
        "/api/v1/runs", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert not _project_exists(client, "p-chunks")


def test_nul_in_a_url_a_form_or_a_header_is_a_422_naming_it(client: Client) -> None:
    http = raw_http(client)
    run = client.create_run("p-nul")
    cases = [
        ("path", http.get(f"/api/v1/runs/{run.id}%00")),
        ("query.key", http.get(f"/api/v1/runs/{run.id}/metrics?key=m%00")),
        ("query.filter", http.get("/projects/p-nul?filter=%00")),
        ("user", http.post("/login", content=b"user=a%00&password=x", headers=_FORM)),
        ("user", http.post("/login", files={"user": (None, b"a\x00"), "password": (None, b"x")})),
        ("header.x-anything", http.get("/", headers={"x-anything": b"a\x00b"})),
    ]
    for where, response in cases:
        assert response.status_code == 422, (where, response.text)
        assert response.json()["error"]["message"].startswith(f"{where}: "), response.text


_FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_awkward_credentials_are_refused_not_a_500(client: Client) -> None:
    """Headers and cookies the routes read themselves (not declared fields)."""
    http = raw_http(client)
    run = client.create_run("p-credentials")
    awkward = ["é", "\u202e", "x" * 10_000, "Bearer \xff\xfe", "Bearer plt_é_é"]
    for value in awkward:
        raw = value.encode("utf-8")
        for headers in (
            {"authorization": raw},
            {"authorization": b"Bearer " + raw},
            {"x-csrf-token": raw, "cookie": b"plinth_session=" + raw},
            {"cookie": b"plinth_login_csrf=" + raw},
        ):
            for method, path in (("GET", f"/api/v1/runs/{run.id}"), ("POST", "/logout")):
                response = http.request(method, path, headers=headers)
                assert response.status_code < 500, (headers, path, response.text)
            form = b"user=a&password=b&csrf=" + quote(value).encode()
            login = http.post("/login", content=form, headers={**_FORM, **headers})
            assert login.status_code < 500, (headers, login.text)


def test_normalization_sensitive_keys_and_values_stay_distinct(client: Client) -> None:
    """Nothing is normalised: canonically equivalent text stays two keys, two values."""
    nfc, nfd = "\u00e9", "e\u0301"  # é composed, and e with a combining accent
    letter, sign = "\u00c5", "\u212b"  # Å, and the Angstrom sign NFC turns into it
    params = {letter: nfc, sign: nfd}
    run = client.create_run("p-nfc", params=params, tags={letter: nfd, sign: nfc})
    stored = client.get_run(run.id)
    assert (stored.params, stored.tags) == (params, {letter: nfd, sign: nfc})
    page = client.search_runs("p-nfc", filter=f"params.`{sign}` = '{nfd}'")
    assert [r.id for r in page.runs] == [run.id]
    assert client.search_runs("p-nfc", filter=f"params.`{sign}` = '{nfc}'").runs == []


# -- bounded batches ---------------------------------------------------------------------


def _series(key: str, points: int) -> dict[str, Any]:
    return {
        "key": key,
        "steps": list(range(points)),
        "values": [0.5] * points,
        "timestamps": [1.0] * points,
    }


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (
            {"metrics": [_series("m", 1_000_000)]},
            "a batch holds at most 10,000 points; got 1,000,000: split it",
        ),
        (
            {"metrics": [_series(f"m{i}", 1) for i in range(1_001)]},
            "a batch holds at most 1,000 metric series; got 1,001: split it",
        ),
        (
            {"params": {f"p{i}": i for i in range(100_000)}},
            "a batch holds at most 1,000 params; got 100,000: split it",
        ),
        (
            {"tags": {f"t{i}": "v" for i in range(1_001)}},
            "a batch holds at most 1,000 tags; got 1,001: split it",
        ),
        ({"tags": {"k" * 300: "v"}}, "a key holds at most 250 characters; got 300"),
        (
            {"tags": {"note": "x" * 70_000}},
            "tags.note: a tag value holds at most 65,536 characters; got 70,000",
        ),
        (
            {"params": {"config": ["x" * 70_000]}},
            "params.config: a param value (as JSON) holds at most 65,536 characters; got 70,004",
        ),
    ],
)
def test_a_batch_over_a_limit_is_a_422_naming_it(
    client: Client, batch: dict[str, Any], message: str
) -> None:
    run = client.create_run("p-limits")
    body = {"batch_id": uuid.uuid4().hex, **batch}
    response = raw_http(client).post(f"/api/v1/runs/{run.id}/batches", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == {"type": "Unprocessable", "message": message}
    stored = client.get_run(run.id)
    assert (stored.params, stored.tags, stored.metrics) == ({}, {}, {})


def test_a_run_is_created_with_bounded_params(client: Client) -> None:
    with pytest.raises(Unprocessable, match="at most 1,000 params; got 1,001"):
        client.create_run("p-limits", params={f"p{i}": i for i in range(1_001)})


def test_the_schema_documents_the_limits(client: Client) -> None:
    schemas = raw_http(client).get("/api/v1/openapi.json").json()["components"]["schemas"]
    batch, series = schemas["LogBatch"]["properties"], schemas["MetricSeries"]["properties"]
    assert batch["metrics"]["maxItems"] == s.MAX_BATCH_SERIES
    assert "10,000 points" in batch["metrics"]["description"]
    assert batch["params"]["maxProperties"] == s.MAX_BATCH_PARAMS
    assert batch["tags"]["maxProperties"] == s.MAX_BATCH_TAGS
    assert batch["tags"]["additionalProperties"]["maxLength"] == s.MAX_VALUE_LENGTH
    assert series["steps"]["maxItems"] == s.MAX_BATCH_POINTS
    create = schemas["RunCreate"]["properties"]
    assert create["params"]["maxProperties"] == s.MAX_BATCH_PARAMS


def test_the_sdk_splits_a_large_batch_and_applies_each_chunk_once(client: Client) -> None:
    run = client.create_run("p-split")
    points = [
        {"key": f"m{k}", "value": float(step), "step": step, "timestamp": 1.0}
        for k in range(2_500)
        for step in range(10)
    ]  # 25,000 points in 2,500 series: three chunks by points and by series
    params = {f"p{i}": i for i in range(2_500)}
    tags = {f"t{i}": str(i) for i in range(1_200)}
    assert client.log_batch(run.id, points, params, tags, batch_id="big-batch-1") is True
    stored = client.get_run(run.id)
    assert (len(stored.params), len(stored.tags), len(stored.metrics)) == (2_500, 1_200, 2_500)
    assert [p.step for p in client.metric_history(run.id, "m2499")] == list(range(10))
    # Sent again whole (a retry after a lost answer): every chunk is recognised.
    assert client.log_batch(run.id, points, params, tags, batch_id="big-batch-1") is False
    assert [p.step for p in client.metric_history(run.id, "m0")] == list(range(10))


def test_a_long_series_is_cut_into_slices_within_the_limits() -> None:
    series = [_series("long", s.MAX_BATCH_POINTS + 1), _series("short", 1)]
    chunks = split_batch(series, {}, {})
    assert [[(m["key"], len(m["steps"])) for m in chunk[0]] for chunk in chunks] == [
        [("long", s.MAX_BATCH_POINTS)],
        [("long", 1), ("short", 1)],
    ]
    assert chunks[1][0][0]["steps"] == [s.MAX_BATCH_POINTS]  # the slice, not a copy
    ids = [chunk_id("batch-0001", i) for i in range(3)]
    assert ids[0] == "batch-0001" and len(set(ids)) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{8,64}", i) for i in ids)


def test_a_run_logs_more_keys_at_one_step_than_a_batch_may_hold(client: Client) -> None:
    with plinth.start_run("p-many-keys", client=client) as run:
        run.log({f"m{i}": float(i) for i in range(2_500)}, step=0)
    assert len(client.get_run(run.id).metrics) == 2_500


def test_numbers_past_what_the_database_holds_are_refused(client: Client) -> None:
    """An integer a field's schema would take but the database cannot (a 500 before)."""
    http = raw_http(client)
    answer = http.get("/api/v1/audit", params={"after_id": str(2**63)})
    assert answer.status_code == 400, answer.text
    assert http.get("/api/v1/audit", params={"after_id": str(2**63 - 1)}).status_code == 200
