"""Metric logging: console, TensorBoard, and (optionally) Weights & Biases.

``MetricLogger.log(metrics, step)`` writes scalars to TensorBoard every call and to wandb when a
project is configured. wandb runs offline unless ``WANDB_MODE`` says otherwise or an API key is
configured, so a machine without network never blocks on it.

A resumed run opens its logger with ``purge_step = checkpoint step + 1``: TensorBoard then
discards the events an earlier process wrote at steps >= ``purge_step`` (the iterations after
the checkpoint, which the resumed run does again), so no step is shown twice.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

logger = logging.getLogger("maniflow_rl")


class MetricLogger:
    def __init__(self, log_dir: str | os.PathLike | None, wandb_project: str | None = None,
                 wandb_run_name: str | None = None, config: Mapping[str, Any] | None = None,
                 purge_step: int | None = None):
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._tb = None
        self._wandb = None
        if self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        if wandb_project:
            self._wandb = _init_wandb(wandb_project, wandb_run_name, config, self.log_dir)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        scalars = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def console(self, metrics: Mapping[str, float], step: int, keys: tuple[str, ...]) -> str:
        parts = [f"step {step}"]
        for key in keys:
            if key in metrics and _is_number(metrics[key]):
                name = key if key.startswith("eval/") else key.split("/")[-1]
                parts.append(f"{name}={float(metrics[key]):.4g}")
        line = " | ".join(parts)
        logger.info(line)
        return line

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _init_wandb(project: str, run_name: str | None, config: Mapping[str, Any] | None,
                log_dir: Path | None):
    try:
        import wandb
    except ImportError:
        logger.warning("wandb_project=%r is set but wandb is not installed "
                       "(pip install 'maniflow-rl[wandb]'); logging to TensorBoard only", project)
        return None
    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return wandb.init(project=project, name=run_name, config=dict(config or {}), mode=mode,
                      dir=str(log_dir) if log_dir else None)
