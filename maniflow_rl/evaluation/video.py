"""Evaluation videos: mp4 through imageio-ffmpeg (gif fallback), optional point-cloud panel."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("maniflow_rl")


def to_hwc_uint8(frame: np.ndarray) -> np.ndarray:
    """An RGB frame as ``[H, W, 3]`` uint8 (accepts CHW, float in [0, 1] or [0, 255], gray)."""
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[0] in (1, 3, 4) and frame.shape[-1] not in (1, 3, 4):
        frame = np.moveaxis(frame, 0, -1)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3:
        raise ValueError(f"expected an image [H, W, C] or [C, H, W], got shape {frame.shape}")
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    frame = frame[..., :3]
    if frame.dtype != np.uint8:
        scale = 255.0 if frame.max(initial=0) <= 1.0 else 1.0
        frame = np.clip(frame * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frame)


class PointCloudPanel:
    """Renders ``[N, 3(+)]`` point clouds as a 3-D scatter image with matplotlib (Agg).

    Axis limits are fixed by the first cloud (or ``bounds``) so the view does not jump.
    """

    def __init__(self, size: int = 256, elev: float = 30.0, azim: float = -60.0,
                 bounds: np.ndarray | None = None):
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.size = size
        self.fig = Figure(figsize=(size / 100, size / 100), dpi=100)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes([0, 0, 1, 1], projection="3d")
        self.elev, self.azim = elev, azim
        self.bounds = None if bounds is None else np.asarray(bounds, dtype=float)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=float)
        if self.bounds is None:
            lo, hi = points[:, :3].min(0), points[:, :3].max(0)
            pad = 0.05 * np.maximum(hi - lo, 1e-3)
            self.bounds = np.stack([lo - pad, hi + pad])
        ax = self.ax
        ax.cla()
        colors = points[:, 3:6] / (255.0 if points[:, 3:6].max(initial=0) > 1 else 1.0) \
            if points.shape[1] >= 6 else points[:, 2]
        ax.scatter(points[:, 0], points[:, 1], points[:, 2], c=colors, s=2, cmap="viridis")
        ax.set_xlim(*self.bounds[:, 0]); ax.set_ylim(*self.bounds[:, 1])  # noqa: E702
        ax.set_zlim(*self.bounds[:, 2])
        ax.view_init(elev=self.elev, azim=self.azim)
        ax.set_axis_off()
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


def side_by_side(*frames: np.ndarray) -> np.ndarray:
    """Concatenate HWC frames horizontally, padding heights with black."""
    frames = [to_hwc_uint8(f) for f in frames]
    height = max(f.shape[0] for f in frames)
    padded = [np.pad(f, ((0, height - f.shape[0]), (0, 0), (0, 0))) for f in frames]
    return np.concatenate(padded, axis=1)


def save_video(frames: list[np.ndarray], path: str | os.PathLike, fps: int = 20) -> Path:
    """Write frames to ``path`` (.mp4 via ffmpeg; .gif if asked for or if ffmpeg fails).

    Returns the path actually written (the suffix may change to .gif on fallback).
    """
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("save_video: no frames")
    frames = [to_hwc_uint8(f) for f in frames]
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    h, w = h + h % 2, w + w % 2  # yuv420p needs even sizes
    frames = [np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1]), (0, 0))) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".gif":
        try:
            imageio.mimwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1)
            return path
        except Exception as exc:  # no ffmpeg backend, codec missing, ...
            log.warning("mp4 writing failed (%s: %s); writing a gif instead",
                        type(exc).__name__, exc)
            path = path.with_suffix(".gif")
    imageio.mimwrite(path, frames, duration=1000.0 / fps, loop=0)
    return path
