"""Cosine learning-rate schedule with linear warm-up (as diffusers' cosine schedule).

Multiplier of the base learning rate at optimizer step ``s`` (W = warm-up steps, T = total)::

    s < W:   s / W
    s >= W:  r + (1 - r) * 0.5 * (1 + cos(pi * min(1, (s - W) / (T - W))))

with ``r = min_lr_ratio`` (0 by default: decays to zero at step T and stays there).
"""

from __future__ import annotations

import math
from functools import partial

import torch


def cosine_warmup_factor(step: int, warmup_steps: int, total_steps: int,
                         min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at ``step`` (see module docstring)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       min_lr_ratio: float = 0.0, last_epoch: int = -1
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying :func:`cosine_warmup_factor`; call ``scheduler.step()`` per step."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got "
                         f"({warmup_steps}, {total_steps})")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    factor = partial(cosine_warmup_factor, warmup_steps=warmup_steps, total_steps=total_steps,
                     min_lr_ratio=min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=last_epoch)
