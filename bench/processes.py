"""Process trees and their memory, read from /proc.

Owns walking a process's descendants (by parent pid, from ``/proc/PID/stat``) and
reading proportional set size (``Pss:`` in ``/proc/PID/smaps_rollup``). Reads only;
never signals anything.
"""

from __future__ import annotations

import os
from collections import defaultdict

PROC = "/proc"
KIB = 1024


def parent_of_every_process() -> dict[int, int]:
    """pid → parent pid for every process visible now."""
    parents: dict[int, int] = {}
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        try:
            with open(f"{PROC}/{entry}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:  # the process exited between listdir and open
            continue
        # The command name is in parentheses and may itself contain ") ", so split
        # after the last one: "pid (comm) state ppid ...".
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its live descendants, root first."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, parent in parent_of_every_process().items():
        children[parent].append(pid)
    if not os.path.exists(f"{PROC}/{root_pid}"):
        return []
    tree = [root_pid]
    index = 0
    while index < len(tree):
        tree.extend(sorted(children.get(tree[index], [])))
        index += 1
    return tree


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of ``pid`` in bytes, or None if it is gone or unreadable."""
    try:
        with open(f"{PROC}/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * KIB
    except (OSError, ValueError):
        return None
    return None


def process_is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :].startswith(b"Z")


def command_line(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time ``pid`` has used so far, or None if it is gone."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # After "(comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime ... (proc(5) fields 14 and 15).
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def machine_process_seconds() -> float:
    """CPU time all processes together have used since boot: user + nice + system of
    the ``cpu`` line of /proc/stat. irq and softirq time (loopback traffic is mostly
    softirq) is left out because it is charged to no process, so this total is
    comparable with the sum of processes' utime + stime."""
    with open(f"{PROC}/stat") as stat_file:
        user, nice, system = (int(value) for value in stat_file.readline().split()[1:4])
    return (user + nice + system) / CLOCK_TICKS_PER_SECOND


def machine_steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests while this one wanted to run
    (``steal`` on the ``cpu`` line of /proc/stat): noisy neighbours, invisible in ps."""
    with open(f"{PROC}/stat") as stat_file:
        return int(stat_file.readline().split()[8]) / CLOCK_TICKS_PER_SECOND
