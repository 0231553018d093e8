"""The local worker's sandbox itself, run directly around a small Python program: what
a job of a server with sign-in may read, write and start with (``sandbox.py``)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.compute.executors import sandbox

REPO = Path(__file__).resolve().parents[2]

# What the job tries; it prints one JSON object. A write outside its own folders is
# only an open (a new file, or O_WRONLY on a sysctl): should the sandbox ever fail, the
# test must not change the machine (the test removes what it finds made).
TRYING = r"""
import errno, json, os, sys
def opened(path, flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL):
    try:
        os.close(os.open(path, flags, 0o600))
        return 'opened'
    except OSError as exc:
        return errno.errorcode[exc.errno]
def write(path):
    try:
        with open(path, 'a') as f:
            f.write('x')
        return 'written'
    except OSError as exc:
        return errno.errorcode[exc.errno]
def read(path):
    try:
        with open(path, 'rb') as f:
            return f.read()[:64].decode('latin-1')
    except OSError as exc:
        return errno.errorcode[exc.errno]
def listed(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return errno.errorcode[exc.errno]
docs, readme, secret, *outside = sys.argv[1:]
print(json.dumps({
    'uid': [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()],
    'secret': read(secret),
    'environment': dict(os.environ),
    'cwd': os.getcwd(),
    'hidden folder': listed(docs),
    'hidden file': read(readme),
    'own folder': write('mine.txt'),
    'tmp': write('/tmp/t.txt'),
    'var tmp': listed('/var/tmp'),
    'run': {d: listed(os.path.join('/run', d)) for d in listed('/run')},
    'resolv.conf': read('/etc/resolv.conf'),
    'shm': write('/dev/shm/s'),
    'null': write('/dev/null'),
    'dev': listed('/dev'),
    'outside': [opened(path) for path in outside],
    'sysctl': opened('/proc/sys/kernel/core_pattern', os.O_WRONLY),
}))
"""


def read_or_error(path: str) -> str:
    """What the job's ``read`` gives for ``path``, read here."""
    try:
        return Path(path).read_bytes()[:64].decode("latin-1")
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]


def run_sandboxed(
    tmp_path: Path, env: dict[str, str], *argv: str
) -> subprocess.CompletedProcess[str]:
    """``argv`` in a sandbox hiding the repository's docs/ and README.md (a folder and a
    file the job could otherwise read), as the local executor starts a worker."""
    work, tmp = tmp_path / "attempt" / "work", tmp_path / "attempt" / "tmp"
    work.mkdir(parents=True)
    tmp.mkdir(mode=0o700)  # as the local executor makes it
    hidden = [REPO / "docs", REPO / "README.md"]
    return run([*sandbox.command(hidden, work, tmp), *argv], env, cwd=work)


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Any:
    """``argv`` (a sandbox's) as the local executor runs it: the sandbox's own
    environment, the job's ``env`` on stdin."""
    envfd = sandbox.environment(env)
    try:
        return subprocess.run(
            argv,
            env=sandbox.MACHINERY_ENV,
            stdin=envfd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(envfd)


# a root server's jobs run as a user of their own; one that is not root runs them as its own
root_server = pytest.mark.skipif(os.geteuid() != 0, reason="the server is not root here")


@pytest.fixture
def outside() -> Iterator[list[Path]]:
    """New files' names where a job must not write: beside the server's interpreter, in
    its virtualenv, in /etc and among the cgroups. Removed if a failing sandbox let a
    job make them."""
    tag = f"plinth-sandbox-probe-{uuid.uuid4().hex}"
    folders = (sys.base_prefix, sys.prefix, "/etc", "/sys/fs/cgroup")
    paths = [Path(folder, tag) for folder in folders]
    yield paths
    for path in paths:
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)


@pytest.fixture
def secret() -> Iterator[Path]:
    """A file only its owner may read, in the home of the user the tests run as (root's
    is closed to others): what a job must not read though nothing hides it."""
    path = Path.home() / f"plinth-sandbox-secret-{uuid.uuid4().hex}"
    path.write_text("secret")
    path.chmod(0o600)
    yield path
    path.unlink()


def test_a_sandboxed_job_writes_only_its_own_folders(
    tmp_path: Path, outside: list[Path], secret: Path
) -> None:
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "ODD": "a 'b' \"c\" $d `e`\nf\\g"}
    hidden = [str(REPO / "docs"), str(REPO / "README.md")]
    probes = [*hidden, str(secret), *map(str, outside)]
    done = run_sandboxed(tmp_path, env, sys.executable, "-c", TRYING, *probes)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    if os.geteuid() == 0:  # a root server's job: a user of its own, in no group
        job_id = sandbox.JOB_UID
        assert seen["uid"] == [job_id, job_id, job_id, []]
        assert seen["secret"] in ("ENOENT", "EACCES")  # covered, or closed to it
    else:  # the server's own user, mapped to root in its user namespace
        assert seen["uid"][:2] == [0, 0]
    assert seen["environment"] == env  # exactly the job's: nothing of the sandbox's own
    assert seen["cwd"] == str(tmp_path / "attempt" / "work")
    # covered; or, in a checkout under /tmp, not in its view at all (its /tmp is its own)
    assert seen["hidden folder"] in ([], "ENOENT") and seen["hidden file"] in ("", "ENOENT")
    assert (tmp_path / "attempt" / "work" / "mine.txt").read_text() == "x"
    assert (tmp_path / "attempt" / "tmp" / "t.txt").read_text() == "x"  # /tmp is its own
    assert "t.txt" in seen["var tmp"]  # so is /var/tmp
    # no other program's sockets (D-Bus, a user's systemd, Docker, databases): what
    # name resolution needs, no more
    assert set(seen["run"]) <= {"systemd"} and set(seen["run"].get("systemd", [])) <= {"resolve"}
    assert seen["resolv.conf"] == read_or_error("/etc/resolv.conf")
    assert seen["shm"] == seen["null"] == "written"
    assert not Path("/dev/shm/s").exists()  # a /dev/shm of its own
    # the server's program, its virtualenv, the system: read-only (root or not)
    assert seen["outside"] == ["EROFS"] * len(outside)
    assert not any(path.exists() for path in outside)
    assert seen["sysctl"] in ("EROFS", "EACCES")  # read-only; as root's, closed to the job
    harmless = {"null", "zero", "full", "random", "urandom", "tty", "shm", "pts", "ptmx"}
    links = {"fd", "stdin", "stdout", "stderr"}
    gpus = {d for d in seen["dev"] if d.startswith(("nvidia", "dri", "kfd", "infiniband"))}
    assert set(seen["dev"]) - gpus == harmless | links  # no disks, no kernel log


def test_the_sandbox_runs_none_of_the_jobs_environment(tmp_path: Path) -> None:
    """The job's submitter chooses its environment: a PATH or LD_PRELOAD of theirs must
    not reach the sandbox's set-up, which holds every capability of its namespaces."""
    trap, marker = tmp_path / "trap", tmp_path / "trapped"
    trap.mkdir()
    for name in ("mkdir", "mktemp", "ln", "findmnt", "mount", "setpriv", "env", "sh"):
        program = trap / name
        program.write_text(f'#!/bin/sh\necho {name} >> "{marker}"\n')
        program.chmod(0o755)
    env = {"PATH": f"{trap}:{os.environ['PATH']}", "LD_PRELOAD": str(tmp_path / "none.so")}
    done = run_sandboxed(
        tmp_path, env, sys.executable, "-c", "import os; print(os.environ['PATH'])"
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert done.stdout.strip() == env["PATH"]
    # the loader names the missing library once: for the job's own program
    assert done.stderr.count("none.so") == 1, done.stderr


# Each mount the job's namespace has, with whether it is writable: /proc/self/mountinfo
LISTING = r"""
import json
found = []
for line in open('/proc/self/mountinfo'):
    fields = line.split(' ')
    found.append([fields[4], fields[5].split(',')[0]])
print(json.dumps(found))
"""


def test_no_mount_is_writable_but_the_jobs_own(tmp_path: Path) -> None:
    """Every mount is read-only in the job's view, those hidden under another mount
    too (here one of two tmpfs stacked on one folder, which a remount by path misses),
    and its /dev/shm is no larger than its memory limit."""
    if os.geteuid() != 0:
        pytest.skip("stacking mounts on this machine takes root")
    stacked = tmp_path / "stacked"
    stacked.mkdir()
    for _ in range(2):
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "plinth-probe", stacked], check=True
        )
    try:
        work, tmp = tmp_path / "attempt" / "work", tmp_path / "attempt" / "tmp"
        work.mkdir(parents=True)
        tmp.mkdir()
        shm_cap = 3 << 20
        argv = [*sandbox.command([], work, tmp, shm_cap), sys.executable, "-c", LISTING]
        done = run(argv, {}, cwd=work)
        seen_df = run(
            [*sandbox.command([], work, tmp, shm_cap), "/bin/df", "-B1", "/dev/shm"], {}, work
        )
    finally:
        for _ in range(2):
            subprocess.run(["umount", stacked], check=True)
    assert done.returncode == 0, done.stderr
    mounts = json.loads(done.stdout)
    assert [at for at, _ in mounts].count(str(stacked)) == 2  # both there, stacked
    writable = {at for at, mode in mounts if mode == "rw"}
    assert writable == {str(work), "/tmp", "/var/tmp", "/dev/shm", "/dev/pts"}
    assert seen_df.returncode == 0, seen_df.stderr
    assert int(seen_df.stdout.splitlines()[1].split()[1]) == shm_cap


def test_a_job_starts_with_its_working_directory_full() -> None:
    """The sandbox makes nothing in the job's working directory (here on a file system
    with no inode left), which its other workers share: its /dev is made in memory,
    over the machine's. (Its /tmp is another folder: where the server's interpreter
    lies under /tmp, as a CI's checkout does, the way to it is made there.)"""
    if os.geteuid() != 0:
        pytest.skip("mounting a full file system on this machine takes root")
    base = Path(tempfile.mkdtemp(dir=Path.home(), prefix="plinth-sandbox-full-"))  # not /tmp,
    work, tmp = base / "work", base / "tmp"  # which the job sees as its own
    work.mkdir()
    tmp.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=8", "plinth-probe", work], check=True
    )
    try:
        with pytest.raises(OSError) as full:
            for n in range(16):
                (work / f"filler-{n}").touch()
        assert full.value.errno == errno.ENOSPC
        done = run([*sandbox.command([], work, tmp), "/bin/ls", "/dev"], {}, cwd=work)
    finally:
        subprocess.run(["umount", work], check=True)
        shutil.rmtree(base)
    assert done.returncode == 0, done.stderr
    assert {"null", "shm", "pts", "ptmx"} <= set(done.stdout.split())


def test_a_kernel_without_mount_setattr_still_gets_a_read_only_view(
    tmp_path: Path, outside: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before Linux 5.12 the set-up remounts each writable mount by its path: the set-up
    run here as on such a kernel (its one-call way made to fail), the job still writes
    only its own folders."""
    setup = Path(sandbox._SETUP).read_text()
    assert setup.count("if all_read_only() else") == 1
    old_kernel = tmp_path / "sandbox_setup.py"
    old_kernel.write_text(setup.replace("if all_read_only() else", "if False else"))
    monkeypatch.setattr(sandbox, "_SETUP", str(old_kernel))
    probes = ["/none", "/none", "/none", *map(str, outside)]
    done = run_sandboxed(tmp_path, {}, sys.executable, "-c", TRYING, *probes)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["outside"] == ["EROFS"] * len(outside)
    assert seen["sysctl"] in ("EROFS", "EACCES")
    assert seen["own folder"] == seen["tmp"] == seen["shm"] == "written"


@root_server
def test_a_root_servers_job_runs_as_a_user_of_its_own(tmp_path: Path) -> None:
    """A root server's home lies in ``/root`` (closed to others): its job, run as
    ``JOB_UID``, still reaches its working directory there and writes in it, sees
    nothing else of ``/root``, and owns what its snapshot brought, a link in it as a
    link (the file it leads to stays root's)."""
    closed = Path(tempfile.mkdtemp(dir=Path.home(), prefix="plinth-sandbox-root-"))
    target = tmp_path / "root-file"
    target.write_text("root's")
    try:
        closed.chmod(0o700)
        work, tmp, home = (
            closed / "home" / "jobs" / "work",
            closed / "home" / "tmp",
            closed / "home",
        )
        (work / "src").mkdir(parents=True)
        tmp.mkdir()
        (work / "src" / "train.py").write_text("print('hi')")
        (work / "link").symlink_to(target)
        (closed / "beside").write_text("root's too")
        argv = [*sandbox.command([home], work, tmp), "/bin/sh", "-c", SCRIPT, "job"]
        argv.append(sys.executable)
        done = run(argv, {"PATH": "/usr/bin:/bin"}, cwd=work)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(sandbox.JOB_UID), "edited", "3", "EMPTY"]
        assert (work / "src" / "train.py").read_text() == "edited\n"
        assert target.stat().st_uid == 0 and (work / "link").lstat().st_uid == sandbox.JOB_UID
    finally:
        shutil.rmtree(closed)


@root_server
def test_what_is_hidden_stays_hidden_in_a_folder_carried_through_a_closed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder of the server's code in ``/root`` is bound back for a root server's job:
    a home, a database or a key file inside it stays covered all the same."""
    app = Path(tempfile.mkdtemp(dir=Path.home(), prefix="plinth-sandbox-app-"))
    try:
        app.chmod(0o755)  # open to all itself: /root, on its way, is not
        home, key = app / "home", app / "master.key"
        work, tmp = (
            home / "compute" / "jobs" / "j" / "work",
            home / "compute" / "jobs" / "j" / "tmp",
        )
        work.mkdir(parents=True)
        tmp.mkdir()
        (home / "plinth.db").write_text("DB SECRET")
        key.write_text("KEY SECRET")
        (app / "code.py").write_text("print('code')")
        monkeypatch.setattr(sys, "path", [*sys.path, str(app)])  # the server's code lies there
        sandbox._carried.cache_clear()
        try:
            argv = [*sandbox.command([home, key], work, tmp), "/bin/sh", "-c", READ_APP, "job"]
            done = run([*argv, str(app)], {"PATH": "/usr/bin:/bin"}, cwd=work)
        finally:
            sandbox._carried.cache_clear()
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["code", "hidden", "hidden"]
    finally:
        shutil.rmtree(app)


READ_APP = (
    'cat "$1/code.py" | tr -d "()\047" | cut -c6-; for f in home/plinth.db master.key; '
    'do grep -q SECRET "$1/$f" 2>/dev/null && echo LEAKED || echo hidden; done'
)


@root_server
def test_handing_a_jobs_folder_over_never_goes_through_a_link(tmp_path: Path) -> None:
    """Links in the job's folder are handed over as links: what they lead to (a folder
    of root's, a FIFO that would block an open) is neither changed nor opened; a
    folder handed over already is left alone."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file").write_text("root's")
    os.mkfifo(tmp_path / "fifo")
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "file").write_text("the job's")
    (work / "to-folder").symlink_to(outside)
    (work / "to-fifo").symlink_to(tmp_path / "fifo")
    walking = threading.Thread(target=sandbox._hand_over, args=(work,), daemon=True)
    walking.start()
    walking.join(10)
    assert not walking.is_alive()  # no open of the FIFO blocked it
    owners = {p.name: p.lstat().st_uid for p in (work, *work.rglob("*"))}
    assert set(owners.values()) == {sandbox.JOB_UID}, owners
    assert outside.stat().st_uid == (outside / "file").stat().st_uid == 0
    (work / "sub" / "new").write_text("made by root after")
    sandbox._hand_over(work)  # the folder is the job's already: not walked again
    assert (work / "sub" / "new").stat().st_uid == 0


@root_server
def test_handing_over_a_wide_folder_needs_few_open_files(tmp_path: Path) -> None:
    """More folders than a process may hold open at once (1,000 classes of images):
    every one handed over, or the walk fails and is made again, never half done."""
    work = tmp_path / "work"
    for n in range(300):
        (work / f"class-{n}").mkdir(parents=True)
        (work / f"class-{n}" / "image").write_text("x")
    walk = (
        "import resource, sys; from pathlib import Path\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "from plinth.compute.executors import sandbox\n"
        "sandbox._hand_over(Path(sys.argv[1]))\n"
    )
    subprocess.run([sys.executable, "-c", walk, str(work)], check=True, timeout=60)
    owners = {p.lstat().st_uid for p in (work, *work.rglob("*"))}
    assert owners == {sandbox.JOB_UID}


def test_a_root_server_that_cannot_become_the_jobs_user_warns_and_keeps_uid_0(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In a user namespace that does not map ``JOB_UID`` (a container's), the job stays
    root without capabilities, as before, and the server says so."""
    monkeypatch.setattr(sandbox, "_maps", lambda inside, table: False)
    sandbox._job_uid.cache_clear()
    try:
        assert sandbox._job_uid() == 0
        found = sandbox._programs()
        assert not isinstance(found, str), found
        argv = sandbox._argv(found, [], Path("/w"), Path("/t"), as_root=True)
        assert argv[argv.index("/t") + 2] == "0"  # after the /dev/shm size: the job's uid
    finally:
        sandbox._job_uid.cache_clear()
    assert "cannot run its jobs as user 65534" in caplog.text


# A process with a key of its own in its session keyring runs a sandboxed job, which
# lists the keys it can see (argv: the sandbox's argv as JSON)
KEYRING = r"""
import ctypes, json, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
KEYCTL, ADD_KEY = {"x86_64": (250, 248), "aarch64": (219, 217)}[__import__("os").uname().machine]
assert libc.syscall(ctypes.c_long(KEYCTL), ctypes.c_int(1), ctypes.c_void_p(None)) > 0
name = sys.argv[2].encode()
size, session = ctypes.c_size_t(9), ctypes.c_int(-3)
key = libc.syscall(ctypes.c_long(ADD_KEY), b"user", name, b"TOPSECRET", size, session)
assert key > 0, ctypes.get_errno()
assert sys.argv[2] in open("/proc/keys").read()  # the server's process sees it
done = subprocess.run(json.loads(sys.argv[1]), stdin=0, capture_output=True, text=True)
print(json.dumps([done.returncode, done.stdout, done.stderr]))
"""


# The job's own keyring calls: its user keyring's id, a key added to it, the persistent
# keyring; each one's errno
KEYRING_CALLS = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
KEYCTL, ADD_KEY = {"x86_64": (250, 248), "aarch64": (219, 217)}[os.uname().machine]
def tried(*args):
    done = libc.syscall(*args)
    return "ok" if done >= 0 else errno.errorcode[ctypes.get_errno()]
user = ctypes.c_int(-4)
print(
    tried(ctypes.c_long(KEYCTL), ctypes.c_int(0), user, ctypes.c_int(1)),
    tried(ctypes.c_long(ADD_KEY), b"user", b"left", b"x", ctypes.c_size_t(1), user),
    tried(ctypes.c_long(KEYCTL), ctypes.c_int(22), ctypes.c_int(-1), ctypes.c_int(-3)),
)
"""


def test_a_job_gets_a_keyring_of_its_own(tmp_path: Path) -> None:
    """Keys in the server's session keyring (a service's, a login's) are not the job's."""
    name = f"plinth-probe-{uuid.uuid4().hex}"
    work, tmp = tmp_path / "attempt" / "work", tmp_path / "attempt" / "tmp"
    work.mkdir(parents=True)
    tmp.mkdir()
    argv = [*sandbox.command([], work, tmp), "/bin/sh", "-c", 'cat /proc/keys; "$0" -c "$1"']
    argv += [sys.executable, KEYRING_CALLS]
    done = run([sys.executable, "-c", KEYRING, json.dumps(argv), name], {}, cwd=work)
    assert done.returncode == 0, done.stderr
    code, listed, errors = json.loads(done.stdout)
    assert code == 0, errors
    assert "_ses" in listed  # a session keyring, its own
    assert name not in listed
    # and no keyring call at all: not its user's keyring (shared with the other jobs,
    # or the server's user's), not a new key, not the persistent keyring
    assert listed.splitlines()[-1] == "ENOSYS ENOSYS ENOSYS"


# as the job: its user, a file of its snapshot changed and read by its whole path (the
# way to it open), the server's interpreter run, what else it sees of /root
SCRIPT = (
    'id -u; echo edited > src/train.py && cat "$PWD/src/train.py"; "$1" -c "print(3)"; '
    'ls -A "$(dirname "$(dirname "$(dirname "$PWD")")")" | grep -qx beside || echo EMPTY'
)


def test_a_sandboxed_job_starts_with_no_signal_ignored(tmp_path: Path) -> None:
    """The stop signals are ignored on the way in (a stop must not end the sandbox
    before the job's handler ran), and the set-up's interpreter ignores SIGPIPE and
    SIGXFSZ: the job gets every one back at its default, as a worker without the
    sandbox does."""
    argv = ["/bin/grep", "^SigIgn:", "/proc/self/status"]
    plain = subprocess.run(argv, capture_output=True, text=True, check=True)  # unsandboxed
    done = run_sandboxed(tmp_path, {}, *argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout == plain.stdout


# Root in its namespaces without capabilities, a job makes namespaces of its own, where
# it has them all, and tries to make its view writable: the kernel keeps the mounts it
# was given locked. Prints each attempt's errno.
REMOUNTING = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p,) * 3 + (ctypes.c_ulong, ctypes.c_char_p)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 0x20, 0x1000, 0x4000, 1 << 18
CLONE_NEWNS, CLONE_NEWUSER = 0x20000, 0x10000000
target = os.fsencode(sys.argv[1])
def mount(source, kind, flags):
    failed = libc.mount(source, target, kind, flags, None)
    return errno.errorcode[ctypes.get_errno()] if failed else 'mounted'
try:
    open(sys.argv[2], 'x').close()
    tried = {'create': 'made'}
except OSError as exc:
    tried = {'create': errno.errorcode[exc.errno]}
tried['here'] = mount(None, None, MS_REMOUNT | MS_BIND)
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0:
    libc.mount(None, b'/', None, MS_REC | MS_PRIVATE, None)
    tried['own namespaces'] = mount(None, None, MS_REMOUNT | MS_BIND)
    tried['fresh tmpfs'] = mount(b'x', b'tmpfs', 0)
else:
    tried['own namespaces'] = errno.errorcode[ctypes.get_errno()]
print(tried)
"""


def test_a_job_cannot_make_its_sandbox_writable(tmp_path: Path, outside: list[Path]) -> None:
    target = outside[1].parent  # the server's virtualenv
    done = run_sandboxed(
        tmp_path, {}, sys.executable, "-c", REMOUNTING, str(target), str(outside[1])
    )
    assert done.returncode == 0, done.stderr
    tried = done.stdout.strip()
    assert "'create': 'EROFS', 'here': 'EPERM'" in tried  # read-only, and no capability
    # its own namespaces: the remount refused (a tmpfs over the folder may be made, in a
    # mount namespace the job then lives in alone: it hides, it does not write through)
    assert "'own namespaces': 'EPERM'" in tried or "'own namespaces': 'EINVAL'" in tried, tried
    assert not outside[1].exists()


def test_a_job_leaves_nothing_running_when_it_kills_its_wrapper(tmp_path: Path) -> None:
    """The wrapper, unshare and the job share a process group; a job that kills the group
    from inside (itself moved out of it first) must not live on untracked. A root
    server's job, of a user of its own, cannot kill them at all: it ends as it would."""
    from plinth.compute.executors.local import _WRAPPER

    marker = f"plinth-sandbox-orphan-{uuid.uuid4().hex}"
    job = (
        "import os, signal, time\n"
        "if os.fork() == 0:\n"
        "    time.sleep(0.5); os.kill(0, signal.SIGKILL)\n"
        "else:\n"
        "    os.setpgid(0, 0); time.sleep(3)\n"
    )
    work, tmp = tmp_path / "attempt" / "work", tmp_path / "attempt" / "tmp"
    work.mkdir(parents=True)
    tmp.mkdir()
    exit_record = tmp_path / "exit"
    argv = [*sandbox.command([], work, tmp), sys.executable, "-c", job, marker]
    envfd = sandbox.environment({})
    try:
        wrapper = subprocess.Popen(
            ["/bin/sh", "-c", _WRAPPER, "plinth-job", str(exit_record), *argv],
            env=sandbox.MACHINERY_ENV,
            stdin=envfd,
            cwd=work,
            start_new_session=True,
        )
    finally:
        os.close(envfd)
    assert wrapper.wait(timeout=20) == (0 if os.geteuid() == 0 else -9)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _running(marker):
        time.sleep(0.1)
    left = _running(marker)
    for pid in left:  # never leave it behind, even when the test fails
        os.kill(pid, 9)
    assert left == []


def _running(marker: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def test_a_jobs_argv_reaches_exec_as_given(tmp_path: Path) -> None:
    """An argv that env(1) would read as its own (an assignment, an option) is the
    program's name, as without the sandbox: not found."""
    for argv in (["X=1", "true"], ["-i", "true"]):
        done = run_sandboxed(tmp_path / argv[0], {"PATH": "/usr/bin:/bin"}, *argv)
        assert done.returncode == 127, (argv, done.stderr)


def test_a_job_shares_no_ipc_with_the_machine(tmp_path: Path) -> None:
    """System V shared memory and semaphores name no file to cover: an IPC namespace."""
    made = subprocess.run(["ipcmk", "-M", "64"], capture_output=True, text=True, check=True)
    segment = made.stdout.split()[-1]
    try:
        assert segment in subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout
        done = run_sandboxed(tmp_path, {"PATH": "/usr/bin:/bin"}, "ipcs", "-m")
        assert done.returncode == 0, done.stderr
        assert segment not in done.stdout
    finally:
        subprocess.run(["ipcrm", "-m", segment], check=True)


def test_a_sandbox_that_cannot_be_set_up_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "gone"  # the working directory removed under a starting worker
    done = run([*sandbox.command([], missing, tmp_path), "true"], {})
    assert done.returncode == 126
    assert f"the job's sandbox could not be set up: cannot open {missing}" in done.stderr


NOBODY = 65534


def as_nobody(*argv: str) -> list[str]:
    user = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return ["setpriv", *user, "--inh-caps=-all", "--bounding-set=-all", *argv]


def _ran(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True).returncode == 0


def test_the_sandbox_of_a_server_that_is_not_root(tmp_path: Path) -> None:
    """A server run as a user of its own (as docs/security.md asks) makes the sandbox
    in a user namespace, where the set-up is root over nothing but its namespaces: the
    same view. Here as ``nobody`` when the tests run as root (else every other test of
    this file ran so already)."""
    if os.geteuid() != 0:
        pytest.skip("the other tests of this file ran the sandbox in a user namespace")
    pythons = [sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]
    in_namespace = ["unshare", "--map-root-user"]  # where a user's reach may be less
    runs = [p for p in pythons if p and _ran(as_nobody(*in_namespace, p, "-c", ""))]
    if not runs:
        pytest.fail("no Python that user nobody may run, to set a sandbox up as nobody")
    base = Path(tempfile.mkdtemp(prefix="plinth-sandbox-nobody-"))  # /tmp: nobody reaches it
    try:
        work, tmp, hidden = base / "attempt" / "work", base / "attempt" / "tmp", base / "home"
        for folder in (work, tmp, hidden):
            folder.mkdir(parents=True)
        (hidden / "plinth.db").write_text("secret")
        for path in (base, *base.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
        script = (
            "id -u; ls -A /dev | tr '\\n' ' '; echo; cat /proc/self/status | grep CapEff; "
            "touch mine /tmp/t && echo own-ok; touch /etc/x 2>/dev/null || echo etc-refused; "
            f"cat {hidden}/plinth.db 2>/dev/null || echo hidden; ls -A /var/tmp | grep -x t"
        )
        found = sandbox._programs()
        assert not isinstance(found, str), found
        prefix = sandbox._argv(found, [hidden], work, tmp, python=runs[0], as_root=False)
        done = run(as_nobody(*prefix, "/bin/sh", "-c", script), {"PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        uid, dev, caps, *rest = done.stdout.splitlines()
        assert uid == "0"  # root in its user namespace …
        assert caps.split() == ["CapEff:", "0000000000000000"]  # … with no capability
        assert set(dev.split()) == {"null", "zero", "full", "random", "urandom", "tty", "shm"} | {
            "pts",
            "ptmx",
            "fd",
            "stdin",
            "stdout",
            "stderr",
        }
        assert rest == ["own-ok", "etc-refused", "hidden", "t"]
        assert (work / "mine").exists() and (tmp / "t").exists()
    finally:
        shutil.rmtree(base)
