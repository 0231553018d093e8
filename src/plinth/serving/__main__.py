"""``python -m plinth.serving SOURCE [options]``: the same as ``plinth serve``, for
hosts that start the server without the ``plinth`` command (deployment replicas)."""

from __future__ import annotations

import sys

from plinth.errors import PlinthError
from plinth.serving.cli import serve_app


def main() -> None:
    try:
        serve_app(prog_name="plinth serve")
    except PlinthError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
