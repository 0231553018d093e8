"""``python -m plinth.serving SOURCE [options]``: the same as ``plinth serve``, for
hosts that start the server without the ``plinth`` command; and ``python -m
plinth.serving --replica CONFIG --socket PATH --deployment ID``, a deployment's replica
as its control plane starts it (runtime.py)."""

from __future__ import annotations

import sys

from plinth.errors import PlinthError
from plinth.serving.cli import serve_app


def main() -> None:
    try:
        if sys.argv[1:2] == ["--replica"]:
            from plinth.serving.runtime import replica_main

            replica_main(sys.argv[2], sys.argv[4])
            return
        serve_app(prog_name="plinth serve")
    except PlinthError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
