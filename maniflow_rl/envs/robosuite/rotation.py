"""Rotation conversions of the robosuite envs, numpy, batched over leading dims.

Conventions:
  * quaternions are ``(x, y, z, w)``, robosuite's order (``robot0_eef_quat``);
  * the 6-D rotation (Zhou et al., CVPR 2019) is the first two **rows** of the rotation matrix,
    flattened, as pytorch3d's ``matrix_to_rotation_6d`` (used by diffusion_policy's
    ``RotationTransformer``, MimicGen and equivariant diffusion), so datasets converted there read
    the same; back to a matrix by Gram-Schmidt (any 6 numbers with independent halves give a
    rotation, which is why a network can regress it);
  * axis-angle (rotation vector) ``r = theta * axis``: what robosuite's OSC controller reads as
    an absolute orientation (``Rotation.from_rotvec``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["quat_to_matrix", "matrix_to_quat", "matrix_to_rotation_6d", "rotation_6d_to_matrix",
           "matrix_to_axis_angle", "axis_angle_to_matrix"]


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """``[..., 4]`` (x, y, z, w), any norm > 0 -> ``[..., 3, 3]``."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quat(matrix: np.ndarray) -> np.ndarray:
    """``[..., 3, 3]`` rotation -> ``[..., 4]`` unit (x, y, z, w) with ``w >= 0`` (Shepperd's
    method: the largest of the four squared components is computed first)."""
    m = np.asarray(matrix, dtype=np.float64)
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = np.stack([  # 4 * q_k^2 for k = x, y, z, w
        1 + 2 * m[..., 0, 0] - trace, 1 + 2 * m[..., 1, 1] - trace,
        1 + 2 * m[..., 2, 2] - trace, 1 + trace], -1)
    k = np.argmax(candidates, axis=-1)
    big = 0.5 * np.sqrt(np.maximum(np.take_along_axis(candidates, k[..., None], -1)[..., 0],
                                   1e-300))
    off = {  # (sum, difference) pairs of off-diagonal elements
        "xy": m[..., 0, 1] + m[..., 1, 0], "xz": m[..., 0, 2] + m[..., 2, 0],
        "yz": m[..., 1, 2] + m[..., 2, 1], "wx": m[..., 2, 1] - m[..., 1, 2],
        "wy": m[..., 0, 2] - m[..., 2, 0], "wz": m[..., 1, 0] - m[..., 0, 1]}
    quats = np.stack([  # the quaternion built from each choice of the largest component
        np.stack([big, off["xy"] / (4 * big), off["xz"] / (4 * big), off["wx"] / (4 * big)], -1),
        np.stack([off["xy"] / (4 * big), big, off["yz"] / (4 * big), off["wy"] / (4 * big)], -1),
        np.stack([off["xz"] / (4 * big), off["yz"] / (4 * big), big, off["wz"] / (4 * big)], -1),
        np.stack([off["wx"] / (4 * big), off["wy"] / (4 * big), off["wz"] / (4 * big), big], -1),
    ], -2)
    q = np.take_along_axis(quats, k[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def matrix_to_rotation_6d(matrix: np.ndarray) -> np.ndarray:
    """``[..., 3, 3]`` -> ``[..., 6]``: the first two rows."""
    m = np.asarray(matrix, dtype=np.float64)
    return m[..., :2, :].reshape(*m.shape[:-2], 6)


def rotation_6d_to_matrix(d6: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """``[..., 6]`` -> ``[..., 3, 3]`` by Gram-Schmidt: ``b1 = a1 / |a1|``,
    ``b2 = (a2 - (b1 . a2) b1) / |.|``, ``b3 = b1 x b2``; rows ``(b1, b2, b3)``."""
    d6 = np.asarray(d6, dtype=np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), eps)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / np.maximum(np.linalg.norm(b2, axis=-1, keepdims=True), eps)
    return np.stack([b1, b2, np.cross(b1, b2)], -2)


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """``[..., 3]`` rotation vector -> ``[..., 3, 3]`` (Rodrigues)."""
    r = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    axis = r / np.where(theta > 1e-12, theta, 1.0)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1),
                  np.stack([-y, x, zero], -1)], -2)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """``[..., 3, 3]`` -> ``[..., 3]`` rotation vector with angle in ``[0, pi]`` (through the
    quaternion: stable near 0 and pi)."""
    q = matrix_to_quat(matrix)
    sin_half = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., 3:4])
    return q[..., :3] * np.where(sin_half > 1e-12, angle / np.maximum(sin_half, 1e-300), 2.0)
