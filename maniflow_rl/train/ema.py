"""Exponential moving average (EMA) of model weights.

Decay schedule (diffusion_policy's ``EMAModel``, from @crowsonkb's notes): at optimization step
``n`` (counted from 0) with ``s = max(0, n - update_after_step - 1)``::

    decay(n) = 0                                             if s == 0
             = clip(1 - (1 + s / inv_gamma) ** -power, min_value, max_value)   otherwise

so the average starts as a plain copy and its horizon grows with training (power 3/4 reaches a
decay of 0.999 after ~10k steps; ManiFlow and DP3 use power 0.75, max 0.9999). ``power=None``
gives a constant ``decay = max_value`` from the first update on.

One update: ``ema = decay * ema + (1 - decay) * param`` for trainable parameters; frozen
parameters, BatchNorm parameters and all buffers (normalizer limits, running statistics) are
copied as they are.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def ema_decay(step: int, power: float | None = 0.75, inv_gamma: float = 1.0,
              min_value: float = 0.0, max_value: float = 0.9999,
              update_after_step: int = 0) -> float:
    """Decay used by the update at optimization step ``step`` (see module docstring)."""
    if power is None:
        return float(max_value)
    s = max(0, step - update_after_step - 1)
    if s <= 0:
        return 0.0
    value = 1.0 - (1.0 + s / inv_gamma) ** -power
    return float(max(min_value, min(value, max_value)))


class EMAModel:
    """Holds ``averaged_model``, an eval-mode, no-grad deep copy of the model given at creation."""

    def __init__(self, model: nn.Module, power: float | None = 0.75, inv_gamma: float = 1.0,
                 min_value: float = 0.0, max_value: float = 0.9999, update_after_step: int = 0):
        if not 0.0 <= min_value <= max_value < 1.0:
            raise ValueError(f"need 0 <= min_value <= max_value < 1, got ({min_value}, "
                             f"{max_value})")
        self.averaged_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma = power, inv_gamma
        self.min_value, self.max_value = min_value, max_value
        self.update_after_step = update_after_step
        self.optimization_step = 0
        self.decay = 0.0

    def get_decay(self, step: int) -> float:
        return ema_decay(step, self.power, self.inv_gamma, self.min_value, self.max_value,
                         self.update_after_step)

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after optimizer.step)."""
        self.decay = self.get_decay(self.optimization_step)
        for module, ema_module in zip(model.modules(), self.averaged_model.modules()):
            copy_only = isinstance(module, nn.modules.batchnorm._BatchNorm)
            for param, ema_param in zip(module.parameters(recurse=False),
                                        ema_module.parameters(recurse=False)):
                value = param.detach().to(dtype=ema_param.dtype)
                if copy_only or not param.requires_grad:
                    ema_param.copy_(value)
                else:
                    ema_param.mul_(self.decay).add_(value, alpha=1.0 - self.decay)
            for buf, ema_buf in zip(module.buffers(recurse=False),
                                    ema_module.buffers(recurse=False)):
                ema_buf.copy_(buf)
        self.optimization_step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"averaged_model": self.averaged_model.state_dict(),
                "optimization_step": self.optimization_step, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged_model.load_state_dict(state["averaged_model"])
        self.optimization_step = int(state["optimization_step"])
        self.decay = float(state.get("decay", 0.0))
