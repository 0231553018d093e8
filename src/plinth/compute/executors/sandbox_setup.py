"""The sandbox's set-up: the first process of a local worker's new namespaces, holding
every capability in them, run as ``python -I -S`` before the job (``sandbox.py`` says
what it makes and why). The standard library only, and as few modules as will do:
their import is most of a sandbox's start. The server imports it for its constants.

argv: setpriv, env, the job's working directory, its temporary folder, the size of its
``/dev/shm`` in bytes (0: the kernel's default, half the memory), the user id the job
runs as (0: the set-up's own, in a user namespace), each hidden path, ``--``, each
folder the job must still see where a cover would hide it (the server's interpreter and
code under /tmp, or under a folder that the job's user may not enter), read-only,
``--``, each folder bound back in place read-only after the covers (a replica's own
deployment folder), ``--``, each bound back writable (a replica's records and socket
folders), ``--``, then the job's argv. Its environment is the
sandbox's own (never the job's, which arrives on stdin). On success it becomes
``/bin/sh`` running the job through ``setpriv`` (every capability dropped) and
``env``; on failure it says what it could not do and exits 126.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME = 0x20, 0x100, 0x400, 0x800
MS_BIND, MS_RELATIME, MS_STRICTATIME = 0x1000, 0x200000, 0x1000000
# statvfs's flags and the mount flags they are: what a remount must keep (in a user
# namespace a mount's nosuid, nodev, noexec and atime flags may not be dropped)
KEPT = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
    (0x2000, MS_NOSYMFOLLOW),  # ST_NOSYMFOLLOW
)
HIDDEN = MS_NOSUID | MS_NODEV | MS_NOEXEC
SIGNALS = "HUP,INT,QUIT,TERM,USR1,USR2"  # what the wrapper traps, and a stop sends
TMPS = ("/tmp", "/var/tmp")  # each the job's own temporary folder
# Where other programs' sockets are (a user's systemd and D-Bus, Docker, databases'
# local sockets): each covered, but for what name resolution needs there
RUNS = ("/run", "/var/run")
RESOLVE = ("/run/systemd/resolve",)  # and the folder /etc/resolv.conf's link leads to
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
ACCELERATORS = ("nvidia", "dri", "kfd", "infiniband")  # /dev names starting so
LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}
# pid 1 of the namespaces: runs the job as its child (a first process would ignore the
# SIGTERM the job has no handler for), and ends with its code
RUN = '"$@"\nexit $?'
# With no capability left (and the signals back at their defaults): the job's
# environment exactly as given (nothing of the sandbox's own), then the job's argv as
# given, its stdin /dev/null as unsandboxed.
ENTER = 'unset PATH PWD OLDPWD\n. /proc/self/fd/0 || exit 126\nexec "$@" < /dev/null\n'


_libc = ctypes.CDLL(None, use_errno=True)  # the process's own: loads nothing new
_libc.mount.argtypes = (ctypes.c_char_p,) * 3 + (ctypes.c_ulong, ctypes.c_char_p)
_libc.syscall.restype = ctypes.c_long
# mount_setattr(2), Linux 5.12: one number on every architecture but alpha's
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1


class MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("set", "clr", "propagation", "userns")]


class Failed(Exception):
    pass


def mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    def raw(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    if _libc.mount(raw(source), raw(target), raw(kind), flags, raw(data) if data else None):
        raise _errno(target)


def kept(path: str) -> int:
    """The flags of the mount at ``path`` that a remount must repeat."""
    found = os.statvfs(path).f_flag
    flags = sum(flag for st, flag in KEPT if found & st)
    if not found & (os.ST_NOATIME | os.ST_RELATIME):
        flags |= MS_STRICTATIME
    return flags


def all_read_only() -> bool:
    """Every mount of the namespace read-only in one call, each keeping its other flags,
    those under another mount too (a remount by path cannot reach them); False where
    the kernel has no ``mount_setattr`` or refuses it for some mount (it then changes
    none)."""
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    done = _libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        b"/",
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    return done == 0


def remount(path: str, readonly: bool) -> None:
    mount(None, path, None, MS_REMOUNT | MS_BIND | (MS_RDONLY if readonly else 0) | kept(path))


def writable_mounts() -> list[str]:
    """Where each writable mount is, from ``/proc/self/mountinfo`` (octal escapes read)."""
    found = []
    with open("/proc/self/mountinfo", "rb") as info:
        for line in info:
            fields = line.split(b" ")
            if fields[5].split(b",")[0] == b"rw":
                found.append(os.fsdecode(unescaped(fields[4])))
    return found


def unescaped(field: bytes) -> bytes:
    """A mountinfo field as it is: the kernel writes a space, tab, newline or backslash
    in it as a backslash and three octal digits."""
    first, *rest = field.split(b"\\")
    return first + b"".join(bytes([int(part[:3], 8)]) + part[3:] for part in rest)


def opened(path: str) -> int:
    """A descriptor of ``path`` to bind from once something covers it."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY)


def bind(fd: int, target: str, readonly: bool) -> None:
    """The folder ``fd`` opens, at ``target`` (made if need be)."""
    os.makedirs(target, exist_ok=True)
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND)
    remount(target, readonly)


def cover(path: str, keep: list[str], make: tuple[str, ...] = ()) -> None:
    """An empty tmpfs over the folder ``path``, read-only, with the folders ``keep``
    below it bound back as they were, and the folders ``make`` made in it (where a
    later bind goes)."""
    handles = [(opened(folder), folder) for folder in keep]
    mount("plinth-hidden", path, "tmpfs", HIDDEN, "mode=755,size=16k")
    for fd, folder in handles:
        bind(fd, folder, readonly=True)
        os.close(fd)
    for folder in make:
        os.makedirs(folder, exist_ok=True)
    remount(path, readonly=True)


def under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def enterable(folder: str, uid: int) -> bool:
    """Whether user ``uid``, whose only group has the same number, may enter ``folder``
    (raises OSError where it is not)."""
    found = os.stat(folder)
    if found.st_uid == uid:
        return bool(found.st_mode & 0o100)
    return bool(found.st_mode & (0o010 if found.st_gid == uid else 0o001))


def closed_to(uid: int, made: list[str], seen: list[str]) -> dict[str, list[str]]:
    """The outermost folders on the way to each of ``made`` (the job's folders, bound
    later) and of ``seen`` that user ``uid`` may not enter (``/root``, 0700), each with
    the folders of ``seen`` below it: covered and those bound back, the job's user gets
    there."""
    found: dict[str, list[str]] = {}
    for path in (*made, *seen):
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            folder = "/" + "/".join(parts[:depth])
            try:
                closed = not enterable(folder, uid)
            except OSError:
                break  # not in this view (below a cover): made afresh, open to all
            if closed:
                found.setdefault(folder, [])
                if path not in made:
                    found[folder].append(path)
                break
    return found


def set_up(
    work: str,
    tmp: str,
    shm: int,
    uid: int,
    hidden: list[str],
    seen: list[str],
    readable: tuple[str, ...] = (),
    writable: tuple[str, ...] = (),
) -> None:
    try:  # before anything covers them
        own, scratch = opened(work), opened(tmp)
        carried = [(opened(path), path) for path in seen]
        # the job's other folders, bound back after the covers
        kept = [(path, True) for path in readable] + [(path, False) for path in writable]
        binds = [(opened(path), path, ro) for path, ro in kept]
    except OSError as exc:
        raise Failed(f"cannot open {exc.filename}") from exc
    binds.append((own, work, False))
    binds.sort(key=lambda bound: bound[1].count("/"))  # a folder before those inside it
    made = [path for _, path, _ in binds]
    # 1. every mount read-only, with its own flags (by path on a kernel before 5.12)
    for at in [] if all_read_only() else writable_mounts():
        try:
            remount(at, readonly=True)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue  # its mount point is gone, or out of this user's reach: the job's too
        except OSError as exc:
            raise Failed(f"cannot make {at} read-only") from exc
    # 2. /tmp and /var/tmp: the attempt's own folder, writable (what lay there is gone
    # from view, a home or key below them included), with the server's interpreter and
    # code carried over read-only where they lay there
    for at in TMPS:
        if os.path.isdir(at) and not os.path.islink(at):
            try:
                bind(scratch, at, readonly=False)
            except OSError as exc:
                raise Failed(f"cannot bind {at}") from exc
    try:
        for fd, path in carried:
            if any(under(path, at) for at in TMPS):
                bind(fd, path, readonly=True)
            os.close(fd)
    except OSError as exc:
        raise Failed(f"cannot carry {exc.filename} over") from exc
    # 2b. a job of another user than the set-up's: the folders on its way that it may
    # not enter (root's home, where the server's interpreter may lie) covered, with
    # what it must reach there bound back
    if uid:
        # (before the covers of what is hidden, which go over what is bound back here)
        others = [p for p in seen if not any(under(p, at) for at in TMPS) and os.path.isdir(p)]
        for folder, keep in sorted(closed_to(uid, made, others).items()):
            try:
                cover(folder, keep, make=tuple(p for p in made if under(p, folder)))
            except OSError as exc:
                raise Failed(f"cannot open the way through {folder}") from exc
    # 3. other programs' sockets, covered (read-only files do not stop a connect)
    resolv = os.path.dirname(os.path.realpath("/etc/resolv.conf"))
    for at in RUNS:
        if os.path.isdir(at) and not os.path.islink(at):
            keep = [d for d in {*RESOLVE, resolv} if d.startswith(at + "/") and os.path.isdir(d)]
            try:
                cover(at, sorted(keep))
            except OSError as exc:
                raise Failed(f"cannot cover {at}") from exc
    # 4. what the server keeps, covered, read-only too (with the way to the work)
    for path in hidden:
        try:
            if os.path.isdir(path):
                mount("plinth-hidden", path, "tmpfs", HIDDEN, "mode=755,size=16k")
                for inside in made:  # where the job's folders are bound back
                    if under(inside, path):
                        os.makedirs(inside, exist_ok=True)
                remount(path, readonly=True)
            elif os.path.exists(path):  # a link to nothing hides nothing
                mount("/dev/null", path, None, MS_BIND)
        except OSError as exc:
            raise Failed(f"cannot cover {path}") from exc
    # 5. its working directory, writable, and its other folders as they are given
    for fd, path, readonly in binds:
        try:
            bind(fd, path, readonly=readonly)
        except OSError as exc:
            raise Failed(f"cannot bind {path}") from exc
        os.close(fd)
    os.close(scratch)
    # 6. a /dev of its own (nothing of it made in the job's folder, which its other
    # workers share and a full disk may refuse)
    try:
        make_dev(shm)
    except OSError as exc:
        raise Failed("cannot make a /dev") from exc
    try:
        os.chdir(work)
    except OSError as exc:
        raise Failed(f"cannot enter {work}") from exc


def make_dev(shm: int) -> None:
    """A tmpfs over ``/dev`` with the harmless devices and the accelerators' bound in
    from the machine's ``/dev`` beneath it, a private ``/dev/shm`` (of ``shm`` bytes at
    most, when not 0) and ``/dev/pts``."""
    names = [*DEVICES, *(n for n in sorted(os.listdir("/dev")) if n.startswith(ACCELERATORS))]
    machine = opened("/dev")
    try:
        mount("plinth-dev", "/dev", "tmpfs", HIDDEN, "mode=755,size=64k")
        for name in names:
            node, target = f"/proc/self/fd/{machine}/{name}", f"/dev/{name}"
            if not os.path.exists(node):
                continue
            if os.path.isdir(node):
                os.mkdir(target)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
            mount(node, target, None, MS_BIND)
    finally:
        os.close(machine)
    os.mkdir("/dev/shm")
    size = f",size={shm}" if shm else ""
    mount("plinth-shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777{size}")
    os.mkdir("/dev/pts")
    pts = "newinstance,ptmxmode=0666,mode=0620"
    mount("plinth-pts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts)
    for name, to in LINKS.items():
        os.symlink(to, f"/dev/{name}")
    remount("/dev", readonly=True)


# The kernel's keyrings, by architecture as seccomp names it: (add_key, request_key,
# keyctl), for the native calls and for the 32-bit ones a 64-bit kernel also takes
KEY_CALLS = {
    0xC000003E: (248, 249, 250),  # x86_64 (x32's are these | 0x40000000)
    0x40000003: (286, 287, 288),  # i386
    0xC00000B7: (217, 218, 219),  # aarch64
    0x40000028: (309, 310, 311),  # arm
}
ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # this machine's, as seccomp names it
JOIN_SESSION_KEYRING = 1
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
# classic BPF: load a word of seccomp_data, jump if equal to k, AND with k, return k
LD, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def key_filter() -> list[tuple[int, int, int, int]]:
    """A seccomp program answering ENOSYS to every keyring call, on each architecture
    (a job may run a 32-bit program), as if the kernel kept no keys."""
    refused = (RET, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS)
    allowed = (RET, 0, 0, SECCOMP_RET_ALLOW)
    program: list[tuple[int, int, int, int]] = []
    for arch, calls in KEY_CALLS.items():
        # arch matches: the number without x32's bit, each call refused, the rest allowed
        block = [(LD, 0, 0, 0), (AND, 0, 0, 0xBFFFFFFF)]
        for n, call in enumerate(calls):
            block.append((JEQ, len(calls) - n, 0, call))
        block += [allowed, refused]
        program += [(LD, 0, 0, 4), (JEQ, 0, len(block), arch), *block]
    return [*program, allowed]


def no_keyrings() -> None:
    """A new, empty session keyring for the set-up's shell, then no keyring calls at all
    for the job: the server's session keyring, its user's own and persistent ones, and
    those of the user the jobs share, are not a job's to read or to leave keys in."""
    arch = ARCH.get(os.uname().machine)
    if arch is not None:
        keyctl = ctypes.c_long(KEY_CALLS[arch][2])
        joined = _libc.syscall(keyctl, ctypes.c_int(JOIN_SESSION_KEYRING), ctypes.c_void_p(None))
        # refused (a container's seccomp profile) or no keys at all: the filter still holds
        absent = (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES)
        if joined == -1 and ctypes.get_errno() not in absent:
            raise Failed("cannot make a keyring of its own") from _errno()
    program = key_filter()
    filters = (SockFilter * len(program))(*(SockFilter(*op) for op in program))
    prog = SockFprog(len(program), filters)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise Failed("cannot refuse the job the kernel's keyrings") from _errno()


def _errno(filename: str | None = None) -> OSError:
    """The error of the last call through ``_libc``."""
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code), filename)


def main(argv: list[str]) -> None:
    setpriv, env, work, tmp, shm, uid, *rest = argv
    lists = []
    for _ in range(4):  # hidden, seen, readable, writable: each ends at a "--"
        split = rest.index("--")
        lists.append(rest[:split])
        rest = rest[split + 1 :]
    hidden, seen, readable, writable = lists
    umask = os.umask(0o022)  # what it makes on the way must be open to the job's user
    try:
        set_up(work, tmp, int(shm), int(uid), hidden, seen, tuple(readable), tuple(writable))
        no_keyrings()
    except Failed as exc:
        cause = exc.__cause__
        why = f": {cause.strerror}" if isinstance(cause, OSError) and cause.strerror else ""
        print(f"plinth: the job's sandbox could not be set up: {exc}{why}", file=sys.stderr)
        sys.exit(126)
    os.umask(umask)
    drop = ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"]
    if int(uid):  # a user of its own, in no group: not root without capabilities
        drop += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    # SIGPIPE and SIGXFSZ too: this interpreter ignored them, as Python does. env(1)
    # before the shell, so that the job's argv reaches exec as given (not as env's)
    defaults = f"--default-signal={SIGNALS},PIPE,XFSZ"
    enter = [env, defaults, "/bin/sh", "-c", ENTER, "plinth-job", *rest]
    # the environment it was given (not the LC_CTYPE this interpreter may have added)
    argv = ["plinth-sandbox", "-c", RUN, "plinth-sandbox", setpriv, *drop, *enter]
    os.execve("/bin/sh", argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


if __name__ == "__main__":
    main(sys.argv[1:])
