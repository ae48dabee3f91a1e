"""A block of point-cloud envs stepped one after the other: the body of a runner's worker
process or Ray actor, or of the in-process backend (``PointCloudEnvRunner`` with ``num_workers=0``).

``step`` steps (or holds) every env once and auto-resets the ended ones; ``step_chunk`` runs
a whole action chunk in one request with the collector's execute-and-hold rule (an env whose
episode ends is not stepped again in that chunk: ``rl/rollout_collector.py``), which saves
``Ca - 1`` round trips per chunk: pipe messages for worker processes, remote calls for Ray
actors.
"""

from __future__ import annotations

import signal
import traceback
from typing import Any, Sequence

import numpy as np

from maniflow_rl.utils.threads import limit_worker_threads, thread_report


def stack_obs(dicts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([d[key] for d in dicts]) for key in dicts[0]}


class EnvGroup:
    """A block of envs stepped sequentially: the body of a worker (or the in-process runner)."""

    def __init__(self, task: str, env_kwargs: dict[str, Any], count: int) -> None:
        from maniflow_rl.envs.registry import make_point_cloud_env

        self.envs = [make_point_cloud_env(task, **env_kwargs) for _ in range(count)]
        self._newest: list[dict[str, np.ndarray] | None] = [None] * count   # for held envs

    def shape_meta(self) -> dict[str, Any]:
        return self.envs[0].shape_meta

    def reset(self, seeds: Sequence[int]) -> dict[str, np.ndarray]:
        self._newest = [env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds)]
        return stack_obs(self._newest)

    def step(self, actions: np.ndarray, next_seeds: Sequence[int],
             active: Sequence[bool] | None = None) -> dict[str, Any]:
        """Step every env; ended ones reset with their ``next_seeds`` entry. ``final_obs`` holds
        the last observation of the ended envs only (rows ``np.flatnonzero(terminated |
        truncated)``), to keep the pipe traffic small. Envs with ``active[i]`` False are held
        (not stepped: newest observation, reward 0, no done)."""
        n = len(self.envs)
        rewards, success = np.zeros(n, np.float32), np.zeros(n, bool)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        obs_list, final_list = [], []
        for i, env in enumerate(self.envs):
            if active is not None and not active[i]:
                if self._newest[i] is None:
                    raise RuntimeError("step(active=...) before reset(): nothing to hold")
                obs_list.append(self._newest[i])
                continue
            obs, rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            success[i] = info["success"]
            if terminated[i] or truncated[i]:
                final_list.append(obs)
                obs, _ = env.reset(seed=int(next_seeds[i]))
            obs_list.append(obs)
            self._newest[i] = obs
        return {"obs": stack_obs(obs_list),
                "final_obs": stack_obs(final_list) if final_list else None, "rewards": rewards,
                "terminated": terminated, "truncated": truncated, "success": success}

    def step_chunk(self, actions: np.ndarray, next_seeds: Sequence[int],
                   active: Sequence[bool] | None = None) -> list[dict[str, Any]]:
        """Execute a chunk ``actions [n, Ca, Da]``: ``Ca`` :meth:`step` outputs, an env held
        from the sub-step after its episode ends (execute-and-hold), so it resets at most once
        and ``next_seeds`` serve the whole chunk. One request per chunk instead of ``Ca``."""
        stepping = (np.ones(len(self.envs), bool) if active is None
                    else np.array(active, dtype=bool))
        outputs = []
        for sub_step in range(np.shape(actions)[1]):
            out = self.step(actions[:, sub_step], next_seeds, stepping.tolist())
            stepping &= ~(out["terminated"] | out["truncated"])
            outputs.append(out)
        return outputs

    def render_rgb(self, index: int, width: int, height: int, camera: Any) -> np.ndarray:
        return self.envs[index].render_rgb(width, height, camera)

    def thread_report(self) -> dict[str, Any]:
        """Torch threads and thread variables of the process hosting this block."""
        return thread_report()

    def close(self) -> None:
        for env in self.envs:
            env.close()


class WorkerEnvGroup(EnvGroup):
    """The body of a worker process or Ray actor: one thread (``limit_worker_threads``) before
    the envs are built."""

    def __init__(self, task: str, env_kwargs: dict[str, Any], count: int) -> None:
        limit_worker_threads()
        super().__init__(task, env_kwargs, count)


def worker_main(conn, task: str, env_kwargs: dict[str, Any], count: int) -> None:
    """Worker process loop: build the envs, then serve ``(command, args)`` requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    group = None
    try:
        group = WorkerEnvGroup(task, env_kwargs, count)
        conn.send(("ok", None))
        while True:
            try:
                command, args = conn.recv()
            except (EOFError, OSError):  # parent gone
                break
            if command == "close":
                break
            try:
                conn.send(("ok", getattr(group, command)(*args)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except Exception:
        try:
            conn.send(("error", traceback.format_exc()))
        except (OSError, BrokenPipeError):
            pass
    finally:
        if group is not None:
            group.close()
        conn.close()
