"""``python -m plinth.serving SOURCE [options]``: the same as ``plinth serve``, for
hosts that start the server without the ``plinth`` command; and ``python -m
plinth.serving --replica CONFIG --socket PATH --deployment ID [--secret-fd FD]
[--listen-fd FD --admin-fd FD]``, a deployment's replica as its control plane starts
it (runtime.py): ``ID`` only names the process, the secret comes through a pipe, and
the listening sockets are handed down (else it binds them itself)."""

from __future__ import annotations

import sys

from plinth.errors import PlinthError
from plinth.serving.cli import serve_app


def main() -> None:
    try:
        if sys.argv[1:2] == ["--replica"]:
            from plinth.serving.runtime import replica_main

            options = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
            fds = [options.get(f"--{name}-fd") for name in ("secret", "listen", "admin")]
            replica_main(
                options["--replica"],
                options["--socket"],
                *(None if fd is None else int(fd) for fd in fds),
            )
            return
        serve_app(prog_name="plinth serve")
    except PlinthError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
