"""The run filter language: parsed into a small AST, then into SQLAlchemy expressions.

    metrics.acc > 0.9 and params.lr = 0.1 and (tags.team = 'vision' or status != 'failed')

A comparison is ``FIELD OP VALUE``: FIELD is ``metrics.KEY`` (the latest value),
``params.KEY``, ``tags.KEY`` or an attribute (``status``, ``name``, ``id``,
``parent_id``, ``start_time``, ``end_time``, also written ``attributes.NAME``); a KEY
with other characters goes in backticks. OP is one of ``= != < <= > >= like``; VALUE a
number, a quoted string, ``true`` or ``false``. Comparisons join with ``and``/``or``
and parentheses. Nothing the user writes is pasted into SQL: every value becomes a
bound parameter.

MLflow habits hold: MLflow keeps every param as text, so its users quote numbers and
booleans. A quoted value that reads as a number or a boolean therefore also matches a
param or tag of that type (``params.alpha = '0.01'`` finds ``alpha=0.01``), and
``status`` compares regardless of case (``status = 'FINISHED'``). A key that no run of
the project has is refused with the keys there are, since it is most likely a typo.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from plinth.errors import InvalidInput
from plinth.tracking import schemas as s
from plinth.tracking import tables as t

KINDS = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attr",
    "attributes": "attr",
    "attr": "attr",
    "run": "attr",
}
ATTRIBUTES = {
    "status": "text",
    "name": "text",
    "id": "text",
    "parent_id": "text",
    "start_time": "number",
    "end_time": "number",
}
STATUSES: tuple[str, ...] = get_args(s.RunStatus)
# The table that holds each kind's keys, and the kind's name in the singular.
KEYED = {"metrics": t.latest_metrics, "params": t.params, "tags": t.tags}
NOUNS = {"metrics": "metric", "params": "param", "tags": "tag"}
_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER_TEXT = re.compile(rf"^{_NUMBER}\Z")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][\w-]*\Z")
OPS = ("<=", ">=", "!=", "==", "=", "<", ">", "like")

_TOKEN = re.compile(
    rf"""\s*(?:
        (?P<number>{_NUMBER})(?![\w.])
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<backtick>`[^`]+`)
      | (?P<op><=|>=|!=|==|=|<|>)
      | (?P<paren>[()])
      | (?P<comma>,)
      | (?P<dot>\.)
      | (?P<word>[A-Za-z_][\w-]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Field:
    kind: str  # metrics | params | tags | attr
    key: str

    def __str__(self) -> str:
        """As the user would write it, for error messages."""
        key = self.key if _PLAIN_KEY.match(self.key) else f"`{self.key}`"
        return key if self.kind == "attr" else f"{self.kind}.{key}"


Value = float | str | bool


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str
    value: Value


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Node, ...]


Node = Comparison | BoolOp


@dataclass(frozen=True)
class OrderKey:
    field: Field
    descending: bool


def _tokenize(text: str, label: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InvalidInput(
                f"{label}: unexpected text at position {pos}: {text[pos : pos + 20]!r}"
            )
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


MAX_DEPTH = 32


class _Parser:
    """Recursive descent over the tokens; ``label`` (filter or order_by) starts every
    error message, so the user knows which of the two to fix."""

    def __init__(self, text: str, label: str = "filter") -> None:
        self.label = label
        self.tokens = _tokenize(text, label)
        self.i = 0
        self.depth = 0

    def error(self, message: str) -> InvalidInput:
        return InvalidInput(f"{self.label}: {message}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str | None = None, word: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end")
        if (kind and tok[0] != kind) or (word and tok[1].lower() != word):
            raise self.error(f"expected {word or kind}, got {tok[1]!r}")
        self.i += 1
        return tok[1]

    def at_word(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "word" and tok[1].lower() == word

    def expr(self) -> Node:
        items = [self.conjunction()]
        while self.at_word("or"):
            self.take()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def conjunction(self) -> Node:
        items = [self.atom()]
        while self.at_word("and"):
            self.take()
            items.append(self.atom())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def atom(self) -> Node:
        tok = self.peek()
        if tok == ("paren", "("):
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(f"parentheses nest deeper than {MAX_DEPTH}")
            node = self.expr()
            self.take("paren", ")")
            self.depth -= 1
            return node
        field = self.field()
        op = self.operator()
        return Comparison(field, op, self.literal(field, op))

    def field(self) -> Field:
        first = self.name()
        if self.peek() == ("dot", "."):
            self.take()
            kind = KINDS.get(first.lower())
            if kind is None:
                raise self.error(
                    f"unknown field kind {first!r}; use metrics, params, tags or attributes"
                )
            key = self.name()
        else:
            kind, key = "attr", first
        if kind == "attr" and key not in ATTRIBUTES:
            raise self.error(f"unknown attribute {key!r}; known: {', '.join(ATTRIBUTES)}")
        return Field(kind, key)

    def name(self) -> str:
        tok = self.peek()
        if tok and tok[0] == "backtick":
            self.take()
            return tok[1][1:-1]
        return self.take("word")

    def operator(self) -> str:
        tok = self.peek()
        if tok and tok[0] == "op":
            self.take()
            return "=" if tok[1] == "==" else tok[1]
        if self.at_word("like"):
            self.take()
            return "like"
        raise self.error(f"expected a comparison operator, got {tok[1] if tok else 'end'!r}")

    def literal(self, field: Field, op: str) -> Value:
        tok = self.peek()
        if tok and tok[0] == "number":
            self.take()
            return float(tok[1])
        if tok and tok[0] == "string":
            self.take()
            return re.sub(r"\\(.)", r"\1", tok[1][1:-1])
        if tok and tok[0] == "word" and tok[1].lower() in ("true", "false"):
            self.take()
            return tok[1].lower() == "true"
        got = f", got {tok[1]!r}" if tok else ""
        raise self.error(f"{field} {op} needs a value: a number or a quoted string{got}")


def parse_filter(text: str) -> Node | None:
    if not text.strip():
        return None
    parser = _Parser(text)
    node = parser.expr()
    if parser.peek() is not None:
        raise parser.error(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return node


MAX_ORDER_KEYS = 10  # each param or tag key is four ORDER BY terms and a join


def parse_order_by(text: str) -> list[OrderKey]:
    """The keys of ``order_by``, a field named again dropped (the first decides)."""
    keys: list[OrderKey] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        parser = _Parser(part, "order_by")
        field = parser.field()
        descending = False
        if parser.peek() is not None:
            direction = parser.take("word").lower()
            if direction not in ("asc", "desc"):
                raise parser.error(f"expected asc or desc, got {direction!r}")
            descending = direction == "desc"
        if parser.peek() is not None:
            raise parser.error(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
        if any(k.field == field for k in keys):
            continue
        if len(keys) == MAX_ORDER_KEYS:
            raise InvalidInput(f"order_by: at most {MAX_ORDER_KEYS} keys")
        keys.append(OrderKey(field, descending))
    return keys


def fields(node: Node | None) -> list[Field]:
    """Every field a filter names, in order."""
    if node is None:
        return []
    if isinstance(node, Comparison):
        return [node.field]
    return [f for item in node.items for f in fields(item)]


KNOWN_SHOWN = 20  # keys listed when a search names one that no run has


def require_known_keys(
    conn: Connection, project: str, project_id: str, where: Node | None, order: list[OrderKey]
) -> None:
    """A key that no run of the project has is most likely a typo: say so, with the
    keys there are, instead of quietly matching nothing."""
    named = [("filter", f) for f in fields(where)] + [("order_by", k.field) for k in order]
    checked: set[Field] = set()
    for label, field in named:
        if field.kind == "attr" or field in checked:
            continue
        checked.add(field)
        if not _key_used(conn, project_id, field):
            known = _keys_used(conn, project_id, field.kind)
            shown = ", ".join(known[:KNOWN_SHOWN]) + (", …" if len(known) > KNOWN_SHOWN else "")
            raise InvalidInput(
                f"{label}: no run in project {project} has {NOUNS[field.kind]} "
                f"{field.key!r}; known {field.kind}: {shown or 'none'}"
            )


def _key_used(conn: Connection, project_id: str, field: Field) -> bool:
    """One probe of the (project, key, …) index."""
    table = KEYED[field.kind]
    stmt = sa.select(table.c.run_id).where(
        table.c.project_id == project_id, table.c.key == field.key
    )
    return conn.execute(stmt.limit(1)).first() is not None


def _keys_used(conn: Connection, project_id: str, kind: str) -> list[str]:
    """Only for the message of a refused search: it reads the project's whole index."""
    table = KEYED[kind]
    stmt = sa.select(table.c.key).distinct().where(table.c.project_id == project_id)
    return list(conn.execute(stmt.order_by(table.c.key)).scalars())


def number_in_text(text: str) -> float | None:
    """The number a text spells, if it spells a finite one (as the filter reads it)."""
    if not _NUMBER_TEXT.match(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _bool_in_text(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text.lower())


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "like": lambda a, b: a.like(b),
}


def to_sql(node: Node, project_id: str) -> Any:
    """The WHERE clause over ``runs`` of project ``project_id`` for a parsed filter."""
    if isinstance(node, BoolOp):
        parts = [to_sql(item, project_id) for item in node.items]
        return sa.and_(*parts) if node.op == "and" else sa.or_(*parts)
    if isinstance(node.value, bool) and node.op not in ("=", "!="):
        raise InvalidInput(
            f"filter: {node.field} {node.op} {node.value}: true and false compare with = or !="
        )
    if node.field.kind == "attr":
        return _attribute(node)
    if node.field.kind == "metrics":
        return _metric(node, project_id)
    return _param_or_tag(node, project_id)


def _attribute(c: Comparison) -> Any:
    key, value = c.field.key, c.value
    expected = ATTRIBUTES[key]
    if isinstance(value, bool) or (expected == "number") != isinstance(value, float):
        raise InvalidInput(f"filter: {key} compares with a {expected}")
    if key == "status":  # stored in lower case; MLflow users write FINISHED
        value = str(value).lower()
        if c.op in ("=", "!=") and value not in STATUSES:
            raise InvalidInput(f"filter: status is one of {', '.join(STATUSES)}; got {c.value!r}")
    return _COMPARE[c.op](t.runs.c[key], value)


def _having(table: sa.Table, project_id: str, key: str, cond: Any) -> Any:
    """Runs with a row of ``table`` under ``key`` that meets ``cond``: a semi-join on the
    (run, key) primary key, or on the (project, key, …) index, as the planner finds
    cheaper; either way it reads only this project's rows."""
    return sa.exists().where(
        table.c.run_id == t.runs.c.id, table.c.project_id == project_id, table.c.key == key, cond
    )


def _metric(c: Comparison, project_id: str) -> Any:
    value = number_in_text(c.value) if isinstance(c.value, str) else c.value
    if not isinstance(value, float) or c.op == "like":
        raise InvalidInput(f"filter: {c.field} compares with a number")
    lm = t.latest_metrics
    return _having(lm, project_id, c.field.key, _COMPARE[c.op](lm.c.value, value))


def _param_or_tag(c: Comparison, project_id: str) -> Any:
    kind, value = c.field.kind, c.value
    table = KEYED[kind]
    if isinstance(value, bool):
        cond = _is_bool(table, kind, value)
        cond = cond if c.op == "=" else sa.not_(cond)
    elif isinstance(value, float):
        if c.op == "like":
            raise InvalidInput(f"filter: {c.field} like needs a quoted pattern")
        cond = _COMPARE[c.op](table.c.number, value)  # values that are not numbers never match
    else:
        cond = _quoted(table, kind, c.op, value)
    return _having(table, project_id, c.field.key, cond)


def _is_bool(table: sa.Table, kind: str, value: bool) -> Any:
    """Params hold JSON (``true``); tags hold text, as ``str(True)`` or typed by hand."""
    word = "true" if value else "false"
    return table.c.value == word if kind == "params" else sa.func.lower(table.c.value) == word


def _quoted(table: sa.Table, kind: str, op: str, text: str) -> Any:
    """A quoted value matches as text, and also as the number or boolean it spells;
    compared in order, a quoted number is a number."""
    stored = json.dumps(text) if kind == "params" else text  # params: "adam" is "\"adam\""
    if op == "like":
        return table.c.value.like(stored)
    number, flag = number_in_text(text), _bool_in_text(text)
    if op in ("=", "!="):
        same = [table.c.value == stored]
        if number is not None:  # guarded: a NULL would make "!=" drop the row
            same.append(sa.and_(table.c.number.is_not(None), table.c.number == number))
        if flag is not None:
            same.append(_is_bool(table, kind, flag))
        return sa.or_(*same) if op == "=" else sa.not_(sa.or_(*same))
    if number is not None:  # '10' > '9' as numbers: ordering numbers as text misleads
        return _COMPARE[op](table.c.number, number)
    as_text = _COMPARE[op](table.c.value, stored)
    if kind == "params":  # order text among strings only, not against JSON numbers
        as_text = sa.and_(sa.func.substr(table.c.value, 1, 1) == '"', as_text)
    return as_text


def order_columns(keys: list[OrderKey]) -> tuple[list[Any], list[Any]]:
    """ORDER BY terms and the outer joins they need.

    Runs lacking the field sort last; for params and tags, numbers sort before text,
    by value, in either direction.
    """
    terms, joins = [], []
    for n, k in enumerate(keys):
        direction: Callable[[Any], Any] = sa.desc if k.descending else sa.asc
        if k.field.kind == "attr":
            terms.append(direction(t.runs.c[k.field.key]))
            continue
        alias = KEYED[k.field.kind].alias(f"o{n}")
        joins.append((alias, sa.and_(alias.c.run_id == t.runs.c.id, alias.c.key == k.field.key)))
        terms.append(alias.c.value.is_(None))
        if k.field.kind != "metrics":
            terms += [alias.c.number.is_(None), direction(alias.c.number)]
        terms.append(direction(alias.c.value))
    terms += [t.runs.c.start_time.desc(), t.runs.c.id]
    return terms, joins


def statements(
    project_id: str, where: Node | None, order: list[OrderKey], lifecycle: str = "active"
) -> list[Any]:
    """SELECTs of runs whose results, one after another, are the project's matching
    runs in order (``page`` reads a page of them).

    Ordered by a metric first, the runs with a value for it come from a join that walks
    the (project, key, value) index in order, so a page stops after its rows instead of
    sorting the project; the runs without one (or with NaN), which sort last, come from
    a second statement, read only when a page gets that far.
    """
    runs = t.runs
    base = sa.select(runs).where(runs.c.project_id == project_id)
    if lifecycle != "all":  # "active": not deleted; "deleted": deleted
        deleted = runs.c.deleted_at.is_(None)
        base = base.where(deleted if lifecycle == "active" else ~deleted)
    if where is not None:
        base = base.where(to_sql(where, project_id))
    if not order or order[0].field.kind != "metrics":
        return [_ordered(base, order)]
    first, rest = order[0], order[1:]
    lm = t.latest_metrics
    lead = lm.alias("lead")
    valued = base.join(
        lead,
        sa.and_(
            lead.c.run_id == runs.c.id,
            lead.c.project_id == project_id,
            lead.c.key == first.field.key,
            lead.c.value.is_not(None),
        ),
    )
    direction = sa.desc if first.descending else sa.asc
    stmts = [_ordered(valued, rest, direction(lead.c.value))]
    if not _needs_value(where, first.field):  # else no run without one can match
        unvalued = base.where(~_having(lm, project_id, first.field.key, lm.c.value.is_not(None)))
        stmts.append(_ordered(unvalued, rest))
    return stmts


def _needs_value(node: Node | None, field: Field) -> bool:
    """Whether only runs with a value (not NaN) for metric ``field`` can match: any
    comparison with a metric is false without one, NaN included (stored as NULL)."""
    if node is None:
        return False
    if isinstance(node, Comparison):
        return node.field == field
    check = any if node.op == "and" else all
    return check(_needs_value(item, field) for item in node.items)


def _ordered(stmt: Any, keys: list[OrderKey], *lead: Any) -> Any:
    terms, joins = order_columns(keys)
    for alias, on in joins:
        stmt = stmt.outerjoin(alias, on)
    return stmt.order_by(*lead, *terms)


def page(conn: Connection, stmts: list[Any], offset: int, size: int) -> list[Any]:
    """Up to ``size`` rows from ``offset`` on of the statements' results, one after
    another. Each statement is asked only for the rows the page still lacks; one that
    the offset passes over whole is counted to know where the next one starts."""
    rows: list[Any] = []
    for stmt in stmts:
        want = size - len(rows)
        if want <= 0:
            break
        got = conn.execute(stmt.limit(want).offset(offset)).mappings().all()
        rows += got
        if got or not offset:
            offset = 0
        else:
            counted = sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())
            offset -= conn.execute(counted).scalar_one()
    return rows


MAX_OFFSET = 10**9


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except Exception:
        raise InvalidInput("invalid page_token") from None
    if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput("invalid page_token")
    return offset
