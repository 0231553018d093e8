"""Hosts a local gang's PyTorch rendezvous store on loopback, around rank 0's command.

torch's ``env://`` rendezvous makes rank 0 start a TCPStore that listens on every
interface (``::``), whatever ``MASTER_ADDR`` says: on a shared machine that is an
unauthenticated key-value store open to the network for the whole job. On the local
executor Plinth runs rank 0's command under this script instead: it binds
``MASTER_ADDR:MASTER_PORT`` (loopback) itself, hands the bound socket to a TCPStore
(``master_listen_fd``), and every rank, rank 0 included, joins it as a client
(``TORCHELASTIC_USE_AGENT_STORE=True``, as under torchrun's agent). The store lives
exactly as long as rank 0's command: that runs as this script's child, in the same
process group (a stop reaches both), and the script exits with its code.

Run by path (``hosted`` builds the argv), with only the standard library at import
time and torch once the command has started, so it costs the job no start-up time.
Where the interpreter has no torch, rank 0's command hosts the store itself, as
torch does, and the log says so.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta

AGENT_STORE = "TORCHELASTIC_USE_AGENT_STORE"  # reserved: core.names.RESERVED_ENV
_STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
_hosted: list[object] = []  # the store, alive until this process exits


def hosted(argv: tuple[str, ...]) -> tuple[str, ...]:
    """Rank 0's argv, run under this script by the server's own interpreter."""
    return (sys.executable, os.path.abspath(__file__), "--", *argv)


def main(args: list[str]) -> int:
    if args[:1] != ["--"] or len(args) < 2:
        print("usage: rendezvous.py -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    command, env = args[1:], dict(os.environ)
    if importlib.util.find_spec("torch") is None:
        print("plinth: no torch beside Plinth: rank 0 hosts the rendezvous", file=sys.stderr)
        env.pop(AGENT_STORE, None)
        return _run(command, env, None)
    try:
        listener = _listen(env["MASTER_ADDR"], int(env["MASTER_PORT"]))
    except (KeyError, ValueError, OSError) as exc:
        print(f"plinth: cannot host the rendezvous: {exc}", file=sys.stderr)
        return 1
    return _run(command, env, listener)


def _listen(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(256)  # ranks that come before the store is up wait in the backlog
    listener.set_inheritable(False)
    return listener


def _run(command: list[str], env: dict[str, str], listener: socket.socket | None) -> int:
    for stop in _STOPS:  # the group's stop reaches the command; this waits for it
        signal.signal(stop, lambda *_: None)
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"plinth: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    if listener is not None:  # torch loads meanwhile; a stop is not held up by it
        threading.Thread(target=_serve, args=(listener, child), daemon=True).start()
    code = child.wait()
    return 128 - code if code < 0 else code  # a signal N as a shell reports it


def _serve(listener: socket.socket, child: subprocess.Popen[bytes]) -> None:
    try:
        _hosted.append(_store(listener))
    except Exception as exc:  # the ranks would wait for a store that never comes
        print(f"plinth: the rendezvous store failed: {exc}", file=sys.stderr, flush=True)
        child.kill()


def _store(listener: socket.socket) -> object:
    from torch.distributed import TCPStore

    host, port = listener.getsockname()[:2]
    return TCPStore(
        host,
        port,
        None,
        True,
        timedelta(days=1),
        wait_for_workers=False,
        master_listen_fd=listener.fileno(),
    )


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # no teardown of the store's threads: the ranks are gone
