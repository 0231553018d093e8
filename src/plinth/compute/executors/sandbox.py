"""A sandbox for a local worker of a server with sign-in: it must not read what the
server keeps, nor change anything outside its own folders, nor ask another program to
act for it. The same sandbox runs each replica of a deployment on such a server
(serving/runtime.py): a model an editor registered is that project's code too.

A job on the local executor runs as the server's operating-system user, so without
this it could read the server's database, artifact store and master key, every
project's, or the server's own ``/proc/<pid>/environ`` and open files, and could
rewrite the server's own program (its virtualenv) to run as the server next time. On
Linux the worker starts in namespaces of its own (``unshare`` from util-linux; a user
namespace too when the server is not root):

- a **mount** namespace in which
  - every file system is **read-only** (those under another mount too), each mount
    keeping its own flags (``nosuid``, ``nodev`` …), so the job cannot change the
    server's program, its configuration, another job's files or (when the server
    runs as root) ``/proc/sys`` and ``/sys``;
  - ``/tmp`` and ``/var/tmp`` are the attempt's own folder (on disk, removed with the
    attempt), not the machine's (its files and sockets: tmux, X11); the server's own
    interpreter and code, where they lie there, are carried over read-only;
  - ``/run`` (other programs' sockets: a user's systemd and D-Bus, Docker, databases)
    is an empty tmpfs but for what name resolution needs;
  - each hidden path (the server's home, a database's folder or artifact store or key
    file outside it, the server's user's cloud and database credentials) is covered:
    a directory by an empty tmpfs, a file by ``/dev/null``;
  - the job's working directory, which lies inside the home, is bound back in place,
    writable, from a descriptor taken before the cover (``..`` from it reaches the
    empty cover, not the real parent); so are the other folders a caller names
    (``readable``, ``writable``: a replica's deployment folder read-only, its records
    and socket folders writable), and nothing else of what is hidden;
  - ``/dev`` is its own: the harmless devices (``null``, ``zero``, ``full``,
    ``random``, ``urandom``, ``tty``), the GPUs' (NVIDIA, DRI, ROCm, InfiniBand), a
    private ``/dev/shm`` (no larger than the job's memory limit, since its files count
    toward no process's memory) and ``/dev/pts``; no disks, no kernel log;
- no capabilities (``setpriv``: bounding set, inheritable and ambient sets emptied, no
  new privileges): a job mapped to root in its user namespace cannot unmount a cover
  or make a mount writable again, nor make a namespace of its own to do so;
- a user of its own when the server runs as root (``JOB_UID``, in no group), rather
  than root without capabilities, who could still read every file root owns and
  signal the sandbox's own processes: its folders are handed to that user, and where
  a folder on its way is closed to others (``/root``, where pyenv puts Pythons) it is
  covered, with the server's interpreter and the job's folder bound back;
- a **PID** namespace with its own ``/proc``: the server and the other jobs are not
  there to read. The sandbox's shell is its first process and runs the job as its
  child (not ``exec``), so the job keeps the usual signal semantics (a first process
  ignores SIGTERM it has no handler for). ``unshare --kill-child`` ends it with the
  wrapper: a job that kills its own process group leaves nothing behind;
- an **IPC** namespace: System V IPC and POSIX message queues of its own; a session
  keyring of its own and no keyring calls (seccomp): the keys of the server's process
  and user, and of the user root's jobs share, are not a job's.

The mounts are made by ``sandbox_setup.py``, run by this interpreter (``-I -S``, the
standard library only) as the namespaces' first process; it then becomes the shell
that runs the job. The sandbox's own programs (the wrapper's shell, ``unshare``, the
set-up, ``setpriv``) run with a fixed environment (``MACHINERY_ENV``), never the job's,
which its submitter chooses: a ``PATH`` or ``LD_PRELOAD`` of theirs would otherwise run
their code with the capabilities the set-up holds. The job's environment reaches it
through an anonymous file on stdin (``environment``), read by a shell that has already
dropped every capability, just before it becomes the job.

A stop signals the worker's whole process group, ``unshare`` included, which would die
of a SIGTERM and leave the wrapper to record an end while the job still runs its
handler: so ``unshare`` and the sandbox's shell start with the stop signals ignored,
and the job gets them back at their defaults (``env --default-signal``, coreutils).
A sandbox costs about 28 ms per worker start (the namespaces alone: 2 ms), most of it
the set-up's interpreter starting with ``ctypes`` (17 ms).

A job's network is shared (it reaches the server at ``PLINTH_URL`` with its scoped
token), and so are abstract Unix sockets and what the server's user may read elsewhere
on the machine: a database that trusts local TCP connections is reachable (use
passwords: docs/security.md). A deployment's replica, handed its listening sockets,
gets a network namespace of its own instead (``network=False``), with no interface.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from plinth.compute.executors import sandbox_setup
from plinth.compute.executors.sandbox_setup import SIGNALS

log = logging.getLogger(__name__)
T = TypeVar("T")

# the sandbox's own programs run with this environment only
MACHINERY_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
# the user (and group) a root server's jobs run as: the kernel's overflow id, "nobody"
JOB_UID = 65534
_SETUP = str(Path(sandbox_setup.__file__).resolve())
_IGNORING = f'trap "" {SIGNALS.replace(",", " ")}; exec "$@"'  # then unshare


def _unshare_flags(as_root: bool, network: bool = True) -> list[str]:
    # --kill-child: a job that kills its wrapper (and unshare with it: they share its
    # process group) must not live on untracked
    flags = ["--mount", "--propagation", "private", "--pid", "--kill-child", "--mount-proc"]
    if not network:  # a network namespace of its own: no interface up, not even loopback
        flags.append("--net")
    flags.append("--ipc")  # System V and POSIX message queues of its own
    if not as_root:  # a user namespace, where the set-up runs as root
        flags.insert(0, "--map-root-user")
    return flags


@cache
def _programs() -> tuple[str, str, str] | str:
    """(unshare, setpriv, env), or why the sandbox cannot run here; tried once,
    by running a whole sandbox around an empty shell."""
    names = ("unshare", "setpriv", "env")
    found = [shutil.which(name) for name in names]
    missing = [n for n, f in zip(names, found, strict=True) if f is None]
    if missing:
        return f"{', '.join(missing)} (util-linux, coreutils) not installed"
    unshare, setpriv, env = (str(f) for f in found)
    programs = (unshare, setpriv, env)
    try:
        subprocess.run([env, f"--default-signal={SIGNALS}", "true"], check=True)
    except (OSError, subprocess.SubprocessError):
        return "env has no --default-signal (coreutils 8.31 or later)"
    with tempfile.TemporaryDirectory(prefix="plinth-sandbox-probe-") as probe:
        work, tmp = Path(probe, "work"), Path(probe, "tmp")
        work.mkdir()
        tmp.mkdir()
        envfd = environment({})
        try:
            done = subprocess.run(
                [*_argv(programs, (), work, tmp), "/bin/sh", "-c", ""],
                env=MACHINERY_ENV,
                stdin=envfd,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"unshare failed: {exc}"
        finally:
            os.close(envfd)
    if done.returncode != 0:
        return f"this machine does not allow it: {done.stderr.strip()[-300:]}"
    return programs


class Provider:
    """The sandbox as a deployment's replicas take it (serving/runtime.py ``Sandbox``):
    serving may not import compute, so compute's dispatcher hands it over, with what
    to hide (``launch.server_paths``, the jobs' own)."""

    machinery_env = MACHINERY_ENV

    def __init__(self, server_paths: Callable[[], tuple[Path, ...]]) -> None:
        self._server_paths = server_paths

    def server_paths(self) -> tuple[Path, ...]:
        return self._server_paths()

    def command(
        self,
        hidden: Sequence[Path],
        work: Path,
        tmp: Path,
        *,
        readable: Sequence[Path] = (),
        writable: Sequence[Path] = (),
        network: bool = True,
        who: str = "jobs on the local pool",
    ) -> list[str]:
        return command(
            hidden, work, tmp, readable=readable, writable=writable, network=network, who=who
        )

    def environment(self, env: Mapping[str, str]) -> int:
        return environment(env)


def environment(env: Mapping[str, str]) -> int:
    """A descriptor of an anonymous file holding ``env`` as the shell's ``export``
    lines, for the sandbox to give the job: the worker's stdin. Names must be the
    shell's (the local executor checks them)."""
    fd = os.memfd_create("plinth-job-env")
    lines = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    data = memoryview(os.fsencode(lines))
    while data:
        data = data[os.write(fd, data) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def command(
    hidden: Sequence[Path],
    work: Path,
    tmp: Path,
    shm_bytes: int | None = None,
    *,
    readable: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    network: bool = True,
    who: str = "jobs on the local pool",
) -> list[str]:
    """The argv prefix that runs a command in a sandbox hiding ``hidden`` but for
    ``work``, its working directory, with ``tmp`` as its ``/tmp`` and a ``/dev/shm``
    of ``shm_bytes`` at most (None: the kernel's default); ``readable`` and
    ``writable`` are more folders bound back in place, read-only or writable (a
    deployment's replica: its own folder, its records); without ``network`` it has a
    network namespace of its own, with no interface (a replica, given its listening
    sockets as descriptors, reaches no database or other program). Run it with
    ``MACHINERY_ENV`` as its environment and the job's on stdin (``environment``);
    descriptors passed besides (``pass_fds``) reach the job. Raises OSError, naming
    ``who`` runs there, where no sandbox can be made."""
    found = _programs()
    if isinstance(found, str):
        raise OSError(
            f"{who} of a server with sign-in run in a sandbox (Linux mount and PID "
            f"namespaces), and {found}; set PLINTH_COMPUTE__LOCAL_SANDBOX=false to run "
            "them as the server's own user (see docs/security.md)"
        )
    if os.geteuid() == 0 and _job_uid():
        for folder in (work, tmp, *writable):
            _hand_over(folder)
    return _argv(
        found, hidden, work, tmp, shm_bytes, readable=readable, writable=writable, network=network
    )


@cache
def _job_uid() -> int:
    """The user a root server's jobs run as: ``JOB_UID``, where this root may make
    files its and become it (a user namespace of a container may not map it); else
    0, root without capabilities, which the server warns of."""
    try:
        with tempfile.TemporaryDirectory(prefix="plinth-sandbox-chown-") as probe:
            os.chown(probe, JOB_UID, JOB_UID)
            mapped = all(_maps(JOB_UID, f"/proc/self/{kind}_map") for kind in ("uid", "gid"))
    except OSError:
        mapped = False
    if mapped:
        return JOB_UID
    log.warning(
        "plinth: this server runs as root and cannot run its jobs as user %d (not mapped "
        "in its user namespace, or no right to chown): a sandboxed job stays uid 0 "
        "without capabilities, on a read-only file system; run the server as a user of "
        "its own (docs/security.md)",
        JOB_UID,
    )
    return 0


def _maps(inside: int, table: str) -> bool:
    """Whether the id map ``table`` (``/proc/self/uid_map``) maps ``inside``."""
    with open(table) as lines:
        for line in lines:
            first, _, count = (int(n) for n in line.split())
            if first <= inside < first + count:
                return True
    return False


def _hand_over(folder: Path) -> None:
    """``folder`` and all in it made the job's user's, once, before its first worker
    runs (a folder the user owns already is left alone): what the snapshot brought is
    the job's to change, as it would be its owner's without the sandbox. Walked by
    descriptor, depth first (as many open as the tree is deep), each folder opened
    without following a link and without blocking, on this file system only; the top
    folder last, so that a walk cut short by an error is made again next time. A
    folder gone is left for the set-up to report."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        top = os.open(folder, flags)
    except OSError:
        return
    try:
        found = os.fstat(top)
        if found.st_uid == JOB_UID:
            return
        stack: list[tuple[int, Iterator[os.DirEntry[str]]]] = []
        try:
            stack.append((os.dup(top), _entries(top)))
            while stack:
                at, entries = stack[-1]
                entry = next(entries, None)
                if entry is None:
                    stack.pop()
                    if stack:  # the top folder: last of all, below
                        os.fchown(at, JOB_UID, JOB_UID)
                    os.close(at)
                elif not entry.is_dir(follow_symlinks=False):  # a file; a link as a link
                    _gone_ok(
                        os.chown, entry.name, JOB_UID, JOB_UID, dir_fd=at, follow_symlinks=False
                    )
                elif (inner := _gone_ok(os.open, entry.name, flags, dir_fd=at)) is not None:
                    if os.fstat(inner).st_dev == found.st_dev:
                        stack.append((inner, _entries(inner)))
                    else:
                        os.close(inner)
        finally:
            for at, _ in stack:
                os.close(at)
        os.fchown(top, JOB_UID, JOB_UID)
    finally:
        os.close(top)


def _entries(fd: int) -> Iterator[os.DirEntry[str]]:
    with os.scandir(fd) as entries:
        return iter(list(entries))


def _gone_ok(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``call``, or None where what it names is gone or is no folder (any other
    error stops the walk: the folder is not the job's until all in it is)."""
    try:
        return call(*args, **kwargs)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _argv(
    programs: tuple[str, str, str],
    hidden: Sequence[Path],
    work: Path,
    tmp: Path,
    shm_bytes: int | None = None,
    python: str | None = None,
    as_root: bool | None = None,
    readable: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    network: bool = True,
) -> list[str]:
    """The argv prefix; ``python`` (this interpreter) runs the set-up, ``as_root``
    (whether this process is) says whether a user namespace is needed, or whether the
    job runs as ``JOB_UID`` instead; without ``network``, no network at all."""
    unshare, setpriv, env = programs
    root = os.geteuid() == 0 if as_root is None else as_root
    uid = _job_uid() if root else 0
    return [
        "/bin/sh",
        "-c",
        _IGNORING,
        "plinth-sandbox",
        unshare,
        *_unshare_flags(root, network),
        python or sys.executable,
        "-I",
        "-S",
        _SETUP,
        setpriv,
        env,
        str(work.resolve()),
        str(tmp.resolve()),
        str(shm_bytes or 0),
        str(uid),
        *(str(path.resolve()) for path in hidden),  # a link: what it leads to
        "--",
        *_carried(bool(uid)),
        "--",
        *(str(path.resolve()) for path in readable),
        "--",
        *(str(path.resolve()) for path in writable),
        "--",
    ]


@cache
def _carried(other_user: bool) -> tuple[str, ...]:
    """The folders of this interpreter and its code (``sys.path``) that a sandboxed job
    would not reach, carried over read-only so that it can run this interpreter: those
    under /tmp or /var/tmp, which it sees as its own (a CI's checkout lies there), and
    for a job of ``other_user`` those under a folder others may not enter (``/root``,
    where pyenv puts Pythons)."""
    tmps = [Path(t).resolve() for t in sandbox_setup.TMPS]
    found: list[Path] = []
    # not sys.path[0], the script's folder or the working directory: not the
    # interpreter's, and under /root it may hold anything (the hidden paths in it are
    # covered after, as everywhere)
    for entry in sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path[1:]}):
        path = Path(entry).resolve() if entry else None
        if path is None or not path.is_dir():
            continue
        if any(path.is_relative_to(t) for t in tmps) or (other_user and _closed_on_way(path)):
            found.append(path)
    outer = [p for p in found if not any(p != q and p.is_relative_to(q) for q in found)]
    return tuple(str(p) for p in outer)


def _closed_on_way(path: Path) -> bool:
    """Whether a folder on the way to ``path`` is closed to ``JOB_UID``."""
    return any(not sandbox_setup.enterable(str(folder), JOB_UID) for folder in path.parents)
