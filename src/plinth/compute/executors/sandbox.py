"""A sandbox for a local worker of a server with sign-in: it must not read what the
server keeps.

A job on the local executor runs as the server's operating-system user, so without
this it could read the server's database, artifact store and master key, every
project's, or the server's own ``/proc/<pid>/environ`` and open files. On Linux the
worker starts in namespaces of its own (``unshare`` from util-linux; a user namespace
too when the server is not root):

- a **mount** namespace in which each hidden path (the server's home, a database file
  or artifact store or key file outside it) is covered: a directory by an empty,
  16 KiB tmpfs, a file by ``/dev/null``. The job's working directory, which lies
  inside the home, is bound back in place from a descriptor taken before the cover,
  so the job sees its own files and nothing beside them (``..`` from it reaches the
  empty cover, not the real parent);
- no capabilities (``setpriv``: bounding set, inheritable and ambient sets emptied, no
  new privileges): a job that is root in its namespaces (the server runs as root, or
  is mapped to root in a user namespace) cannot unmount a cover to see what lies
  under it, nor make a namespace of its own to do so;
- a **PID** namespace with its own ``/proc``: the server and the other jobs are not
  there to read. The sandbox's shell is its first process and runs the job as its
  child (not ``exec``), so the job keeps the usual signal semantics (a first process
  ignores SIGTERM it has no handler for).

A stop signals the worker's whole process group, ``unshare`` included, which would die
of a SIGTERM and leave the wrapper to record an end while the job still runs its
handler: so ``unshare`` and the sandbox's shell start with the stop signals ignored,
and the job gets them back at their defaults (``env --default-signal``, coreutils).

The network is shared (the job reaches the server at ``PLINTH_URL`` with its scoped
token) and so are devices (GPUs). What the sandbox cannot take away: whatever the
server's user may read elsewhere on the machine, and a database that trusts local
connections (use passwords: docs/security.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

_SIGNALS = "HUP,INT,QUIT,TERM,USR1,USR2"  # what the wrapper traps, and a stop sends
# $1 mount, $2 setpriv, $3 env, $4 "pwd" when the job was given a PWD (else dash's own is
# unset, as the wrapper does), $5 the job's working directory, then each hidden path up
# to "--", then the job's argv. Run by unshare as the first process of the namespaces.
_SCRIPT = f"""
mount=$1; setpriv=$2; env=$3; pwd=$4; work=$5; shift 5
fail() {{ echo "plinth: the job's sandbox could not be set up: $1" >&2; exit 126; }}
command exec 3<"$work" || fail "cannot open $work"
while [ "$1" != -- ]; do
    if [ -d "$1" ]; then
        "$mount" -t tmpfs -o mode=755,size=16k plinth-hidden "$1" || fail "cannot cover $1"
    elif [ -e "$1" ]; then
        "$mount" --bind /dev/null "$1" || fail "cannot cover $1"
    fi
    shift
done
shift
mkdir -p "$work" || fail "cannot make $work"
"$mount" --no-canonicalize --bind /proc/self/fd/3 "$work" || fail "cannot bind $work"
exec 3<&-
cd "$work" || fail "cannot enter $work"
[ "$pwd" = pwd ] || unset PWD
"$setpriv" --bounding-set=-all --inh-caps=-all --ambient-caps=-all --no-new-privs \\
    "$env" --default-signal={_SIGNALS} "$@"
"""
_IGNORING = f'trap "" {_SIGNALS.replace(",", " ")}; exec "$@"'  # then unshare


def _unshare_flags() -> list[str]:
    flags = ["--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:  # a user namespace, where mount(8) runs as root
        flags.insert(0, "--map-root-user")
    return flags


@cache
def _programs() -> tuple[str, str, str, str] | str:
    """(unshare, mount, setpriv, env), or why the sandbox cannot run here; tried once."""
    names = ("unshare", "mount", "setpriv", "env")
    found = [shutil.which(name) for name in names]
    if None in found:
        missing = ", ".join(n for n, f in zip(names, found, strict=True) if f is None)
        return f"{missing} (util-linux, coreutils) not installed"
    unshare, mount, setpriv, env = (str(f) for f in found)
    try:
        subprocess.run([env, f"--default-signal={_SIGNALS}", "true"], check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "env has no --default-signal (coreutils 8.31 or later)"
    probe = Path(tempfile.mkdtemp(prefix="plinth-sandbox-probe-"))
    drop = [setpriv, "--bounding-set=-all", "--no-new-privs", "true"]
    script = '"$1" -t tmpfs -o size=4k probe "$2" && shift 2 && exec "$@"'
    try:
        done = subprocess.run(
            [unshare, *_unshare_flags(), "/bin/sh", "-c", script, "-", mount, probe, *drop],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unshare failed: {exc}"
    finally:
        probe.rmdir()
    if done.returncode != 0:
        return f"this machine does not allow it: {done.stderr.strip()[:200]}"
    return unshare, mount, setpriv, env


@cache
def _warn_root() -> None:
    log.warning(
        "plinth: this server runs as root, so a sandboxed job stays uid 0 (without "
        "capabilities) and can still change files root owns outside its sandbox's "
        "covers: run the server as a user of its own (docs/security.md)"
    )


def command(hidden: Sequence[Path], work: Path, pwd: bool = False) -> list[str]:
    """The argv prefix that runs a command in a sandbox hiding ``hidden`` but for
    ``work``, its working directory (``pwd``: the command's environment names a
    ``PWD``); raises OSError where none can be made."""
    found = _programs()
    if isinstance(found, str):
        raise OSError(
            "jobs on the local pool of a server with sign-in run in a sandbox (Linux mount "
            f"and PID namespaces), and {found}; set PLINTH_COMPUTE__LOCAL_SANDBOX=false to "
            "run them as the server's own user (see docs/security.md)"
        )
    unshare, mount, setpriv, env = found
    if os.geteuid() == 0:
        _warn_root()
    return [
        "/bin/sh",
        "-c",
        _IGNORING,
        "plinth-sandbox",
        unshare,
        *_unshare_flags(),
        "/bin/sh",
        "-c",
        _SCRIPT,
        "plinth-sandbox",
        mount,
        setpriv,
        env,
        "pwd" if pwd else "-",
        str(work.absolute()),
        *(str(path.absolute()) for path in hidden),
        "--",
    ]
