"""What JSON the serving side takes in and keeps: arrays and objects nested at most
``MAX_DEPTH`` deep, and text that UTF-8 can carry (no lone surrogate, which JSON's
``\\uD800`` escapes can spell and Python's parser accepts).

A model input never needs either, and a prediction record holding one could not be
sent back (a JSON response cannot encode a lone surrogate, and a page's serializer
stops far short of what Python's parser takes). So a request body holding one is
refused (asgi.read_json), the writer leaves such inputs or outputs out of a record
(records.line) and the reader of pages does too (record_pages), or skips the line.

Both checks look at the JSON text first, at C speed, and at the values only when
the text says they might be deep or hold a surrogate.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64  # a tensor of rank 64 or records within records 64 deep: none is real

_NOT_MARK = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_ONE_KIND = bytes.maketrans(b"{}", b"[]")  # nesting is nesting, of arrays or objects
# a \uD800-\uDFFF escape, or such a code point as (invalid) UTF-8 bytes
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def too_deep(text: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` deep
    (for text that is not JSON: whether a parser might go that deep finding out).
    Never parses: safe on text deep enough to exhaust a parser's recursion."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    brackets = _brackets(text)
    for level in range(limit):  # each pass takes off the innermost level
        if not brackets:
            return False
        fewer = brackets.replace(b"[]", b"")
        if len(fewer) == len(brackets):  # unbalanced, so not JSON: what could still open
            return level + brackets.count(b"[") > limit
        brackets = fewer
    return bool(brackets)


def _brackets(text: bytes) -> bytes:
    """The brackets of ``text`` outside its strings (whose brackets nest nothing),
    all as ``[`` and ``]``."""
    if b"\\" in text:  # escaped backslashes (a run pairs off from the left), then
        # escaped quotes: every quote left opens or closes a string
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    # two quotes side by side close a string and open the next, or are an empty one:
    # either way nothing between them is outside a string
    marks = text.translate(_ONE_KIND, _NOT_MARK).replace(b'""', b"")
    return b"".join(marks.split(b'"')[::2]) if b'"' in marks else marks


def lone_surrogate(value: Any, text: bytes) -> bool:
    """Whether ``value``, parsed from (or serialized as) the JSON ``text``, holds a
    string with a lone surrogate: UTF-8 cannot encode it."""
    if not _SURROGATE.search(text):
        return False  # the common case: no escape that could spell one
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode()
    except UnicodeEncodeError:
        return True
    return False
