"""GymVectorEnvRunner: a gymnasium ``VectorEnv`` behind the env-runner interface.

The env-runner interface uses *same-step* auto-reset: the step in which an episode ends already
returns the first observation of the next episode, with the last one in ``final_obs``. Gymnasium
1.x vector envs default to ``AutoresetMode.NEXT_STEP`` (the step *after* a done is a reset step
that ignores its action), which would silently waste and mis-attribute actions, so the adapter
requires ``AutoresetMode.SAME_STEP``::

    envs = gymnasium.vector.SyncVectorEnv(env_fns,
                                          autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    runner = GymVectorEnvRunner(envs)

Observation spaces: a ``Box`` becomes ``{'obs': array}``; a ``Dict`` keeps its keys. ``obs_key_map``
renames keys (gym key -> runner key; for a Box the gym key is ``'obs'``). ``success`` is read from
the info key ``'success'`` or ``'is_success'`` (for ended envs from ``final_info``); an episode
that is both terminated and truncated counts as terminated (no bootstrap).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium
import numpy as np

SUCCESS_INFO_KEYS = ("success", "is_success")


class GymVectorEnvRunner:
    """Adapt a gymnasium ``VectorEnv`` (same-step auto-reset) to the env-runner interface."""

    def __init__(self, vector_env: gymnasium.vector.VectorEnv,
                 obs_key_map: Mapping[str, str] | None = None):
        mode = vector_env.metadata.get("autoreset_mode", gymnasium.vector.AutoresetMode.NEXT_STEP)
        if gymnasium.vector.AutoresetMode(mode) != gymnasium.vector.AutoresetMode.SAME_STEP:
            raise ValueError(
                f"GymVectorEnvRunner needs a vector env with same-step auto-reset, got {mode}. "
                "Construct it with autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP, e.g. "
                "gymnasium.vector.SyncVectorEnv(env_fns, "
                "autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)")
        space = vector_env.single_observation_space
        if not isinstance(space, (gymnasium.spaces.Box, gymnasium.spaces.Dict)):
            raise ValueError(f"unsupported observation space {type(space).__name__}; "
                             "use Box or Dict of Box")
        self.vector_env = vector_env
        self.num_envs = int(vector_env.num_envs)
        self.obs_key_map = dict(obs_key_map or {})
        self._is_dict_space = isinstance(space, gymnasium.spaces.Dict)
        spec = getattr(vector_env, "spec", None)
        self.max_episode_steps = getattr(spec, "max_episode_steps", None)
        self._pending_seed: int | Sequence[int] | None = None

    def seed(self, seeds: int | Sequence[int] | None) -> None:
        """Seed the next ``reset()`` (an int, or one seed per env)."""
        self._pending_seed = seeds

    def reset(self, seed: int | Sequence[int] | None = None) -> dict[str, np.ndarray]:
        seed = seed if seed is not None else self._pending_seed
        self._pending_seed = None
        if seed is not None and not np.isscalar(seed):
            seed = [int(s) for s in seed]
        obs, _ = self.vector_env.reset(seed=seed)
        return self._obs_dict(obs)

    def step(self, actions: np.ndarray) -> dict[str, Any]:
        actions = np.asarray(actions).astype(self.vector_env.action_space.dtype, copy=False)
        obs, rewards, terminated, truncated, infos = self.vector_env.step(actions)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        obs = self._obs_dict(obs)
        final_obs = {key: value.copy() for key, value in obs.items()}
        if dones.any():
            ended = np.flatnonzero(infos.get("_final_obs", dones))
            for i in ended:
                for key, value in self._obs_dict(infos["final_obs"][i]).items():
                    final_obs[key][i] = value
        success = self._success_from(infos)
        if "final_info" in infos:
            final_success = self._success_from(infos["final_info"])
            success = np.where(dones, final_success, success)
        return {"obs": obs, "rewards": np.asarray(rewards, dtype=np.float32), "dones": dones,
                "truncated": truncated & ~terminated, "success": success,
                "final_obs": final_obs}

    def close(self) -> None:
        self.vector_env.close()

    def _obs_dict(self, obs: Any) -> dict[str, np.ndarray]:
        """Gym observation (Box array or dict) -> runner dict with mapped key names."""
        raw = dict(obs) if self._is_dict_space else {"obs": obs}
        return {self.obs_key_map.get(key, key): np.asarray(value) for key, value in raw.items()}

    def _success_from(self, infos: Mapping[str, Any]) -> np.ndarray:
        """Boolean ``[num_envs]`` success from a vector info dict (False where absent)."""
        for key in SUCCESS_INFO_KEYS:
            if key in infos:
                present = np.asarray(infos.get(f"_{key}", np.ones(self.num_envs, bool)), bool)
                return np.asarray(infos[key], dtype=bool) & present
        return np.zeros(self.num_envs, dtype=bool)
