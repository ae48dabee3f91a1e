"""ManiFlowDummyEnvRunner: a fast synthetic env runner for any ``shape_meta``.

Each episode draws a hidden goal ``c ~ U[-1, 1]^3``. Every observation key is a noisy function
of ``c`` (so ``c`` is visible in the observation), and the reward asks for a target action that
is a fixed linear function of ``c``::

    target(c) = W c            W: fixed [Da, 3] matrix with unit L1 rows, so target in [-1, 1]^Da
    reward    = clip(1 - mean_j (a_j - target_j)^2 / reward_scale, -1, 1)
                (optimum 1.0; with reward_scale=1: uniform random actions ~0.55, zeros ~0.87)
    success   = max_j |a_j - target_j| < success_tol

Observation keys by ``type`` in ``shape_meta['obs'][key]``:

- ``point_cloud`` ``[P, 3]`` or ``[P, 6]``: points ``c + 0.1 * N(0, I)``; channels 3..5 are an
  RGB color ``(c + 1) / 2`` (+ noise, clipped to [0, 1]).
- ``rgb`` ``[3, H, W]``: a Gaussian blob centred at ``(x, y) = (c_0, c_1)`` (image spans
  [-1, 1]^2) with channel ``k`` brightness ``0.25 + 0.75 (c_k + 1) / 2``. Float32 in [0, 1] by
  default; ``'dtype': 'uint8'`` in the key's meta gives uint8 in [0, 255].
- anything else (low-dim, any shape with D elements): ``f_k = c_k`` for ``k < 3`` and
  ``f_k = cos(pi (k // 3) c_{k mod 3})`` beyond (with D < 3 only part of ``c`` is visible).

All keys get Gaussian noise of std ``obs_noise``. Episodes are truncated after
``max_episode_steps`` (``truncated=True``); with ``terminate_on_success`` a success terminates
the episode. Ended envs auto-reset inside ``step`` and ``final_obs`` holds their last
observation. With ``group_size > 1``, envs ``i`` with equal ``i // group_size`` that reset at the
same step get the same goal (as if sharing a reset seed; useful for GRPO). Everything is
vectorized numpy; ``device`` is accepted for interface symmetry and ignored (numpy output).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from maniflow_rl.envs.base import check_active_mask, obs_meta_of

GOAL_DIM = 3
POINT_SPREAD = 0.1
BLOB_WIDTH = 0.15
TARGET_MATRIX_SEED = 20240601   # fixed: the task is the same for every env seed

# The example shape_meta of the original specification (robomimic-style keys): an eye-in-hand
# RGB camera, an xyzrgb point cloud and low-dim robot state; used by tests and examples.
SEED_SHAPE_META = {
    "obs": {
        "robot0_eye_in_hand_image": {"shape": [3, 84, 84], "type": "rgb"},
        "point_cloud": {"shape": [1024, 6], "type": "point_cloud"},
        "robot0_eef_pos": {"shape": [3]},
        "robot0_eef_quat": {"shape": [4]},
        "robot0_gripper_qpos": {"shape": [2]},
    },
    "action": {"shape": [10]},
}



def validate_dummy_shape_meta(shape_meta: Mapping[str, Any]) -> None:
    """Raise ValueError if ``shape_meta`` cannot be simulated by the dummy env."""
    obs_meta = obs_meta_of(shape_meta)
    if not obs_meta:
        raise ValueError("shape_meta['obs'] is empty")
    action_shape = tuple(shape_meta.get("action", {}).get("shape", ()))
    if len(action_shape) != 1 or action_shape[0] < 1:
        raise ValueError(f"shape_meta['action']['shape'] must be [Da], got {list(action_shape)}")
    for key, meta in obs_meta.items():
        shape = tuple(meta.get("shape", ()))
        kind = meta.get("type", "low_dim")
        if not shape or any(int(s) < 1 for s in shape):
            raise ValueError(f"shape_meta['obs']['{key}'] needs a non-empty positive 'shape'")
        if kind == "point_cloud" and (len(shape) != 2 or shape[1] not in (3, 6)):
            raise ValueError(f"point_cloud '{key}' must have shape [N, 3] or [N, 6], "
                             f"got {list(shape)}")
        if kind == "rgb" and (len(shape) != 3 or shape[0] != 3):
            raise ValueError(f"rgb '{key}' must have shape [3, H, W], got {list(shape)}")
        if meta.get("dtype", "float32") not in ("float32", "uint8"):
            raise ValueError(f"obs '{key}' dtype must be 'float32' or 'uint8'")


class ManiFlowDummyEnvRunner:
    """Synthetic vectorized env runner; see the module docstring for the task."""

    def __init__(self, shape_meta: Mapping[str, Any], num_envs: int = 4,
                 max_episode_steps: int = 40, seed: int = 0, device: Any = None,
                 obs_noise: float = 0.01, success_tol: float = 0.1,
                 terminate_on_success: bool = False, group_size: int = 1,
                 reward_scale: float = 1.0):
        validate_dummy_shape_meta(shape_meta)
        if num_envs < 1 or max_episode_steps < 1 or group_size < 1:
            raise ValueError("num_envs, max_episode_steps and group_size must be >= 1")
        if reward_scale <= 0:
            raise ValueError(f"reward_scale must be > 0, got {reward_scale}")
        self.shape_meta = shape_meta
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.device = device
        self.obs_noise = float(obs_noise)
        self.success_tol = float(success_tol)
        self.terminate_on_success = bool(terminate_on_success)
        self.group_size = int(group_size)
        self.reward_scale = float(reward_scale)
        weights = np.random.default_rng(TARGET_MATRIX_SEED).normal(size=(self.action_dim, GOAL_DIM))
        self.target_matrix = weights / np.abs(weights).sum(axis=1, keepdims=True)
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._goals = np.zeros((self.num_envs, GOAL_DIM))
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._obs: dict[str, np.ndarray] | None = None   # newest observation (held envs)

    accepts_active_mask = True   # step(actions, active=...) holds the envs outside the mask

    # ------------------------------------------------------------------ interface
    def seed(self, seeds: int | Sequence[int] | None) -> None:
        """Seed the next ``reset()``: an int seeds the runner's generator; a sequence of
        ``num_envs`` ints gives env ``i`` the goal drawn from ``seeds[i]`` (equal seeds, equal
        goals, as envs sharing a layout)."""
        if seeds is not None and not np.isscalar(seeds):
            seeds = [int(s) for s in np.asarray(seeds).ravel()]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed() needs an int or {self.num_envs} seeds, got {len(seeds)}")
        self._seed = seeds

    def reset(self, seed: int | Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Start new episodes in all envs; the same seed gives the same observations."""
        if seed is not None:
            self.seed(seed)
        per_env_seeds = None
        if self._seed is not None:
            per_env_seeds = None if np.isscalar(self._seed) else self._seed
            self._rng = np.random.default_rng(self._seed)
            self._seed = None
        all_envs = np.ones(self.num_envs, dtype=bool)
        self._goals = self._draw_goals(all_envs) if per_env_seeds is None else np.stack(
            [np.random.default_rng(s).uniform(-1.0, 1.0, GOAL_DIM) for s in per_env_seeds])
        self._elapsed[:] = 0
        self._obs = self._observe(self._goals)
        return {key: value.copy() for key, value in self._obs.items()}

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> dict[str, Any]:
        """Step the envs; with a bool ``active [num_envs]`` mask, the others are held: not
        stepped, their newest observation again, reward 0, no success, no done."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"actions must have shape ({self.num_envs}, {self.action_dim}), "
                             f"got {actions.shape}")
        held = ~check_active_mask(active, self.num_envs)
        if held.any() and self._obs is None:
            raise RuntimeError("step(active=...) before reset(): no observation to hold")
        error = actions - self.expert_actions()
        rewards = np.clip(1.0 - np.mean(error ** 2, axis=1) / self.reward_scale, -1.0, 1.0)
        rewards[held] = 0.0
        success = (np.max(np.abs(error), axis=1) < self.success_tol) & ~held
        self._elapsed += ~held
        terminated = success & self.terminate_on_success
        truncated = (self._elapsed >= self.max_episode_steps) & ~terminated & ~held
        dones = terminated | truncated

        obs = self._observe(self._goals)
        for key, value in obs.items():
            value[held] = self._obs[key][held]
        final_obs = {key: value.copy() for key, value in obs.items()}
        if dones.any():
            self._goals[dones] = self._draw_goals(dones)
            self._elapsed[dones] = 0
            for key, value in self._observe(self._goals[dones]).items():
                obs[key][dones] = value
        self._obs = {key: value.copy() for key, value in obs.items()}
        return {"obs": obs, "rewards": rewards.astype(np.float32), "dones": dones,
                "truncated": truncated, "success": success, "final_obs": final_obs}

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ helpers
    def expert_actions(self) -> np.ndarray:
        """The reward-maximizing actions ``W c`` for the current episodes, ``[num_envs, Da]``."""
        return (self._goals @ self.target_matrix.T).astype(np.float32)

    def _draw_goals(self, which: np.ndarray) -> np.ndarray:
        """Goals for the envs in boolean mask ``which``; one draw per group of ``group_size``."""
        num_groups = -(-self.num_envs // self.group_size)
        group_goals = self._rng.uniform(-1.0, 1.0, size=(num_groups, GOAL_DIM))
        return group_goals[np.arange(self.num_envs) // self.group_size][which]

    def _observe(self, goals: np.ndarray) -> dict[str, np.ndarray]:
        """Noisy observations for goals ``[B, 3]``: every key ``[B, *shape]``."""
        return {key: self._observe_key(goals, meta)
                for key, meta in obs_meta_of(self.shape_meta).items()}

    def _observe_key(self, goals: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
        batch = goals.shape[0]
        shape = tuple(int(s) for s in meta["shape"])
        kind = meta.get("type", "low_dim")
        if kind == "point_cloud":
            num_points = shape[0]
            xyz = goals[:, None, :] + POINT_SPREAD * self._rng.normal(size=(batch, num_points, 3))
            value = xyz
            if shape[1] == 6:
                color = np.broadcast_to((goals[:, None, :] + 1.0) / 2.0, xyz.shape)
                color = np.clip(color + self._noise(xyz.shape), 0.0, 1.0)
                value = np.concatenate([xyz, color], axis=-1)
        elif kind == "rgb":
            height, width = shape[1], shape[2]
            ys = np.linspace(-1.0, 1.0, height)[None, :, None]
            xs = np.linspace(-1.0, 1.0, width)[None, None, :]
            squared_distance = ((xs - goals[:, 0, None, None]) ** 2
                                + (ys - goals[:, 1, None, None]) ** 2)
            blob = np.exp(-squared_distance / (2 * BLOB_WIDTH ** 2))         # [B, H, W]
            brightness = 0.25 + 0.75 * (goals + 1.0) / 2.0                   # [B, 3]
            image = np.clip(brightness[:, :, None, None] * blob[:, None] + self._noise(
                (batch, 3, height, width)), 0.0, 1.0)
            if meta.get("dtype", "float32") == "uint8":
                return np.round(image * 255.0).astype(np.uint8)
            value = image
        else:
            num_features = int(np.prod(shape))
            index = np.arange(num_features)
            source = goals[:, index % GOAL_DIM]                               # [B, D]
            frequency = np.pi * (index // GOAL_DIM)
            features = np.where(index < GOAL_DIM, source, np.cos(frequency * source))
            value = (features + self._noise(features.shape)).reshape(batch, *shape)
        return value.astype(np.float32)

    def _noise(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.obs_noise * self._rng.normal(size=shape)
