"""One thread policy for every process of a run (README "Threads").

Torch starts one intra-op thread per core in every process; several processes doing so on one
machine spin against each other (two small fine-tunes at once ran 4.8x slower each, not 2x).
The policy:

* **Worker processes run one thread**: MetaWorld env workers (training and evaluation runners,
  ``envs/vector/runner.py``), Ray env actors (``ray_workers.py``) and DataLoader
  workers (``worker_init_fn=limit_worker_threads``). They start with
  :func:`worker_thread_env` (``OMP_NUM_THREADS`` and the MKL / OpenBLAS / numexpr / vecLib
  variables = 1, whatever the parent's values) and call :func:`limit_worker_threads` first.
* **The main process** (policy inference, the update, imitation training) takes
  ``runtime.torch_threads``: an integer, or ``auto`` = its share of the usable cores,
  ``max(1, cores // processes)``. ``processes`` counts the maniflow-rl main processes on this
  machine: the registered ones (``utils/thread_peers.py``: a second experiment, the ranks of a
  torchrun job) and at least torchrun's ``LOCAL_WORLD_SIZE``. ``auto`` also leaves alone the
  cores that *other* processes keep busy (a test run, a non-maniflow job: measured during the
  update phases, ``utils/cpu_load.py``), because torch's threads spin against them (measured:
  a 2-thread update beside one busy process ran 9-52x slower, a 1-thread one 1.1x). An
  ``OMP_NUM_THREADS`` set by the user caps ``auto``. Env workers are not subtracted: the
  runner is synchronous (the main process waits while its workers step, they wait while it
  runs the policy), so in either phase the other side's cores are free.
* ``runtime.rollout_torch_threads`` (``same`` | an integer): the main process's threads while
  it collects rollouts (policy inference between env steps); the update uses
  ``torch_threads``. ``same`` is the default; whether fewer rollout threads help is what
  ``benchmarks/bench_thread_policy.py`` measures.

:func:`thread_policy` installs the policy for a block (the CLI commands and
``pipeline.run_pipeline`` do; Python API users may): it registers the process, sets torch's
thread count, logs the plan, and restores everything on exit. :func:`phase` around a trainer's
rollout and update sets that phase's count and recounts the processes (``auto`` adapts when
another run starts or ends, or when other processes take or free cores; a change is logged).
Without an installed policy both do nothing.

This module imports torch only inside functions: env workers import it without loading torch.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from maniflow_rl.utils import cpu_load
from maniflow_rl.utils.cpu_load import CpuSample, foreign_cores, ticks_per_second
from maniflow_rl.utils.thread_peers import live_processes, register, registry_dir, unregister

log = logging.getLogger("maniflow_rl")

AUTO, SAME = "auto", "same"
FOREIGN_WINDOW_S = 1.0   # seconds of update phases per foreign-load measurement
PHASES = ("rollout", "update")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


# ------------------------------------------------------------------------------ pure functions
def check_thread_setting(key: str, value: Any, words: tuple[str, ...]) -> None:
    """``ValueError`` naming ``key`` unless ``value`` is one of ``words`` or an int >= 1."""
    is_count = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not is_count and not (isinstance(value, str) and value in words):
        raise ValueError(f"{key} must be {' or '.join(repr(w) for w in words)} or an integer "
                         f">= 1, got {value!r}")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; the core count where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def env_thread_cap(environ: Mapping[str, str] | None = None) -> int | None:
    """``OMP_NUM_THREADS`` when it is a positive integer (the user's cap on ``auto``)."""
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else None


def auto_thread_count(cores: int, processes: int, cap: int | None = None,
                      foreign_cores: float = 0.0) -> int:
    """``max(1, min(cores // processes, cores - round(foreign_cores)))``, at most ``cap``:
    the share of the registered maniflow-rl processes, and no more than the cores other
    processes leave free (``utils/cpu_load.py``; half a busy core counts as one)."""
    free = cores - int(foreign_cores + 0.5)
    count = max(1, min(cores // max(1, processes), free))
    return min(count, cap) if cap else count


@dataclass(frozen=True)
class ThreadPolicy:
    """``runtime.torch_threads`` (``auto`` | int) and ``runtime.rollout_torch_threads``
    (``same`` | int) of the module docstring."""

    torch_threads: int | str = AUTO
    rollout_torch_threads: int | str = SAME

    def validate(self) -> "ThreadPolicy":
        check_thread_setting("runtime.torch_threads", self.torch_threads, (AUTO,))
        check_thread_setting("runtime.rollout_torch_threads", self.rollout_torch_threads,
                             (SAME,))
        return self

    def counts(self, cores: int, processes: int, cap: int | None = None,
               foreign_cores: float = 0.0) -> dict[str, int]:
        """Torch threads of the main process: ``main`` (outside the phases, and the
        ``update``) and ``rollout``."""
        main = (auto_thread_count(cores, processes, cap, foreign_cores)
                if self.torch_threads == AUTO else int(self.torch_threads))
        rollout = main if self.rollout_torch_threads == SAME else int(self.rollout_torch_threads)
        return {"main": main, "update": main, "rollout": rollout}


def describe_plan(policy: ThreadPolicy, counts: Mapping[str, int], cores: int, processes: int,
                  cap: int | None = None) -> str:
    """The line logged when a policy is installed."""
    if policy.torch_threads == AUTO:
        capped = cap is not None and cap < max(1, cores // max(1, processes))
        how = (f"auto: {cores} usable core(s) / {processes} maniflow-rl process(es) on this "
               f"machine" + (f", capped by OMP_NUM_THREADS={cap}" if capped else ""))
    else:
        how = f"runtime.torch_threads={policy.torch_threads}"
    rollout = "same" if policy.rollout_torch_threads == SAME else counts["rollout"]
    return (f"torch threads: {counts['main']} in the main process ({how}), rollouts: {rollout}; "
            f"env / evaluation / data-loader workers and Ray env actors: 1 each")


# ------------------------------------------------------------------------------ workers
def worker_thread_env() -> dict[str, str]:
    """The environment variables of a worker process: every thread variable = 1."""
    return {name: "1" for name in THREAD_ENV_VARS}


@contextmanager
def worker_environment() -> Iterator[None]:
    """``os.environ`` holds :func:`worker_thread_env` while worker processes start (they copy
    the parent's environment); the parent's values are restored after."""
    saved = {name: os.environ.get(name) for name in THREAD_ENV_VARS}
    os.environ.update(worker_thread_env())
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def limit_worker_threads(worker_id: int | None = None) -> None:
    """Make this process a one-thread worker: the thread variables = 1 (for libraries loaded
    later) and, if torch is already loaded, ``torch.set_num_threads(1)``. Torch is not
    imported here. Also a DataLoader ``worker_init_fn`` (``worker_id`` is ignored)."""
    os.environ.update(worker_thread_env())
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def thread_report() -> dict[str, Any]:
    """Torch's thread count in this process (torch is imported if needed) and the thread
    variables: what a worker reports to tests and benchmarks."""
    import torch

    return {"torch_threads": torch.get_num_threads(),
            **{name: os.environ.get(name) for name in THREAD_ENV_VARS}}


# ------------------------------------------------------------------------------ main process
@dataclass
class _Installed:
    policy: ThreadPolicy
    local_world_size: int
    registry: Path
    entry: Path | None
    previous: int
    main: int = 0
    foreign: float = 0.0   # cores other processes kept busy in the last measured window
    window: list = field(default_factory=lambda: [0.0, 0.0, 0.0])   # busy, own jiffies, wall

    def counts(self) -> tuple[dict[str, int], int, int, int | None]:
        cores, cap = usable_cores(), env_thread_cap()
        processes = max(self.local_world_size, live_processes(self.registry))
        return (self.policy.counts(cores, processes, cap, self.foreign), cores, processes,
                cap)

    def account_update(self, before: CpuSample | None, after: CpuSample | None) -> None:
        """Add an update phase to the measuring window; every ``FOREIGN_WINDOW_S`` seconds of
        update time, ``foreign`` becomes the window's foreign load (``utils/cpu_load.py``)."""
        if before is None or after is None:
            return
        self.window[0] += after.machine_busy - before.machine_busy
        self.window[1] += after.own - before.own
        self.window[2] += after.wall - before.wall
        if self.window[2] >= FOREIGN_WINDOW_S:
            self.foreign = foreign_cores(*self.window, ticks_per_second())
            self.window = [0.0, 0.0, 0.0]


_INSTALLED: list[_Installed] = []


def installed_policy() -> ThreadPolicy | None:
    return _INSTALLED[-1].policy if _INSTALLED else None


@contextmanager
def thread_policy(policy: ThreadPolicy | None = None, local_world_size: int | None = None,
                  registry: str | os.PathLike | None = None) -> Iterator[int]:
    """Install ``policy`` (default: ``auto`` / ``same``) for the block (module docstring);
    yields the main thread count.

    ``local_world_size``: torchrun ranks on this node (default: ``LOCAL_WORLD_SIZE``);
    ``registry``: the process registry folder (default: ``thread_peers.registry_dir()``).
    Nested blocks use the innermost policy; the process registers once."""
    import torch

    policy = (policy or ThreadPolicy()).validate()
    if local_world_size is None:
        from maniflow_rl.utils.distributed import dist_info_from_env

        local_world_size = dist_info_from_env().local_world_size
    directory = registry_dir() if registry is None else Path(registry)
    entry = None if _INSTALLED else register(directory)
    state = _Installed(policy, int(local_world_size), directory, entry, torch.get_num_threads())
    _INSTALLED.append(state)
    try:
        counts, cores, processes, cap = state.counts()
        state.main = counts["main"]
        torch.set_num_threads(state.main)
        log.info(describe_plan(policy, counts, cores, processes, cap))
        yield state.main
    finally:
        _INSTALLED.remove(state)
        unregister(entry)
        torch.set_num_threads(state.previous)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """The installed policy's thread count for phase ``name`` (``rollout`` | ``update``) inside
    the block, the main count after it; the processes are recounted on entry. Does nothing
    without an installed policy."""
    if name not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {name!r}")
    if not _INSTALLED:
        yield
        return
    import torch

    state = _INSTALLED[-1]
    counts, cores, processes, _ = state.counts()
    if counts["main"] != state.main:
        log.info("torch threads %d -> %d (%d usable core(s) / %d maniflow-rl process(es); "
                 "other processes keep %.1f core(s) busy)", state.main, counts["main"], cores,
                 processes, state.foreign)
        state.main = counts["main"]
    torch.set_num_threads(counts[name])
    before = cpu_load.sample() if name == "update" else None
    try:
        yield
    finally:
        if name == "update":
            state.account_update(before, cpu_load.sample())
        torch.set_num_threads(state.main)
