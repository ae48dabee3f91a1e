"""Pure point-cloud functions: depth back-projection, workspace crop, farthest point sampling.

Conventions (MuJoCo cameras):
  * a camera looks along its local -z axis, local +x points right and +y up in the image;
    ``cam_mat`` (``data.cam_xmat`` reshaped to 3x3) holds these axes as columns in world frame;
  * ``fovy`` is the vertical field of view in degrees; pixels are square, so the focal length in
    pixels is ``f = (H / 2) / tan(fovy / 2)`` for both axes and the principal point is the image
    centre;
  * ``mujoco.Renderer`` (mujoco >= 3) returns depth already linearised to metres, measured along
    the optical axis (eye-space z, not ray length), with row 0 at the top of the image.
    ``tests/envs/test_metaworld_point_cloud.py`` checks this against the scene geometry.

No function here loops over points in Python.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

__all__ = [
    "camera_intrinsics",
    "depth_to_camera_points",
    "depth_to_world_points",
    "depth_to_cropped_world_points",
    "crop_to_workspace",
    "farthest_point_sample",
]


def camera_intrinsics(fovy: float, height: int, width: int) -> np.ndarray:
    """3x3 pinhole intrinsics ``K`` of a MuJoCo camera rendered at ``height x width`` pixels."""
    f = 0.5 * height / np.tan(np.deg2rad(fovy) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


@functools.lru_cache(maxsize=16)
def _pixel_rays(fovy: float, height: int, width: int) -> np.ndarray:
    """Camera-frame rays ``[H*W, 3]`` (float32) with unit depth: ``point = depth * ray``."""
    k = camera_intrinsics(fovy, height, width)
    # Pixel centres: column j -> u = j + 0.5, row i -> v = i + 0.5 (row 0 is the image top).
    u = (np.arange(width) + 0.5 - k[0, 2]) / k[0, 0]
    v = (np.arange(height) + 0.5 - k[1, 2]) / k[1, 1]
    rays = np.empty((height, width, 3))
    rays[..., 0] = u[None, :]
    rays[..., 1] = -v[:, None]  # image rows grow downwards, camera y grows upwards
    rays[..., 2] = -1.0  # the camera looks along -z
    rays = rays.reshape(-1, 3).astype(np.float32)
    rays.flags.writeable = False
    return rays


def depth_to_camera_points(depth: np.ndarray, fovy: float) -> np.ndarray:
    """Back-project a depth image ``[H, W]`` (metres along the optical axis) to camera-frame
    points ``[H*W, 3]`` in MuJoCo's camera convention (x right, y up, looking along -z)."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    rays = _pixel_rays(float(fovy), *depth.shape)
    return depth.reshape(-1, 1).astype(np.float32) * rays


def depth_to_world_points(
    depth: np.ndarray,
    fovy: float,
    cam_pos: Sequence[float] | np.ndarray,
    cam_mat: np.ndarray,
    rgb: np.ndarray | None = None,
    max_depth: float | None = None,
) -> np.ndarray:
    """Back-project a MuJoCo depth image into world-frame points.

    Args:
        depth: ``[H, W]`` depth in metres along the optical axis (``mujoco.Renderer`` output).
        fovy: vertical field of view in degrees (``model.cam_fovy[cam_id]``).
        cam_pos: camera position in world frame (``data.cam_xpos[cam_id]``).
        cam_mat: camera orientation, 3x3 or flat 9 (``data.cam_xmat[cam_id]``); columns are the
            camera's x/y/z axes in world frame.
        rgb: optional ``[H, W, 3]`` uint8 image of the same camera; colours are appended as
            float in ``[0, 1]`` giving ``[M, 6]`` points.
        max_depth: drop pixels at or beyond this depth (background / far plane); None keeps all.

    Returns:
        ``[M, 3]`` (or ``[M, 6]``) float32 points, ``M = H*W`` minus dropped pixels.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    rays = _pixel_rays(float(fovy), *depth.shape)
    flat = depth.reshape(-1).astype(np.float32)
    keep = None if max_depth is None else np.flatnonzero(flat < max_depth)
    if keep is not None:
        flat, rays = flat[keep], rays[keep]
    rot = np.asarray(cam_mat, dtype=np.float32).reshape(3, 3)
    points = (rays @ rot.T) * flat[:, None] + np.asarray(cam_pos, dtype=np.float32)
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"rgb shape {rgb.shape} does not match depth shape {depth.shape}")
        colors = rgb.reshape(-1, 3)
        colors = colors if keep is None else colors[keep]
        points = np.concatenate([points, colors.astype(np.float32) / 255.0], axis=1)
    return points


@functools.lru_cache(maxsize=16)
def _ray_depth_limits(fovy: float, height: int, width: int, cam_pos: bytes, cam_mat: bytes,
                      bounds: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-frame depth-1 rays ``[H*W, 3]`` and, per pixel, the depth interval
    ``[d_lo, d_hi]`` in which its point lies inside the box (empty if d_lo > d_hi)."""
    pos = np.frombuffer(cam_pos)
    rot = np.frombuffer(cam_mat).reshape(3, 3)
    lo, hi = np.frombuffer(bounds).reshape(2, 3)
    rays = _pixel_rays(fovy, height, width).astype(np.float64) @ rot.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lo, t_hi = (lo - pos) / rays, (hi - pos) / rays  # where each slab is crossed
    inside = (lo <= pos) & (pos <= hi)  # for rays parallel to a slab
    parallel = rays == 0
    t_min = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(t_lo, t_hi))
    t_max = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(t_lo, t_hi))
    out = (rays.astype(np.float32), t_min.max(axis=1).astype(np.float32),
           t_max.min(axis=1).astype(np.float32))
    for arr in out:
        arr.flags.writeable = False
    return out


def depth_to_cropped_world_points(
    depth: np.ndarray,
    fovy: float,
    cam_pos: Sequence[float] | np.ndarray,
    cam_mat: np.ndarray,
    bounds: Sequence[Sequence[float]] | np.ndarray,
    rgb: np.ndarray | None = None,
) -> np.ndarray:
    """``crop_to_workspace(depth_to_world_points(depth, ...), bounds)`` in one cheaper pass.

    A box crop is, along each pixel's ray, an interval of depth; the intervals are cached per
    camera pose and box, so a frame costs two comparisons per pixel and only the kept pixels are
    back-projected. Points within float32 rounding (~1e-7 m) of a box face may be decided
    differently from ``crop_to_workspace``.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    pos = np.ascontiguousarray(cam_pos, dtype=np.float64).reshape(3)
    rot = np.ascontiguousarray(cam_mat, dtype=np.float64).reshape(9)
    box = np.ascontiguousarray(bounds, dtype=np.float64)
    if box.shape != (2, 3):
        raise ValueError("bounds must be [[xmin, ymin, zmin], [xmax, ymax, zmax]], "
                         f"got shape {box.shape}")
    rays, d_lo, d_hi = _ray_depth_limits(float(fovy), *depth.shape, pos.tobytes(), rot.tobytes(),
                                         box.tobytes())
    flat = depth.reshape(-1)
    keep = np.flatnonzero((flat >= d_lo) & (flat <= d_hi))
    points = rays[keep] * flat[keep, None].astype(np.float32) + pos.astype(np.float32)
    if rgb is not None:
        colors = np.asarray(rgb).reshape(-1, 3)[keep].astype(np.float32) / 255.0
        points = np.concatenate([points, colors], axis=1)
    return points


def crop_to_workspace(points: np.ndarray,
                      bounds: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Keep points whose xyz lie inside the axis-aligned box ``bounds = [[xmin, ymin, zmin],
    [xmax, ymax, zmax]]`` (inclusive). Extra columns (e.g. rgb) are carried along."""
    lo, hi = np.asarray(bounds, dtype=np.float64)
    if lo.shape != (3,):
        raise ValueError("bounds must be [[xmin, ymin, zmin], [xmax, ymax, zmax]], "
                         f"got shape {np.shape(bounds)}")
    mask = points[:, 0] >= lo[0]  # column-wise tests: ~4x faster than np.all over [M, 3]
    for axis in range(3):
        if axis:
            mask &= points[:, axis] >= lo[axis]
        mask &= points[:, axis] <= hi[axis]
    return points[mask]


def farthest_point_sample(points: np.ndarray, n: int, start_idx: int = 0,
                          bucket_height: int = 4) -> np.ndarray:
    """Farthest point sampling of exactly ``n`` points with ``fpsample``'s bucket (QuickFPS) method.

    Distances use xyz only; extra columns are carried along. With fewer than ``n`` input points
    all points are kept and rows are repeated (cyclically) up to ``n``; an empty input gives
    ``n`` zero rows. ``start_idx`` fixes the first sample so the result is deterministic.
    """
    points = np.asarray(points)
    m = points.shape[0]
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if m == 0:
        return np.zeros((n, points.shape[1] if points.ndim == 2 else 3), dtype=np.float32)
    if m <= n:
        return points[np.arange(n) % m]
    import fpsample  # local import: only the env step needs it

    xyz = np.ascontiguousarray(points[:, :3], dtype=np.float32)
    idx = fpsample.bucket_fps_kdline_sampling(xyz, n, h=bucket_height, start_idx=start_idx % m)
    return points[np.asarray(idx, dtype=np.int64)]
