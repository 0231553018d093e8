"""What every capability's commands share: the client they call, ``--json``, and how
a time reads. Light to import: ``plinth --help`` loads nothing more for it."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from plinth.client import Client

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def client() -> Client:
    """The client a command calls: embedded, or remote with ``PLINTH_URL``."""
    from plinth.client import Client

    return Client()


# In text others wrote (a job's log, a model card), what a terminal would act on beyond
# drawing: every escape but a CSI sequence (colours, cursor moves: progress bars), so
# no OSC (a clipboard write, a title, a link), DCS, APC, PM or SOS, and the C1 controls
_UNSAFE = re.compile(r"\x1b(?!\[[0-?]*[ -/]*[@-~])|[\x80-\x9f]")


def escape(text: str) -> str:
    """``text`` others wrote, for a Rich table or line: its markup shown as text
    (``[/]`` would end a style, or fail), and every escape a terminal would act on
    shown as text too (``^[``): a table is no place for a job's colours either."""
    from rich.markup import escape as markup_escaped

    return markup_escaped(_shown(text, _ESCAPES))


def for_terminal(text: str) -> str:
    """``text`` as a reader's terminal may show it: on a terminal, the escapes it would
    act on shown as text instead (``^[``, ``\\x9d``); elsewhere (a pipe, a file), as is."""
    return _shown(text, _UNSAFE) if sys.stdout.isatty() else text


_ESCAPES = re.compile(r"[\x1b\x80-\x9f]")


def _shown(text: str, unsafe: re.Pattern[str]) -> str:
    return unsafe.sub(lambda m: "^[" if m[0] == "\x1b" else f"\\x{ord(m[0]):02x}", text)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def size(n: int | None) -> str:
    """Bytes as a person reads them: ``812 B``, ``1.5 MiB``."""
    if n is None:
        return "-"
    amount, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, bigger
    return f"{n} B" if unit == "B" else f"{amount:.1f} {unit}"


def key_values(items: list[str] | None, option: str) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options (``--env``, ``--param``) as a dict."""
    from plinth.errors import InvalidInput

    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"{option} takes KEY=VALUE, not {item!r}")
        pairs[key.strip()] = value
    return pairs
