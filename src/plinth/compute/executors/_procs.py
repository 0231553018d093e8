"""Reading processes for the local executor: is this pid still the process we started
(its start time guards against a reused pid), which processes are in a group, how much
memory they hold.

On Linux these read ``/proc`` directly: one small read instead of psutil's several,
because ``launch`` stamps every worker and must stay well under a millisecond. Other
POSIX systems go through psutil.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

_LINUX = sys.platform.startswith("linux")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK_NS = 10**9 // os.sysconf("SC_CLK_TCK") if _LINUX else 0


@dataclass(frozen=True)
class ProcStat:
    state: str  # "Z" (zombie) and "X" (dead) mean it has ended
    pgid: int
    start: float  # clock ticks since boot on Linux, epoch seconds elsewhere
    ppid: int = 0


def stat(pid: int) -> ProcStat | None:
    """The process ``pid`` now, or None when there is none."""
    if _LINUX:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            return None
        # The command name may hold spaces and parentheses: fields follow the last ")".
        fields = raw[raw.rindex(b")") + 2 :].split()
        return ProcStat(fields[0].decode(), int(fields[2]), float(fields[19]), int(fields[1]))
    try:
        proc = psutil.Process(pid)
        status = proc.status()
        state = "Z" if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) else "R"
        return ProcStat(state, os.getpgid(pid), round(proc.create_time(), 2), proc.ppid())
    except (psutil.Error, OSError):
        return None


def clock() -> float | None:
    """Now, in the unit of ``ProcStat.start`` on Linux (boot-time clock ticks, the clock
    the kernel stamps a new process with); None elsewhere.

    Reading the clock just before and after a spawn brackets the child's start stamp
    without reading ``/proc/<pid>/stat`` while the child is still in ``exec`` (that read
    waits on the child and costs about a millisecond per launch)."""
    if not _LINUX:
        return None
    return float(time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _TICK_NS)


def is_alive(pid: int, start: tuple[float, float]) -> bool:
    """``pid`` runs and is the very process whose start stamp lies in ``start`` (low,
    high): not another process that was given the same pid later."""
    now = stat(pid)
    return now is not None and now.state not in ("Z", "X") and start[0] <= now.start <= start[1]


def group_members(pgids: Iterable[int]) -> dict[int, list[int]]:
    """The pids in each process group and their descendants, in one pass over the
    process table: a child that left its worker's group (``setsid``) still counts, as
    long as it descends from one that did not (in a sandbox, whose first process
    adopts the orphans, always)."""
    wanted = set(pgids)
    members: dict[int, list[int]] = {g: [] for g in wanted}
    children: dict[int, list[int]] = {}
    for pid in psutil.pids():
        now = stat(pid)
        if now is None or now.state in ("Z", "X"):  # ended while we looked, or holds nothing
            continue
        children.setdefault(now.ppid, []).append(pid)
        if now.pgid in wanted:
            members[now.pgid].append(pid)
    for found in members.values():
        grouped = set(found)
        for pid in found:  # grows as it goes: each descendant once
            found += [child for child in children.get(pid, ()) if child not in grouped]
            grouped.update(children.get(pid, ()))
    return members


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (0 when it has ended)."""
    if _LINUX:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return 0
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0
