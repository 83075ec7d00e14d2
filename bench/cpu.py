"""CPU accounting over the load phase: each server process's share, and everyone else's.

Owns per-process CPU seconds for each server tree (so an idle or overloaded worker
shows) and the CPU that processes outside the benchmark used meanwhile (other
people's test runs skew every number; the report says how much). Reads /proc only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.processes import (
    cpu_seconds,
    machine_process_seconds,
    machine_steal_seconds,
    process_tree,
)

# Workers of one server differing this much in CPU over one case are "uneven"; below
# UNEVEN_MINIMUM_SECONDS for the busiest one the case was too light to tell.
UNEVEN_RATIO = 3.0
UNEVEN_MINIMUM_SECONDS = 0.3


def own_cpu_seconds() -> float:
    """This process and its reaped children (wrk runs): user + system."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def tree_cpu(root_pid: int) -> dict[int, float]:
    return {pid: seconds for pid in process_tree(root_pid)
            if (seconds := cpu_seconds(pid)) is not None}


@dataclass(frozen=True)
class CpuSnapshot:
    machine_process: float
    machine_steal: float
    own: float
    servers: dict[str, dict[int, float]]  # server name → pid → CPU seconds so far


def take_snapshot(roots: dict[str, int]) -> CpuSnapshot:
    return CpuSnapshot(machine_process_seconds(), machine_steal_seconds(), own_cpu_seconds(),
                       {name: tree_cpu(pid) for name, pid in roots.items()})


@dataclass(frozen=True)
class CpuUsage:
    """What the CPUs did between two snapshots."""

    wall_seconds: float
    cpus: int
    per_process: dict[str, dict[int, float]]  # server → pid → CPU seconds used
    others_seconds: float  # used by processes that are neither servers nor the benchmark
    steal_seconds: float  # taken by the hypervisor for other guests

    def percent_of_capacity(self, seconds: float) -> float:
        capacity = self.wall_seconds * self.cpus
        return 100.0 * seconds / capacity if capacity else 0.0

    @property
    def others_percent(self) -> float:
        """Share of the machine's total CPU capacity that other processes used."""
        return self.percent_of_capacity(self.others_seconds)

    @property
    def steal_percent(self) -> float:
        return self.percent_of_capacity(self.steal_seconds)

    @property
    def interference_percent(self) -> float:
        return self.others_percent + self.steal_percent

    def describe_server(self, name: str, master_pid: int) -> str:
        """``master 0.2 s; workers 20.1 s, 18.3 s`` over the load phase."""
        used = self.per_process.get(name, {})
        master = used.get(master_pid, 0.0)
        others = [seconds for pid, seconds in sorted(used.items()) if pid != master_pid]
        text = f"master {master:.1f} s"
        if others:
            text += "; workers " + ", ".join(f"{seconds:.1f} s" for seconds in others)
        return text


def usage_between(before: CpuSnapshot, after: CpuSnapshot, wall_seconds: float
                  ) -> CpuUsage:
    """CPU used between the snapshots. A process that exited in between is missing
    from ``after``; its CPU lands in ``others`` (rare, and reported as an incident)."""
    per_process: dict[str, dict[int, float]] = {}
    for name, now in after.servers.items():
        start = before.servers.get(name, {})
        per_process[name] = {pid: seconds - start.get(pid, 0.0) for pid, seconds in now.items()}
    ours = sum(sum(used.values()) for used in per_process.values()) + after.own - before.own
    others = max(0.0, after.machine_process - before.machine_process - ours)
    steal = max(0.0, after.machine_steal - before.machine_steal)
    return CpuUsage(wall_seconds, len(os.sched_getaffinity(0)), per_process, others, steal)



def worker_cpu_split(before: dict[int, float], after: dict[int, float], master_pid: int
                     ) -> tuple[float, ...]:
    """CPU seconds each process but the master used between two ``tree_cpu`` readings,
    busiest first (a worker replaced in between counts from zero)."""
    used = [seconds - before.get(pid, 0.0) for pid, seconds in after.items()
            if pid != master_pid]
    return tuple(sorted(used, reverse=True))


def uneven(split: tuple[float, ...]) -> bool:
    """True when the busiest worker used UNEVEN_RATIO times the CPU of the idlest one
    (and enough CPU to matter): connections were not spread across the workers."""
    if len(split) < 2 or split[0] < UNEVEN_MINIMUM_SECONDS:
        return False
    return split[0] > UNEVEN_RATIO * split[-1]
