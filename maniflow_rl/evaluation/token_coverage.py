"""Does the policy's point-token set see the part of the scene that matters?

The point-cloud encoder turns ``num_point_tokens`` farthest-point-sampled points of each frame
into tokens (``obs_encoder.PointNetTokenizer``; one token per kept point), so an object the
task needs to localize precisely is perceived only through the kept points near it. For a
target position per frame (an object or site from MetaWorld's 39-d ``full_state``)::

    nearest_token  = min_k |p_k - target|      over the kept points p_k
    tokens_within  = #{k : |p_k - target| < radius}
    nearest_point / points_within: the same over the full cloud (what the camera saw)

reported as medians / means over frames, with the kept points' spacing (median distance of
each kept point to its nearest other kept point). Script: ``benchmarks/bench_point_token_coverage.py``.
"""

from __future__ import annotations

import numpy as np

# MetaWorld v3 ``full_state`` [39]: hand xyz, gripper, object 1 xyz + quat, object 2 xyz + quat
# (this frame), the same 18 for the previous frame, goal xyz.
METAWORLD_STATE_SLICES = {"hand": slice(0, 3), "object1": slice(4, 7), "object2": slice(11, 14),
                          "goal": slice(36, 39)}


def kept_point_spacing(kept: np.ndarray) -> float:
    """Median over frames and kept points of the distance to the nearest other kept point;
    ``kept [T, k, 3]``."""
    d = np.linalg.norm(kept[:, :, None, :] - kept[:, None, :, :], axis=-1)
    d[:, np.arange(kept.shape[1]), np.arange(kept.shape[1])] = np.inf
    return float(np.median(d.min(-1)))


def token_coverage(kept: np.ndarray, cloud: np.ndarray, target: np.ndarray,
                   radius: float = 0.03) -> dict[str, float]:
    """``kept [T, k, 3]`` (the points the encoder keeps), ``cloud [T, N, 3]``, ``target [T, 3]``
    -> the statistics of the module docstring (metres)."""
    if kept.ndim != 3 or cloud.ndim != 3 or target.shape != (len(kept), 3):
        raise ValueError(f"expected kept [T, k, 3], cloud [T, N, 3], target [T, 3]; got "
                         f"{kept.shape}, {cloud.shape}, {target.shape}")
    to_kept = np.linalg.norm(kept[..., :3] - target[:, None], axis=-1)
    to_cloud = np.linalg.norm(cloud[..., :3] - target[:, None], axis=-1)
    return {"nearest_token_m": float(np.median(to_kept.min(1))),
            "tokens_within": float(np.mean((to_kept < radius).sum(1))),
            "nearest_point_m": float(np.median(to_cloud.min(1))),
            "points_within": float(np.mean((to_cloud < radius).sum(1))),
            "radius_m": float(radius)}
