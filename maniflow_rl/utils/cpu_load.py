"""How many cores *other* processes keep busy, read from ``/proc`` (Linux).

Why: torch's OpenMP threads spin at every barrier. With 2 threads on a 2-core machine and one
busy process beside it (a test run, a second experiment that is not maniflow-rl), a small
learner update ran 9-52x slower than alone; with 1 thread it lost 10 %
(``benchmarks/bench_omp_wait_policy.py``). The thread policy (``utils/threads.py``) measures
the foreign load during the main process's update phases, when its env workers are idle, and
leaves those cores to their owners::

    foreign cores = (delta machine busy jiffies - delta own jiffies) / (ticks/s * delta wall)

``machine busy`` = user + nice + system + irq + softirq + steal of ``/proc/stat``'s ``cpuN``
lines of the cores this process may run on (its affinity); ``own`` = utime + stime of ``/proc/self/stat`` (all threads of this process).
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple


class CpuSample(NamedTuple):
    machine_busy: int   # jiffies
    own: int            # jiffies
    wall: float         # time.monotonic() seconds


def ticks_per_second() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def parse_machine_busy(proc_stat: str, cpus: set[int] | None = None) -> int:
    """Busy jiffies of the per-core ``cpuN`` lines of ``/proc/stat`` for the cores in ``cpus``
    (None: all), iowait and idle excluded (guest time is already inside user). Only the cores
    this process may run on count: in a container pinned to 2 of 16 cores, the other 14 are
    not competition."""
    busy = 0
    for line in proc_stat.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in rest.split()[:8]]
        fields += [0] * (8 - len(fields))
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        busy += user + nice + system + irq + softirq + steal
    return busy


def allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def parse_own_jiffies(self_stat: str) -> int:
    """utime + stime of a ``/proc/<pid>/stat`` line (fields 14 and 15)."""
    after_name = self_stat.rsplit(")", 1)[1].split()
    return int(after_name[11]) + int(after_name[12])


def sample() -> CpuSample | None:
    """The current jiffy counters; None where ``/proc`` is not readable."""
    try:
        with open("/proc/stat") as stat, open("/proc/self/stat") as own:
            return CpuSample(parse_machine_busy(stat.read(), allowed_cpus()),
                             parse_own_jiffies(own.read()), time.monotonic())
    except (OSError, ValueError, IndexError):
        return None


def foreign_cores(machine_busy_delta: float, own_delta: float, wall_s: float,
                  ticks: int) -> float:
    """Cores kept busy by other processes over an interval (module docstring), >= 0."""
    if wall_s <= 0:
        return 0.0
    return max(0.0, (machine_busy_delta - own_delta) / (ticks * wall_s))
