"""Offscreen MuJoCo rendering with one GL + MjrContext per process and model file.

``mujoco.Renderer`` gives every env its own GL context and ``MjrContext``; building one uploads
all meshes and textures (~0.8 s and ~150 MB of RAM for a MetaWorld scene with Mesa). Envs of
the same task in one process load the same XML, so ``SceneRenderer`` shares that context
(keyed by the model file) and keeps only a cheap ``MjvScene`` per env. Depth handling mirrors
``mujoco.Renderer`` (reversed-z read, linearized to metres along the optical axis, rows flipped
so row 0 is the image top).
"""

from __future__ import annotations

import atexit

import mujoco
import numpy as np

__all__ = ["SceneRenderer", "free_shared_contexts"]

_SHARED: dict[tuple, "_SharedContext"] = {}


class _SharedContext:
    def __init__(self, model: mujoco.MjModel) -> None:
        width, height = model.vis.global_.offwidth, model.vis.global_.offheight
        self.gl = mujoco.gl_context.GLContext(width, height)
        self.gl.make_current()
        self.mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self.mjr)
        self.mjr.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR

    def free(self) -> None:
        if self.mjr is not None:
            try:
                self.gl.make_current()
                self.mjr.free()
                self.gl.free()
            except Exception:  # display already gone (interpreter exit): nothing left to free
                pass
            self.mjr = None


def free_shared_contexts() -> None:
    """Free every shared GL context of this process (also run at interpreter exit)."""
    while _SHARED:
        _SHARED.popitem()[1].free()


def _shared_context(model: mujoco.MjModel, key: str, height: int, width: int) -> _SharedContext:
    vis = model.vis.global_
    vis.offwidth, vis.offheight = max(vis.offwidth, width), max(vis.offheight, height)
    full_key = (key, vis.offwidth, vis.offheight, model.vis.quality.offsamples)
    if full_key not in _SHARED:
        first = not _SHARED
        _SHARED[full_key] = _SharedContext(model)
        if first:  # registered after the EGL display's own atexit hook, so it runs before it
            atexit.register(free_shared_contexts)
    return _SHARED[full_key]


class SceneRenderer:
    """Renders one env's ``(model, data)`` at ``height x width`` through a shared context.

    Args:
        model: the env's model (its meshes/textures must equal those of every model sharing
            ``model_key``, i.e. the same XML file).
        model_key: identifies the model file (e.g. its path).
        fast: turn off shadows, reflections and the skybox for colour renders.
    """

    def __init__(self, model: mujoco.MjModel, model_key: str, height: int, width: int,
                 fast: bool = True, max_geom: int = 10000) -> None:
        self.model, self.height, self.width = model, int(height), int(width)
        self._ctx = _shared_context(model, model_key, self.height, self.width)
        self._scene = mujoco.MjvScene(model, maxgeom=max_geom)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        if fast:
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                self._scene.flags[flag] = False

    def _draw(self, data: mujoco.MjData, camera_id: int) -> None:
        self._camera.fixedcamid = int(camera_id)
        mujoco.mjv_updateScene(self.model, data, self._option, None, self._camera,
                               mujoco.mjtCatBit.mjCAT_ALL.value, self._scene)
        self._ctx.gl.make_current()
        mujoco.mjr_render(self._rect, self._scene, self._ctx.mjr)

    def rgb(self, data: mujoco.MjData, camera_id: int) -> np.ndarray:
        """``[H, W, 3]`` uint8, row 0 at the top of the image."""
        self._draw(data, camera_id)
        out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(out, None, self._rect, self._ctx.mjr)
        return out[::-1]

    def depth(self, data: mujoco.MjData, camera_id: int) -> np.ndarray:
        """``[H, W]`` float32 metres along the optical axis, row 0 at the top of the image."""
        flags = self._scene.flags
        saved = flags.copy()
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = True  # flat colours: skip lighting work
        flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = True
        try:
            self._draw(data, camera_id)
        finally:
            np.copyto(flags, saved)
        raw = np.empty((self.height, self.width), dtype=np.float32)
        mujoco.mjr_readPixels(None, raw, self._rect, self._ctx.mjr)
        return self._linear_depth(raw)

    def rgbd(self, data: mujoco.MjData, camera_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb [H, W, 3] uint8, depth [H, W] float32)`` of one render (half the cost of
        ``rgb`` + ``depth``, which draws twice)."""
        self._draw(data, camera_id)
        rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        raw = np.empty((self.height, self.width), dtype=np.float32)
        mujoco.mjr_readPixels(rgb, raw, self._rect, self._ctx.mjr)
        return rgb[::-1], self._linear_depth(raw)

    def _linear_depth(self, raw: np.ndarray) -> np.ndarray:
        """Reversed-z depth buffer (bottom row first) -> metres, row 0 at the image top."""
        # reversed-z depth buffer -> eye-space distance (same arithmetic as mujoco.Renderer)
        extent = self.model.stat.extent
        near = np.float32(self.model.vis.map.znear * extent)
        far = np.float32(self.model.vis.map.zfar * extent)
        c_coef = np.float32(-0.5) * (-(far + near) / (far - near)) - np.float32(0.5)
        d_coef = np.float32(-0.5) * (-(np.float32(2) * far * near) / (far - near))
        return (d_coef / (raw[::-1].astype(np.float64) + c_coef)).astype(np.float32)

    def close(self) -> None:
        """Per-env state only; the shared context lives until ``free_shared_contexts``."""
        self._scene = None
