"""The run filter language: parsed into a small AST, then into SQLAlchemy expressions.

    metrics.acc > 0.9 and params.lr = 0.1 and (tags.team = 'vision' or status != 'failed')

A comparison is ``FIELD OP VALUE``: FIELD is ``metrics.KEY`` (the latest value),
``params.KEY``, ``tags.KEY`` or an attribute (``status``, ``name``, ``id``,
``start_time``, ``end_time``, also written ``attributes.NAME``); a KEY with other
characters goes in backticks. OP is one of ``= != < <= > >= like``; VALUE a number or a
quoted string. Comparisons join with ``and``/``or`` and parentheses. Nothing the user
writes is pasted into SQL: every value becomes a bound parameter.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from plinth.errors import InvalidInput
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
    "start_time": "number",
    "end_time": "number",
}
OPS = ("<=", ">=", "!=", "==", "=", "<", ">", "like")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
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


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str
    value: float | str


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Node, ...]


Node = Comparison | BoolOp


@dataclass(frozen=True)
class OrderKey:
    field: Field
    descending: bool


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InvalidInput(
                f"filter: unexpected text at position {pos}: {text[pos : pos + 20]!r}"
            )
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


MAX_DEPTH = 32


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str | None = None, word: str | None = None) -> str:
        tok = self.peek()
        if tok is None:
            raise InvalidInput("filter: unexpected end")
        if (kind and tok[0] != kind) or (word and tok[1].lower() != word):
            raise InvalidInput(f"filter: expected {word or kind}, got {tok[1]!r}")
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
                raise InvalidInput(f"filter: parentheses nest deeper than {MAX_DEPTH}")
            node = self.expr()
            self.take("paren", ")")
            self.depth -= 1
            return node
        field = self.field()
        op = self.operator()
        return Comparison(field, op, self.literal())

    def field(self) -> Field:
        first = self.name()
        if self.peek() == ("dot", "."):
            self.take()
            kind = KINDS.get(first.lower())
            if kind is None:
                raise InvalidInput(
                    f"filter: unknown field kind {first!r}; use metrics, params, tags or attributes"
                )
            key = self.name()
        else:
            kind, key = "attr", first
        if kind == "attr" and key not in ATTRIBUTES:
            raise InvalidInput(f"filter: unknown attribute {key!r}; known: {', '.join(ATTRIBUTES)}")
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
        raise InvalidInput(
            f"filter: expected a comparison operator, got {tok[1] if tok else 'end'!r}"
        )

    def literal(self) -> float | str:
        tok = self.peek()
        if tok and tok[0] == "number":
            self.take()
            return float(tok[1])
        if tok and tok[0] == "string":
            self.take()
            return re.sub(r"\\(.)", r"\1", tok[1][1:-1])
        raise InvalidInput(
            f"filter: expected a number or a quoted string, got {tok[1] if tok else 'end'!r}"
        )


def parse_filter(text: str) -> Node | None:
    if not text.strip():
        return None
    parser = _Parser(text)
    node = parser.expr()
    if parser.peek() is not None:
        raise InvalidInput(f"filter: unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return node


def parse_order_by(text: str) -> list[OrderKey]:
    keys = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        parser = _Parser(part)
        field = parser.field()
        descending = False
        if parser.peek() is not None:
            direction = parser.take("word").lower()
            if direction not in ("asc", "desc"):
                raise InvalidInput(f"order_by: expected asc or desc, got {direction!r}")
            descending = direction == "desc"
        if parser.peek() is not None:
            raise InvalidInput(f"order_by: unexpected {parser.peek()[1]!r}")  # type: ignore[index]
        keys.append(OrderKey(field, descending))
    return keys


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "like": lambda a, b: a.like(b),
}


def to_sql(node: Node) -> Any:
    """The WHERE clause over ``runs`` for a parsed filter."""
    if isinstance(node, BoolOp):
        parts = [to_sql(item) for item in node.items]
        return sa.and_(*parts) if node.op == "and" else sa.or_(*parts)
    return _comparison(node)


def _comparison(c: Comparison) -> Any:
    compare = _COMPARE[c.op]
    kind, key, value = c.field.kind, c.field.key, c.value
    if kind == "attr":
        if (ATTRIBUTES[key] == "number") != isinstance(value, float):
            raise InvalidInput(f"filter: {key} compares with a {ATTRIBUTES[key]}")
        return compare(t.runs.c[key], value)
    if kind == "metrics":
        if not isinstance(value, float) or c.op == "like":
            raise InvalidInput("filter: metrics compare with numbers")
        lm = t.latest_metrics
        sub = sa.select(lm.c.run_id).where(lm.c.key == key, compare(lm.c.value, value))
        return t.runs.c.id.in_(sub)
    table = t.params if kind == "params" else t.tags
    if isinstance(value, float):
        if c.op == "like":
            raise InvalidInput("filter: like needs a quoted pattern")
        cond = compare(table.c.number, value)  # values that are not numbers never match
    else:  # params hold JSON text: the string "adam" is stored as "\"adam\""
        cond = compare(table.c.value, json.dumps(value) if kind == "params" else value)
    sub = sa.select(table.c.run_id).where(table.c.key == key, cond)
    return t.runs.c.id.in_(sub)


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
        table = {"metrics": t.latest_metrics, "params": t.params, "tags": t.tags}[k.field.kind]
        alias = table.alias(f"o{n}")
        joins.append((alias, sa.and_(alias.c.run_id == t.runs.c.id, alias.c.key == k.field.key)))
        terms.append(alias.c.value.is_(None))
        if k.field.kind != "metrics":
            terms += [alias.c.number.is_(None), direction(alias.c.number)]
        terms.append(direction(alias.c.value))
    terms += [t.runs.c.start_time.desc(), t.runs.c.id]
    return terms, joins


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
