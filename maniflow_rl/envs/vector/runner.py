"""PointCloudEnvRunner: many point-cloud envs (MetaWorld's, or robosuite's for a
``robosuite/<task>``: ``envs/registry.py``) behind the env-runner interface
(docs/ARCHITECTURE.md), stepped in parallel. Exported as ``MetaWorldEnvRunner`` (and
``RobosuiteEnvRunner``) by the simulator packages.

* Execution backends (this package's other modules, one interface): worker processes over
  pipes (``processes.py``, the default), Ray actors (``backend="ray"``: ``ray_workers.py``,
  local or a cluster via ``ray_address``; a dead worker is restarted, its episodes truncated),
  or every env in this process (``num_workers=0``: ``in_process.py``; tests, debugging). Each
  worker hosts a contiguous block of envs and steps them sequentially (``env_group.py``); a
  command goes to every worker before any reply is collected, so workers run concurrently.
* Auto-reset inside ``step``: an env whose episode ended (terminated or truncated) is reset at
  once; ``obs`` holds the new episode's first frame and ``final_obs`` the ended episode's last.
  ``step(actions, active=mask)`` holds the envs outside the mask (not stepped, not rendered).
* Reproducible layouts: episode ``k`` of env ``i`` is reset with a seed that depends only on
  ``(seed, i // group_size, k)``; envs of one group (``group_size > 1``) get the same sequence
  of layouts (GRPO groups). ``reset(seed=...)`` / ``seed(...)`` restart the sequences at k = 0;
  a plain ``reset()`` continues them.
* Threads (``utils/threads.py``): every worker runs one thread (``OMP_NUM_THREADS`` and the
  other thread variables = 1, whatever the parent's values; torch, if a worker loads it, 1
  thread); ``worker_thread_reports()`` returns what each worker sees.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from maniflow_rl.envs.base import check_active_mask

RUNNER_BACKENDS = ("multiprocessing", "ray")


def _concat(dicts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([d[key] for d in dicts]) for key in dicts[0]}


def derive_episode_seed(env_base_seed: int, episode: int) -> int:
    """Reset seed of an env's ``episode``-th episode (episode 0 uses the base seed itself)."""
    if episode == 0:
        return int(env_base_seed)
    return int(np.random.SeedSequence([int(env_base_seed), int(episode)]).generate_state(1)[0])


class PointCloudEnvRunner:
    """Vectorized point-cloud envs (env-runner interface, see the module docstring).

    Args:
        task: MetaWorld task (``metaworld/pick-place-v3``, ``pick-place-v3`` or ``pick-place``)
            or a robosuite one (``robosuite/lift``, ``/can``, ``/square``).
        num_envs: number of envs.
        seed: base seed of the episode layouts.
        num_workers: worker processes; None = ``min(num_envs, cpu count)``; 0 = in-process.
        group_size: envs per layout group (see module docstring).
        start_method: multiprocessing start method (keep ``spawn`` when rendering).
        backend: ``multiprocessing`` (worker processes; in-process with ``num_workers=0``) or
            ``ray`` (Ray actors, ``num_workers >= 1``).
        ray_address: Ray backend: None (local instance), ``auto`` or ``host:port``.
        **env_kwargs: forwarded to ``MetaWorldPointCloudEnv`` / ``RobosuitePointCloudEnv``.
    """

    def __init__(self, task: str, num_envs: int, seed: int = 0, num_workers: int | None = None,
                 group_size: int = 1, start_method: str = "spawn",
                 backend: str = "multiprocessing", ray_address: str | None = None,
                 **env_kwargs: Any) -> None:
        from maniflow_rl.envs.registry import default_max_episode_steps, resolve_env_task

        if num_envs < 1 or group_size < 1:
            raise ValueError("num_envs and group_size must be >= 1")
        if backend not in RUNNER_BACKENDS:
            raise ValueError(f"backend must be one of {RUNNER_BACKENDS}, got {backend!r}")
        self.task = resolve_env_task(task)
        self.num_envs, self.group_size = int(num_envs), int(group_size)
        self.env_kwargs = dict(env_kwargs)
        self.max_episode_steps = int(env_kwargs.get("max_episode_steps")
                                     or default_max_episode_steps(self.task))
        if num_workers is None:
            num_workers = min(self.num_envs, os.cpu_count() or 1)
        self.num_workers = min(int(num_workers), self.num_envs)
        if backend == "ray" and self.num_workers < 1:
            raise ValueError("backend='ray' needs num_workers >= 1 (env.num_workers)")
        self._closed = False
        self.seed(seed)
        self._blocks = (np.array_split(np.arange(self.num_envs), self.num_workers)
                        if self.num_workers > 0 else [np.arange(self.num_envs)])
        sizes = [len(b) for b in self._blocks]
        if backend == "ray":
            from maniflow_rl.envs.vector.ray_workers import RayEnvWorkers

            self._workers = RayEnvWorkers(self.task, self.env_kwargs, sizes, ray_address)
        elif self.num_workers <= 0:
            from maniflow_rl.envs.vector.in_process import InProcessEnvWorkers

            self._workers = InProcessEnvWorkers(self.task, self.env_kwargs, sizes)
        else:
            from maniflow_rl.envs.vector.processes import ProcessEnvWorkers

            self._workers = ProcessEnvWorkers(self.task, self.env_kwargs, sizes, start_method)
        self._shape_meta = self._call_all("shape_meta", [()] * len(self._blocks))[0]
        self.action_dim = int(self._shape_meta["action"]["shape"][0])

    # ------------------------------------------------------------------ interface
    @property
    def shape_meta(self) -> dict[str, Any]:
        """``{'obs': {key: {'shape', 'type'}}, 'action': {'shape': [Da]}}`` (MetaWorld: 4)."""
        return self._shape_meta

    @property
    def current_episode_seeds(self) -> np.ndarray:
        """Reset seed of every env's current episode ``[num_envs]`` (``env.reset(seed=...)``)."""
        return self._episode_seeds(self._episode)

    @property
    def group_ids(self) -> np.ndarray:
        return np.arange(self.num_envs) // self.group_size

    def seed(self, seeds: int | Sequence[int] | None = None) -> None:
        """Seed the next ``reset()``: an int derives every env's layout sequence; a sequence of
        ``num_envs`` ints gives each env's first reset seed explicitly; None draws a random base."""
        if seeds is None:
            seeds = int(np.random.SeedSequence().generate_state(1)[0])
        if np.isscalar(seeds):
            groups = self.group_ids
            self._env_base = np.array(
                [np.random.SeedSequence([int(seeds), int(g)]).generate_state(1)[0] for g in groups],
                dtype=np.int64)
        else:
            seeds = np.asarray(seeds, dtype=np.int64).ravel()
            if seeds.shape != (self.num_envs,):
                raise ValueError(f"seed() needs an int or {self.num_envs} seeds, "
                                 f"got {seeds.shape[0]}")
            self._env_base = seeds.copy()
        self._episode = np.full(self.num_envs, -1, dtype=np.int64)  # next reset starts episode 0

    def reset(self, seed: int | Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Start a new episode in every env; returns obs ``{key: [num_envs, *shape]}``."""
        self._check_open()
        if seed is not None:
            self.seed(seed)
        self._episode += 1
        seeds = self._episode_seeds(self._episode)
        return _concat(self._call_all("reset", [(seeds[b].tolist(),) for b in self._blocks]))

    accepts_active_mask = True   # step(actions, active=...) holds the envs outside the mask

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> dict[str, Any]:
        """Step every env; ended episodes auto-reset (see the module docstring). Envs outside
        the bool mask ``active`` are held (env-runner interface, ``envs/base.py``)."""
        actions, mask = self._check_step_input(actions, active, (self.num_envs, self.action_dim))
        next_seeds = self._episode_seeds(self._episode + 1)
        return self._merge_step(self._call_all("step", [
            (actions[b], next_seeds[b].tolist(), None if mask is None else mask[b].tolist())
            for b in self._blocks]))

    def step_chunk(self, actions: np.ndarray, active: np.ndarray | None = None
                   ) -> list[dict[str, Any]]:
        """Execute a chunk ``actions [num_envs, Ca, Da]``: the ``Ca`` outputs of :meth:`step`
        with an env held from the sub-step after its episode ends (execute-and-hold, the
        collector's rule), in one request per worker instead of ``Ca``."""
        chunk = np.shape(actions)[1] if np.ndim(actions) == 3 else -1
        actions, mask = self._check_step_input(actions, active,
                                               (self.num_envs, chunk, self.action_dim))
        next_seeds = self._episode_seeds(self._episode + 1)   # an env ends once at most
        parts = self._call_all("step_chunk", [
            (actions[b], next_seeds[b].tolist(), None if mask is None else mask[b].tolist())
            for b in self._blocks])
        return [self._merge_step([p[sub_step] for p in parts]) for sub_step in range(chunk)]

    def _check_step_input(self, actions, active, shape) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_open()
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != shape or shape[1] < 1:
            raise ValueError(f"actions must have shape {shape}, got {actions.shape}")
        return actions, None if active is None else check_active_mask(active, self.num_envs)

    def _merge_step(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """One step's output of every block, as one dict over all envs; counts episodes."""
        out = {key: np.concatenate([p[key] for p in parts])
               for key in ("rewards", "terminated", "truncated", "success")}
        out["obs"] = _concat([p["obs"] for p in parts])
        out["dones"] = out["terminated"] | out["truncated"]
        out["final_obs"] = {key: value.copy() for key, value in out["obs"].items()}
        ended = [p["final_obs"] for p in parts if p["final_obs"] is not None]
        if ended:  # rows of non-ended envs keep their current obs (arbitrary per the interface)
            for key, value in _concat(ended).items():
                out["final_obs"][key][out["dones"]] = value
        self._episode[out["dones"]] += 1
        return out

    def render_rgb(self, width: int = 256, height: int = 256, camera: str | int | None = None,
                   env_index: int = 0) -> np.ndarray:
        """Upright ``[H, W, 3]`` uint8 frame of one env (default env 0) for videos."""
        block = next(k for k, b in enumerate(self._blocks) if env_index in b)
        local = int(env_index - self._blocks[block][0])
        return self._call(block, "render_rgb", (local, width, height, camera))

    def worker_thread_reports(self) -> list[dict[str, Any]]:
        """``thread_report()`` of every worker (of this process with ``num_workers=0``)."""
        return self._call_all("thread_report", [()] * len(self._blocks))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        workers = getattr(self, "_workers", None)   # absent when __init__ failed before it
        if workers is not None:
            workers.close()

    def __enter__(self) -> "PointCloudEnvRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ internals
    def _episode_seeds(self, episodes: np.ndarray) -> np.ndarray:
        return np.array([derive_episode_seed(b, max(int(k), 0))
                         for b, k in zip(self._env_base, episodes)], dtype=np.int64)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the env runner is closed")

    def _call(self, k: int, command: str, args: tuple) -> Any:
        return self._workers.call(k, command, args)

    def _call_all(self, command: str, args: Sequence[tuple]) -> list[Any]:
        return self._workers.call_all(command, args)
