"""Ray backend of ``PointCloudEnvRunner`` (``env.backend=ray``): each block of envs lives in a
Ray actor, on this machine or anywhere in a Ray cluster (RLlib / TorchRL / RLinf style env
runners), instead of a ``multiprocessing`` worker.

* ``ray_address``: None starts (or reuses) a local Ray instance, ``auto`` joins the cluster
  started with ``ray start --head`` on this machine, ``host:port`` / ``ray://host:port`` a remote
  one. An address nobody answers on fails at once with a message (no minutes of retries).
* The actors run the same ``EnvGroup`` (``env_group.py``) as the worker processes, so the same
  seeds give the same observations whichever backend steps them.
* A worker that dies (its node is lost, it is killed, it crashes) is replaced by a new actor
  whose envs start their next episode: the step reports those envs' episodes as truncated
  (reward 0, ``final_obs`` = their last observation; a ``step_chunk`` at its first sub-step,
  the new episode held for the rest of the chunk), and training goes on.
* Threads: every actor runs one thread (``utils/threads.py``): its environment has
  ``OMP_NUM_THREADS`` and the other thread variables = 1 (not the driver's values) and it
  calls ``limit_worker_threads`` before building its envs.
* Ray is optional: ``pip install 'maniflow-rl[distributed]'``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Sequence

import numpy as np

from maniflow_rl.utils.threads import worker_thread_env

log = logging.getLogger("maniflow_rl")

FORWARDED_ENV_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM")
CONNECT_TIMEOUT_S = 5.0


def import_ray():
    """The ``ray`` module, or a ``RuntimeError`` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("env.backend=ray needs Ray: pip install 'maniflow-rl[distributed]' "
                          "(or pip install ray)") from exc
    return ray


def address_host_port(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of an explicit Ray address (``host:port`` or ``ray://host:port``);
    None for a local instance (None) or ``auto`` (Ray looks the cluster up itself)."""
    if address is None or address == "auto":
        return None
    bare = address.split("://", 1)[-1]
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"env.ray_address must be 'auto', 'host:port' or 'ray://host:port', "
                         f"got {address!r}")
    return host, int(port)


def unreachable_message(address: str, reason: str) -> str:
    return (f"env.ray_address={address}: no Ray cluster reachable ({reason}); start one with "
            f"`ray start --head` (then env.ray_address=auto on that machine, or host:6379 "
            f"elsewhere), or leave env.ray_address unset for a local Ray instance")


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A ``ConnectionError`` at once if nothing listens at an explicit ``host:port``."""
    target = address_host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(unreachable_message(address, exc.strerror or str(exc))) from None


def forwarded_env_vars(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The env actors' variables: the driver's rendering ones, and one thread (every thread
    variable = 1, whatever the driver's values: ``utils/threads.py``)."""
    environ = dict(os.environ if environ is None else environ)
    return {**{k: environ[k] for k in FORWARDED_ENV_VARS if k in environ},
            **worker_thread_env()}


def connect(address: str | None, num_workers: int):
    """``ray`` after joining ``address`` (see module docstring); reuses a running session."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    check_reachable(address)
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                               "runtime_env": {"env_vars": forwarded_env_vars()}}
    if address is None:   # a local instance big enough for every actor
        options["num_cpus"] = max(os.cpu_count() or 1, num_workers)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError) as exc:
        if address is None:
            raise
        raise ConnectionError(unreachable_message(address, str(exc).splitlines()[0])) from None
    return ray


class RayEnvWorkers:
    """One Ray actor per block of envs; ``call`` / ``call_all`` as the runner's pipes."""

    def __init__(self, task: str, env_kwargs: dict[str, Any], block_sizes: Sequence[int],
                 address: str | None = None):
        from maniflow_rl.envs.vector.env_group import WorkerEnvGroup

        self.ray = connect(address, len(block_sizes))
        self._actor_class = self.ray.remote(num_cpus=1, max_restarts=0)(WorkerEnvGroup)
        self.task, self.env_kwargs, self.block_sizes = task, dict(env_kwargs), list(block_sizes)
        self.actors = [self._start(k) for k in range(len(self.block_sizes))]
        self._last_obs: list[dict[str, np.ndarray] | None] = [None] * len(self.actors)
        self.restarts = 0
        self.call_all("shape_meta", [()] * len(self.actors))   # wait until every actor is up

    def _start(self, k: int):
        return self._actor_class.remote(self.task, self.env_kwargs, self.block_sizes[k])

    def call(self, k: int, command: str, args: tuple) -> Any:
        return self.call_all_of([k], command, [args])[0]

    def call_all(self, command: str, args: Sequence[tuple]) -> list[Any]:
        return self.call_all_of(range(len(self.actors)), command, args)

    def call_all_of(self, blocks: Sequence[int], command: str,
                    args: Sequence[tuple]) -> list[Any]:
        """Submit ``command`` to every block first (they run concurrently), then collect;
        a dead actor is replaced (:meth:`_recover`)."""
        refs = [getattr(self.actors[k], command).remote(*a) for k, a in zip(blocks, args)]
        try:
            results = self.ray.get(refs)   # one round trip when every worker is alive
        except self.ray.exceptions.RayActorError:
            results = [self._get_or_recover(k, command, a, ref)
                       for k, a, ref in zip(blocks, args, refs)]
        if command in ("reset", "step", "step_chunk"):   # kept for a truncation after a death
            for k, result in zip(blocks, results):
                self._last_obs[k] = (result if command == "reset" else
                                     result["obs"] if command == "step" else result[-1]["obs"])
        return results

    def _get_or_recover(self, k: int, command: str, args: tuple, ref) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            return self._recover(k, command, args, exc)

    def _recover(self, k: int, command: str, args: tuple, exc: Exception) -> Any:
        """Replace actor ``k``. A ``step`` returns its envs' new episodes, the old ones
        truncated; any other command is repeated on the new actor."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("Ray env worker %d died (%s); restarted, its episodes count as truncated",
                    k, reason)
        self.restarts += 1
        self.actors[k] = self._start(k)
        if command not in ("step", "step_chunk") or self._last_obs[k] is None:
            return self.ray.get(getattr(self.actors[k], command).remote(*args))
        next_seeds = args[1]
        n = self.block_sizes[k]
        obs = self.ray.get(self.actors[k].reset.remote(next_seeds))
        zeros = {"rewards": np.zeros(n, np.float32), "terminated": np.zeros(n, bool),
                 "success": np.zeros(n, bool)}
        truncated = {"obs": obs, "final_obs": self._last_obs[k], **zeros,
                     "truncated": np.ones(n, bool)}
        if command == "step":
            return truncated
        held = {"obs": obs, "final_obs": None, **zeros, "truncated": np.zeros(n, bool)}
        return [truncated] + [held] * (np.shape(args[0])[1] - 1)   # then held (step_chunk)

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:   # already gone
                pass
        self.actors = []
