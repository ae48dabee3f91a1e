"""RobosuitePointCloudEnv: one robosuite task (Panda arm) with the specification's observations.

Observation dict (float32 unless noted), exactly the keys of the specification's example
``shape_meta``::

    robot0_eye_in_hand_image  uint8 [3, 84, 84]   wrist camera, RGB, CHW, upright
    point_cloud               [N, 6]              xyz (world frame, metres) + rgb in [0, 1]:
                                                  the task's depth cameras back-projected,
                                                  fused, cropped to the workspace box,
                                                  farthest-point sampled to N (default 1024)
    robot0_eef_pos            [3]                 end-effector position, world frame
    robot0_eef_quat           [4]                 end-effector orientation (x, y, z, w)
    robot0_gripper_qpos       [2]                 finger joint positions
    full_state                [D]                 only with ``privileged_state``: robosuite's
                                                  proprio-state + object-state (critics only)

Actions (``action_mode``):

* ``"absolute"`` (10-D, the specification's): target position (3, world frame), target
  orientation as a 6-D rotation (6, first two rows of the matrix, ``rotation.py``), gripper
  (1: -1 open .. 1 closed). Sent to robosuite's OSC controller as an absolute world-frame pose.
* ``"delta"`` (7-D): robosuite's default OSC_POSE: position and axis-angle deltas in [-1, 1]
  (scaled to 5 cm and 0.5 rad per step), gripper.

Episodes: ``reset(seed=s)`` draws the object layout from robosuite's placement sampler under a
seeded numpy state (robosuite samples from the global ``np.random``; the caller's global state
is restored afterwards), so a seed gives the same layout. Reward: ``sparse`` = 1.0 on success
steps, ``dense`` = robosuite's staged reward (``reward_shaping``, at most 1), ``shaped`` = the
sparse reward plus the change of the dense one (MetaWorld's ``shaped``; ``potential`` is the
dense reward of the current state). Success terminates the episode by default;
``max_episode_steps`` (task default, ``tasks.py``) truncates. 20 Hz control.
"""

from __future__ import annotations

import os
import sys
from typing import Any

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless default; must precede `import mujoco`

import gymnasium as gym
import numpy as np

from maniflow_rl.envs.base import PRIVILEGED_KEY
from maniflow_rl.envs.metaworld.point_cloud import (depth_to_cropped_world_points,
                                                    farthest_point_sample)
from maniflow_rl.envs.metaworld.tasks import REWARD_TYPES
from maniflow_rl.envs.robosuite import rotation
from maniflow_rl.envs.robosuite.tasks import ACTION_MODES, resolve_robosuite_task

IMAGE_KEY = "robot0_eye_in_hand_image"
PROPRIO_KEYS = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}
ACTION_DIMS = {"absolute": 10, "delta": 7}


def _controller_config(action_mode: str) -> dict:
    from robosuite.controllers import load_composite_controller_config

    config = load_composite_controller_config(controller="BASIC")
    if action_mode == "absolute":
        config["body_parts"]["right"].update(input_type="absolute", input_ref_frame="world")
    return config


class RobosuitePointCloudEnv(gym.Env):
    """Gymnasium env over ``robosuite.make(<task>)`` with point-cloud observations.

    Args:
        task: ``robosuite/lift``, ``robosuite/can`` or ``robosuite/square``.
        num_points: points after farthest point sampling.
        image_size: wrist image height = width.
        camera_size: depth render size of the point-cloud cameras.
        action_mode: ``"absolute"`` (10-D) or ``"delta"`` (7-D), module docstring.
        reward_type: ``"sparse"``, ``"dense"`` or ``"shaped"``.
        privileged_state: add ``full_state`` (not a policy input).
        terminate_on_success: end the episode on the first success step.
        max_episode_steps: truncation limit (None: the task's).
        seed: optional seed of the first reset.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: str, num_points: int = 1024, image_size: int = 84,
                 camera_size: int = 128, action_mode: str = "absolute",
                 reward_type: str = "sparse", privileged_state: bool = False,
                 terminate_on_success: bool = True, max_episode_steps: int | None = None,
                 seed: int | None = None) -> None:
        self.spec_task = resolve_robosuite_task(task)
        self.task = self.spec_task.name
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {REWARD_TYPES}, got {reward_type!r}")
        if num_points < 1 or image_size < 1 or camera_size < 1:
            raise ValueError("num_points, image_size and camera_size must be >= 1")
        self.num_points, self.image_size, self.camera_size = num_points, image_size, camera_size
        self.action_mode, self.reward_type = action_mode, reward_type
        self.privileged_state = bool(privileged_state)
        self.terminate_on_success = terminate_on_success
        self.max_episode_steps = int(max_episode_steps or self.spec_task.max_episode_steps)
        self.workspace_bounds = np.asarray(self.spec_task.workspace_bounds, dtype=np.float64)

        import mujoco
        import robosuite

        self._mujoco = mujoco
        self._rs = robosuite.make(
            self.spec_task.env_name, robots="Panda",
            controller_configs=_controller_config(action_mode), has_renderer=False,
            has_offscreen_renderer=False, use_camera_obs=False, reward_shaping=True,
            reward_scale=1.0, control_freq=20, horizon=self.max_episode_steps + 1,
            ignore_done=True, hard_reset=False)
        self.model, self.data = self._rs.sim.model._model, self._rs.sim.data._data
        self.model.vis.quality.offsamples = 0
        camera_names = (*self.spec_task.cameras, "robot0_eye_in_hand")
        self._camera_ids = {name: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name)
                            for name in camera_names}
        self._renderers: dict[tuple[int, int], Any] = {}
        self._raw: dict[str, np.ndarray] = {}
        self._elapsed, self._potential = 0, 0.0
        self._pending_seed = seed
        self._expert = None

        self.observation_space = gym.spaces.Dict({
            name: gym.spaces.Box(-np.inf, np.inf, shape, np.float32) if name != IMAGE_KEY else
            gym.spaces.Box(0, 255, shape, np.uint8)
            for name, shape in self._obs_shapes().items()})
        dim = ACTION_DIMS[action_mode]
        self.action_space = gym.spaces.Box(-np.inf if action_mode == "absolute" else -1.0,
                                           np.inf if action_mode == "absolute" else 1.0,
                                           (dim,), np.float32)

    # ------------------------------------------------------------------ layout
    def _obs_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {IMAGE_KEY: (3, self.image_size, self.image_size),
                  "point_cloud": (self.num_points, 6),
                  **{k: (n,) for k, n in PROPRIO_KEYS.items()}}
        if self.privileged_state:
            shapes[PRIVILEGED_KEY] = (len(self._privileged_vector(self._rs._get_observations())),)
        return shapes

    @property
    def shape_meta(self) -> dict[str, Any]:
        """The specification's ``shape_meta`` of this env (privileged state excluded)."""
        types = {IMAGE_KEY: "rgb", "point_cloud": "point_cloud"}
        return {"obs": {k: {"shape": list(s), "type": types.get(k, "low_dim")}
                        for k, s in self._obs_shapes().items() if k != PRIVILEGED_KEY},
                "action": {"shape": [ACTION_DIMS[self.action_mode]]}}

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is None and self._pending_seed is not None:
            seed, self._pending_seed = self._pending_seed, None
        super().reset(seed=seed)
        saved = np.random.get_state()
        try:
            if seed is not None:
                np.random.seed(int(seed) % 2**32)
            else:   # continue this env's own stream, not the caller's
                np.random.seed(int(self.np_random.integers(2**32)))
            self._raw = self._rs.reset()
        finally:
            np.random.set_state(saved)
        self._elapsed = 0
        self._potential = float(self._rs.reward(None))
        if self._expert is not None:
            self._expert.reset()
        return self._observe(), {"success": False, "seed": seed}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIMS[self.action_mode],):
            raise ValueError(f"{self.task} ({self.action_mode} actions) needs an action of "
                             f"shape ({ACTION_DIMS[self.action_mode]},), got {action.shape}")
        self._raw, dense, _, _ = self._rs.step(self.controller_action(action))
        self._elapsed += 1
        success = bool(self._rs._check_success())
        terminated = success and self.terminate_on_success
        truncated = self._elapsed >= self.max_episode_steps and not terminated
        potential, self._potential = self._potential, float(dense)
        reward = {"sparse": float(success), "dense": float(dense),
                  "shaped": float(success) + self._potential - potential}[self.reward_type]
        info = {"success": success, "dense_reward": float(dense)}
        return self._observe(), reward, terminated, truncated, info

    def controller_action(self, action: np.ndarray) -> np.ndarray:
        """Our action -> robosuite's: absolute ``[pos, 6-D, grip]`` -> ``[pos, rotvec, grip]``
        (world frame); delta actions pass unchanged (clipped to [-1, 1])."""
        if self.action_mode == "delta":
            return np.clip(action, -1.0, 1.0)
        rotvec = rotation.matrix_to_axis_angle(rotation.rotation_6d_to_matrix(action[3:9]))
        return np.concatenate([action[:3], rotvec, np.clip(action[9:], -1.0, 1.0)])

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}
        self._rs.close()

    # ------------------------------------------------------------------ observations
    def _privileged_vector(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([raw["robot0_proprio-state"], raw["object-state"]])

    @property
    def potential(self) -> float:
        """robosuite's staged (dense) reward of the current state, at most 1."""
        return self._potential

    @property
    def raw_obs(self) -> np.ndarray:
        """robosuite's proprio-state + object-state (what ``full_state`` holds)."""
        return self._privileged_vector(self._raw).astype(np.float64)

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """``(position [3], rotation matrix [3, 3])`` of the controller's end-effector frame
        (the grip site), world frame: what absolute actions command. ``robot0_eef_quat`` is
        the hand body's orientation, a quarter turn about z away from it."""
        return (np.array(self._raw["robot0_eef_pos"], dtype=np.float64),
                rotation.quat_to_matrix(self._raw["robot0_eef_quat_site"]))

    def _renderer(self, height: int, width: int):
        from maniflow_rl.envs.metaworld.rendering import SceneRenderer

        key = (height, width)
        if key not in self._renderers:
            self._renderers[key] = SceneRenderer(self.model, f"robosuite:{self.task}",
                                                 height, width)
        return self._renderers[key]

    def point_cloud(self) -> np.ndarray:
        """``[num_points, 6]``: every point-cloud camera's depth back-projected with its colour,
        fused, cropped to ``workspace_bounds``, farthest-point sampled."""
        renderer = self._renderer(self.camera_size, self.camera_size)
        parts = []
        for name in self.spec_task.cameras:
            cam = self._camera_ids[name]
            rgb, depth = renderer.rgbd(self.data, cam)
            parts.append(depth_to_cropped_world_points(
                depth, self.model.cam_fovy[cam], self.data.cam_xpos[cam], self.data.cam_xmat[cam],
                self.workspace_bounds, rgb=rgb))
        return farthest_point_sample(np.concatenate(parts), self.num_points).astype(np.float32)

    def _observe(self) -> dict[str, np.ndarray]:
        image = self._renderer(self.image_size, self.image_size).rgb(
            self.data, self._camera_ids["robot0_eye_in_hand"])
        obs = {IMAGE_KEY: np.ascontiguousarray(image.transpose(2, 0, 1)),
               "point_cloud": self.point_cloud(),
               **{k: np.asarray(self._raw[k], dtype=np.float32) for k in PROPRIO_KEYS}}
        if self.privileged_state:
            obs[PRIVILEGED_KEY] = self.raw_obs.astype(np.float32)
        return obs

    def render_rgb(self, width: int = 256, height: int = 256,
                   camera: str | int | None = None) -> np.ndarray:
        """``[H, W, 3]`` uint8 frame (videos); default camera ``agentview``."""
        camera = "agentview" if camera is None else camera
        cam = (camera if isinstance(camera, int) else
               self._mujoco.mj_name2id(self.model, self._mujoco.mjtObj.mjOBJ_CAMERA, camera))
        return self._renderer(height, width).rgb(self.data, cam)

    def render(self) -> np.ndarray:
        return self.render_rgb()

    # ------------------------------------------------------------------ scripted expert
    def expert_action(self) -> np.ndarray:
        """The scripted expert's next action in this env's ``action_mode`` (``experts.py``)."""
        if self._expert is None:
            from maniflow_rl.envs.robosuite.experts import make_expert

            self._expert = make_expert(self)
        return self._expert.act()
