"""MetaWorldPointCloudEnv: one MetaWorld v3 task with point-cloud observations.

Observation dict (float32 unless noted):
  * ``point_cloud`` ``[N, 3]`` world-frame xyz in metres (``[N, 6]`` with rgb in [0, 1] when
    ``use_rgb_points``): camera depth -> world points (or points on the geoms' surfaces with
    ``point_cloud_source="geometry"``) -> workspace crop -> farthest point sampling to N;
  * ``agent_pos`` ``[9]`` (``agent_pos="dp3"``, default, as in DP3's MetaWorld wrapper): hand
    position (body ``hand``) + right and left finger-tip sites (``rightEndEffector``,
    ``leftEndEffector``); ``agent_pos="hand_gripper"`` gives ``[4]``: MetaWorld's obs[:4]
    (hand xyz + normalized gripper opening);
  * ``image`` ``[3, H, W]`` uint8 RGB of the camera (only with ``use_image=True``).

Episodes: reset draws the task's object/goal layout from MetaWorld's continuous random reset
space with the env's own seeded generator (``reset(seed=s)`` is reproducible; unseeded resets
continue the stream). The goal is observable in the 39-d state (``raw_obs``, used by the scripted
expert). Reward: ``sparse`` = 1.0 on success steps else 0.0, ``dense`` = MetaWorld's shaped
reward (0..10), ``shaped`` = the sparse reward plus a potential difference built from it::

    Phi(s_0) = dense(0, s_0) / 10   (at reset, zero action),   Phi(s_{t+1}) = dense_t / 10
    r_t      = 1[success_t] + Phi(s_{t+1}) - Phi(s_t)

so an episode's rewards sum to ``1[success] + Phi(s_T) - Phi(s_0)``: the success reward is
kept, and every step is told how much closer MetaWorld's own reward thinks it got (a critic
sees what one action chunk did long before the episode's outcome). Success terminates the
episode by default; ``max_episode_steps`` truncates.

Rendering: MuJoCo renderers are created lazily (first render), so the env is cheap to build and
can be pickled (pickling keeps the configuration only; the copy starts a fresh episode).
MetaWorld's ``corner*`` cameras are mounted upside down; ``image`` and ``render_rgb`` are rotated
by 180 degrees so they appear upright (point clouds are unaffected).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Sequence

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless default; must precede `import mujoco`

import gymnasium as gym
import numpy as np

from maniflow_rl.envs.base import PRIVILEGED_KEY
from maniflow_rl.envs.metaworld.point_cloud import (
    depth_to_cropped_world_points,
    depth_to_world_points,
    farthest_point_sample,
)
from maniflow_rl.envs.metaworld.tasks import REWARD_TYPES, resolve_task

GL_HELP = (
    "MuJoCo could not create an OpenGL context for offscreen rendering ({error}). "
    "On Debian/Ubuntu install the GL libraries: `apt-get install libegl1 libgl1-mesa-dri` and "
    "set MUJOCO_GL=egl, or `apt-get install libosmesa6` and set MUJOCO_GL=osmesa (set it before "
    "Python imports mujoco). Alternatively use point_cloud_source='geometry', which needs no "
    "rendering."
)


class RenderingUnavailableError(RuntimeError):
    """MuJoCo offscreen rendering (EGL / OSMesa) is not available."""


def _import_sim():
    try:
        import mujoco  # imports the GL backend named by MUJOCO_GL
        import metaworld  # noqa: F401  (registers envs; needs `packaging`)
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if any(k in text for k in ("EGL", "OSMesa", "OpenGL", "libGL", "GLFW", "MUJOCO_GL")):
            raise RenderingUnavailableError(GL_HELP.format(error=text)) from exc
        if isinstance(exc, ImportError):
            raise ImportError(f"{exc}. Install the simulator extras: "
                              "pip install 'maniflow-rl[sim]'") from exc
        raise
    return mujoco, ALL_V3_ENVIRONMENTS


# World-frame crop box [[xmin, ymin, zmin], [xmax, ymax, zmax]] (metres), measured over resets of
# all 50 tasks: objects span x in [-0.46, 0.37], y in [0.33, 1.07], z up to 0.66 (shelf). z >= 5 mm
# removes the table top (z = 0) as DP3's crop does; x within +-0.6 and y <= 0.975 drop the table's
# retaining walls (inner faces at |x| = 0.68, y = 0.98), at the price of the back few cm of the
# coffee machine and button boxes.
DEFAULT_WORKSPACE_BOUNDS = ((-0.6, 0.3, 0.005), (0.6, 0.975, 1.0))
# DP3 moves `corner2` closer to the table (its MetaWorld wrapper sets cam_pos[2] to this).
DP3_CAMERA_POS = {"corner2": (0.6, 0.295, 0.8)}
_SOURCES = ("camera", "geometry")
#: observation key of MetaWorld's 39-d state with ``privileged_state=True`` (critics, or a
#: state-based policy: ``policy.obs=state``)


def privileged_state_for(shape_meta: dict | None) -> bool:
    """Whether envs for a policy with this ``shape_meta`` must provide ``full_state``."""
    return bool(shape_meta) and PRIVILEGED_KEY in shape_meta.get("obs", {})


class MetaWorldPointCloudEnv(gym.Env):
    """One MetaWorld v3 task with point-cloud observations (see the module docstring).

    Args:
        task: ``metaworld/<task>-v3``, ``<task>-v3`` or ``<task>``.
        num_points: N points per cloud (FPS; repeated if fewer survive the crop).
        point_cloud_source: ``"camera"`` (depth render) or ``"geometry"`` (no rendering).
        camera: MuJoCo camera name or id used for depth, rgb points and ``image``.
        camera_pos: ``"dp3"`` (DP3's corner2 position for corner2, else the model's), None (the
            model's) or an explicit world position.
        camera_size: depth / rgb render size (height = width), default 128.
        workspace_bounds: crop box, see ``DEFAULT_WORKSPACE_BOUNDS``.
        use_rgb_points: xyz + rgb points ``[N, 6]`` (camera source only).
        use_image: add ``image`` ``[3, camera_size, camera_size]`` uint8.
        agent_pos: ``"dp3"`` (9-d) or ``"hand_gripper"`` (4-d).
        reward_type: ``"sparse"``, ``"dense"`` or ``"shaped"`` (module docstring).
        privileged_state: add ``full_state`` ``[39]`` (MetaWorld's state, goal observable) to
            each observation, for asymmetric critics; it is not a policy input (not in
            ``shape_meta``).
        terminate_on_success: end the episode on the first success step.
        max_episode_steps: truncation limit.
        geometry_points: surface points pre-sampled for the geometry source.
        seed: optional seed of the first reset (same as ``reset(seed=...)``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        num_points: int = 512,
        point_cloud_source: str = "camera",
        camera: str | int = "corner2",
        camera_pos: str | Sequence[float] | None = "dp3",
        camera_size: int = 128,
        workspace_bounds: Sequence[Sequence[float]] = DEFAULT_WORKSPACE_BOUNDS,
        use_rgb_points: bool = False,
        use_image: bool = False,
        agent_pos: str = "dp3",
        reward_type: str = "sparse",
        privileged_state: bool = False,
        terminate_on_success: bool = True,
        max_episode_steps: int = 200,
        geometry_points: int = 16384,
        seed: int | None = None,
    ) -> None:
        self._init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.task = resolve_task(task)
        if point_cloud_source not in _SOURCES:
            raise ValueError(f"point_cloud_source must be one of {_SOURCES}, "
                             f"got {point_cloud_source!r}")
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {REWARD_TYPES}, got {reward_type!r}")
        if agent_pos not in ("dp3", "hand_gripper"):
            raise ValueError(f"agent_pos must be 'dp3' or 'hand_gripper', got {agent_pos!r}")
        if use_rgb_points and point_cloud_source != "camera":
            raise ValueError("use_rgb_points needs point_cloud_source='camera'")
        if num_points < 1 or max_episode_steps < 1:
            raise ValueError("num_points and max_episode_steps must be >= 1")
        self.num_points, self.point_cloud_source = int(num_points), point_cloud_source
        self.camera_size = int(camera_size)
        self.use_rgb_points, self.use_image = use_rgb_points, use_image
        self.agent_pos_type, self.reward_type = agent_pos, reward_type
        self.privileged_state = bool(privileged_state)
        self.terminate_on_success = terminate_on_success
        self.max_episode_steps = int(max_episode_steps)
        self.workspace_bounds = np.asarray(workspace_bounds, dtype=np.float64)

        self._mujoco, all_envs = _import_sim()
        mw = all_envs[self.task]()
        mw._partially_observable = False  # goal in the 39-d state (scripted experts need it)
        mw.__dict__.pop("sawyer_observation_space", None)  # cached_property: recompute with goal
        mw._freeze_rand_vec = False
        mw.seeded_rand_vec = True  # layouts from mw.np_random -> reproducible with mw.seed()
        mw._set_task_called = True
        mw.max_path_length = self.max_episode_steps  # MetaWorld raises past its own limit
        self._mw, self.model, self.data = mw, mw.model, mw.data
        self.model.vis.quality.offsamples = 0  # no MSAA: faster, and no blended depth at edges
        self.camera_id = self._camera_id(camera)
        self._set_camera_pos(camera_pos)

        self._geometry = None
        if point_cloud_source == "geometry":
            from maniflow_rl.envs.metaworld.geometry import SceneSurfaceSampler

            self._geometry = SceneSurfaceSampler(self.model, self.data, geometry_points,
                                                 self.workspace_bounds)
        self._renderers: dict[tuple[int, int], Any] = {}
        self._policy = None
        self._raw_obs = np.zeros(39)
        self._elapsed = 0
        self._potential = 0.0
        self._pending_seed = seed

        pc_dim, agent_dim = (6 if use_rgb_points else 3), (9 if agent_pos == "dp3" else 4)
        size = self.camera_size
        spaces = {
            "point_cloud": gym.spaces.Box(-np.inf, np.inf, (self.num_points, pc_dim), np.float32),
            "agent_pos": gym.spaces.Box(-np.inf, np.inf, (agent_dim,), np.float32),
        }
        if use_image:
            spaces["image"] = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
        if self.privileged_state:
            spaces[PRIVILEGED_KEY] = gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is None and self._pending_seed is not None:
            seed, self._pending_seed = self._pending_seed, None
        super().reset(seed=seed)
        if seed is not None:
            self._mw.seed(int(seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw, _ = self._mw.reset()
        mj = self._mujoco
        mj.mj_kinematics(self.model, self.data)  # refresh geom/site/camera poses for the cloud
        mj.mj_camlight(self.model, self.data)
        if self._geometry is not None:
            self._geometry.cache_static(self.data, self.workspace_bounds)
        self._raw_obs, self._elapsed = np.asarray(raw, dtype=np.float64), 0
        self._potential = float(self._mw.compute_reward(np.zeros(4), self._raw_obs)[0]) / 10.0
        return self._observe(), {"success": False, "seed": seed}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw, dense, _, _, info = self._mw.step(action)
        self._raw_obs = np.asarray(raw, dtype=np.float64)
        self._elapsed += 1
        success = bool(info.get("success", 0.0))
        terminated = success and self.terminate_on_success
        truncated = self._elapsed >= self.max_episode_steps and not terminated
        potential, self._potential = self._potential, float(dense) / 10.0
        reward = {"sparse": float(success), "dense": float(dense),
                  "shaped": float(success) + self._potential - potential}[self.reward_type]
        info = dict(info, success=success, dense_reward=float(dense))
        return self._observe(), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        return self.render_rgb()

    def close(self) -> None:
        renderers, self._renderers = getattr(self, "_renderers", {}), {}
        for renderer in renderers.values():
            renderer.close()

    # ------------------------------------------------------------------ extras
    @property
    def potential(self) -> float:
        """``Phi`` of the current state: MetaWorld's dense reward / 10 (the ``shaped`` reward's
        potential; at reset computed with a zero action)."""
        return self._potential

    @property
    def raw_obs(self) -> np.ndarray:
        """MetaWorld's 39-d state of the current step (goal observable)."""
        return self._raw_obs.copy()

    @property
    def elapsed_steps(self) -> int:
        return self._elapsed

    @property
    def shape_meta(self) -> dict[str, Any]:
        """``{'obs': {key: {'shape', 'type'}}, 'action': {'shape': [4]}}`` for the policy."""
        types = {"point_cloud": "point_cloud", "agent_pos": "low_dim", "image": "rgb",
                 PRIVILEGED_KEY: "low_dim"}
        obs = {key: {"shape": list(space.shape), "type": types[key]}
               for key, space in self.observation_space.spaces.items() if key in types}
        return {"obs": obs, "action": {"shape": [4]}}

    def expert_action(self) -> np.ndarray:
        """Action of MetaWorld's scripted policy (``metaworld.policies``) for the current state."""
        if self._policy is None:
            from metaworld.policies import ENV_POLICY_MAP

            self._policy = ENV_POLICY_MAP[self.task]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            action = self._policy.get_action(self._raw_obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def render_rgb(self, width: int = 256, height: int = 256,
                   camera: str | int | None = None) -> np.ndarray:
        """Upright ``[height, width, 3]`` uint8 frame for videos (no shadows/reflections/MSAA)."""
        cam = self.camera_id if camera is None else self._camera_id(camera)
        return self._upright(self._render(cam, height, width, depth=False), cam)

    def point_cloud(self) -> np.ndarray:
        """The current cloud ``[N, 3|6]`` float32 (the ``point_cloud`` observation)."""
        if self._geometry is not None:
            points = self._geometry.cropped_points(self.data, self.workspace_bounds)
        else:
            points = self.camera_points(with_rgb=self.use_rgb_points, crop=True)
        return farthest_point_sample(points, self.num_points).astype(np.float32)

    def camera_points(self, with_rgb: bool = False, crop: bool = False) -> np.ndarray:
        """World-frame camera points ``[M, 3|6]``: all pixels but the background, or (``crop``)
        those inside ``workspace_bounds``."""
        cam, size = self.camera_id, self.camera_size
        depth = self._render(cam, size, size, depth=True)
        rgb = self._render(cam, size, size, depth=False) if with_rgb else None
        fovy, pos, mat = self.model.cam_fovy[cam], self.data.cam_xpos[cam], self.data.cam_xmat[cam]
        if crop:
            return depth_to_cropped_world_points(depth, fovy, pos, mat, self.workspace_bounds, rgb)
        far = 0.99 * self.model.vis.map.zfar * self.model.stat.extent
        return depth_to_world_points(depth, fovy, pos, mat, rgb=rgb, max_depth=far)

    # ------------------------------------------------------------------ internals
    def _observe(self) -> dict[str, np.ndarray]:
        obs = {"point_cloud": self.point_cloud(), "agent_pos": self._agent_pos()}
        if self.use_image:
            cam = self.camera_id
            size = self.camera_size
            img = self._upright(self._render(cam, size, size, depth=False), cam)
            obs["image"] = np.ascontiguousarray(img.transpose(2, 0, 1))
        if self.privileged_state:
            obs[PRIVILEGED_KEY] = self._raw_obs.astype(np.float32)
        return obs

    def _agent_pos(self) -> np.ndarray:
        if self.agent_pos_type == "hand_gripper":
            return self._raw_obs[:4].astype(np.float32)
        d = self.data
        return np.concatenate([d.body("hand").xpos, d.site("rightEndEffector").xpos,
                               d.site("leftEndEffector").xpos]).astype(np.float32)

    def _camera_id(self, camera: str | int) -> int:
        mj = self._mujoco
        if isinstance(camera, (int, np.integer)):
            if not 0 <= camera < self.model.ncam:
                raise ValueError(f"camera id {camera} out of range [0, {self.model.ncam})")
            return int(camera)
        cid = mj.mj_name2id(self.model, mj.mjtObj.mjOBJ_CAMERA, camera)
        if cid < 0:
            names = [self.model.camera(i).name for i in range(self.model.ncam)]
            raise ValueError(f"unknown camera {camera!r}; this task has {names}")
        return cid

    def _set_camera_pos(self, camera_pos: str | Sequence[float] | None) -> None:
        name = self.model.camera(self.camera_id).name
        if isinstance(camera_pos, str):
            if camera_pos != "dp3":
                raise ValueError(f"camera_pos must be 'dp3', None or [x, y, z], got {camera_pos!r}")
            camera_pos = DP3_CAMERA_POS.get(name)
        if camera_pos is not None:
            self.model.cam_pos[self.camera_id] = np.asarray(camera_pos, dtype=np.float64)
        self._mujoco.mj_kinematics(self.model, self.data)
        self._mujoco.mj_camlight(self.model, self.data)

    def _renderer(self, height: int, width: int):
        key = (height, width)
        if key not in self._renderers:
            mj = self._mujoco
            try:
                from maniflow_rl.envs.metaworld.rendering import SceneRenderer

                self._renderers[key] = SceneRenderer(self.model, self._mw.model_name, height, width)
            except Exception as exc:  # GL libraries missing / no device: say how to fix it
                backend = getattr(getattr(mj, "gl_context", None), "GLContext", None)
                detail = (f"{type(exc).__name__}: {exc}; "
                          f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}, mujoco loaded the "
                          f"{getattr(backend, '__module__', 'unknown')} backend")
                raise RenderingUnavailableError(GL_HELP.format(error=detail)) from exc
        return self._renderers[key]

    def _render(self, camera_id: int, height: int, width: int, depth: bool) -> np.ndarray:
        renderer = self._renderer(height, width)
        return renderer.depth(self.data, camera_id) if depth else renderer.rgb(self.data, camera_id)

    def _upright(self, image: np.ndarray, camera_id: int) -> np.ndarray:
        up_z = self.data.cam_xmat[camera_id].reshape(3, 3)[2, 1]  # camera y axis, world z part
        return np.ascontiguousarray(image[::-1, ::-1]) if up_z < 0 else image

    def __getstate__(self) -> dict[str, Any]:
        return {"init_kwargs": self._init_kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["init_kwargs"])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
