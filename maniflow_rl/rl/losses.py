"""PPO loss functions (ALGORITHM.md section 6), CleanRL style: pure functions, formula first.

Shapes: ``B`` samples, ``Ca`` executed actions per chunk, ``Da`` action dims. Log-ratios are
aggregated at one of three levels before the ratio is formed:

- ``"chunk"``  ``sum over (Ca, Da)`` -> ``[B]``       one ratio per decision point (default)
- ``"action"`` ``sum over Da``       -> ``[B, Ca]``   one ratio per executed action
- ``"dim"``    no reduction          -> ``[B, Ca, Da]`` one ratio per element

Per-sample tensors (advantages, masks) of shape ``[B]`` broadcast over the extra dims.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOGPROB_LEVELS = ("chunk", "action", "dim")


def _check_level(level: str) -> None:
    if level not in LOGPROB_LEVELS:
        raise ValueError(f"unknown log-prob level '{level}'; valid: {', '.join(LOGPROB_LEVELS)}")


def aggregate_logprobs(logprobs: Tensor, level: str = "chunk") -> Tensor:
    """Sum ``[B, Ca, Da]`` log-probs to the given level (joint log-density of the summed dims)."""
    _check_level(level)
    if logprobs.dim() != 3:
        raise ValueError(f"logprobs must be [B, Ca, Da], got {tuple(logprobs.shape)}")
    if level == "chunk":
        return logprobs.sum(dim=(1, 2))
    if level == "action":
        return logprobs.sum(dim=2)
    return logprobs


def broadcast_to_level(x: Tensor, level: str, like: Tensor | None = None) -> Tensor:
    """View a per-sample ``[B]`` tensor so it broadcasts against the level's shape.

    ``chunk`` -> ``[B]``, ``action`` -> ``[B, 1]``, ``dim`` -> ``[B, 1, 1]``; with ``like``
    (e.g. the aggregated log-ratio) the result is expanded to ``like``'s shape.
    """
    _check_level(level)
    extra_dims = LOGPROB_LEVELS.index(level)
    x = x.reshape(x.shape[0], *([1] * extra_dims))
    return x if like is None else x.expand_as(like)


def _expand_like(x: Tensor, reference: Tensor) -> Tensor:
    """Broadcast ``[B]`` (or already-broadcastable) ``x`` to ``reference``'s shape."""
    if x.dim() < reference.dim():
        x = x.reshape(x.shape[0], *([1] * (reference.dim() - 1)))
    return x.expand_as(reference)


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """``sum(x * m) / sum(m)`` (plain mean without mask; 0 if the mask is all zero).

    A ``[B]`` mask broadcasts over the trailing dims of ``x``.
    """
    if mask is None:
        return x.mean()
    weight = _expand_like(mask.to(x.dtype), x)
    return (x * weight).sum() / weight.sum().clamp(min=1.0)


def ppo_policy_loss(logratio: Tensor, advantages: Tensor, clip_range: float,
                    dual_clip: float | None = None,
                    mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped PPO surrogate, optionally dual-clipped.

    ``r = exp(logratio)``; ``L = max(-A r, -A clip(r, 1 - eps, 1 + eps))``; with dual clip
    ``c > 1``: ``L = min(L, -A c)`` where ``A < 0`` (bounds the loss of huge ratios on negative
    advantages). Loss = masked mean of ``L``.

    ``info`` (detached scalars): ``clipfrac`` (fraction with ``|r - 1| > eps``),
    ``dual_clipfrac``, ``approx_kl = mean((r - 1) - log r)``, ``ratio_mean``, ``ratio_max``.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    advantages = _expand_like(advantages, logratio)
    ratio = torch.exp(logratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss_elements = torch.max(unclipped, clipped)
    dual_clipped = torch.zeros_like(loss_elements, dtype=torch.bool)
    if dual_clip is not None:
        bound = -advantages * dual_clip
        dual_clipped = (advantages < 0) & (loss_elements > bound)
        loss_elements = torch.where(dual_clipped, bound, loss_elements)
    loss = masked_mean(loss_elements, mask)

    with torch.no_grad():
        ratio_for_max = ratio if mask is None else torch.where(
            _expand_like(mask, ratio) > 0, ratio, torch.zeros_like(ratio))
        info = {
            "clipfrac": masked_mean(((ratio - 1.0).abs() > clip_range).float(), mask),
            "dual_clipfrac": masked_mean(dual_clipped.float(), mask),
            "approx_kl": masked_mean((ratio - 1.0) - logratio, mask),
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_max": ratio_for_max.max(),
        }
    return loss, {k: v.detach() for k, v in info.items()}


def _elementwise_value_error(error: Tensor, loss_type: str, huber_delta: float) -> Tensor:
    """``0.5 e^2`` (mse) or Huber ``0.5 e^2 if |e| <= delta else delta (|e| - delta / 2)``."""
    if loss_type == "mse":
        return 0.5 * error ** 2
    if loss_type == "huber":
        abs_error = error.abs()
        return torch.where(abs_error <= huber_delta, 0.5 * error ** 2,
                           huber_delta * (abs_error - 0.5 * huber_delta))
    raise ValueError(f"unknown value loss_type '{loss_type}'; valid: mse, huber")


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor,
               clip_range_value: float | None = None, loss_type: str = "mse",
               huber_delta: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """Critic loss ``masked_mean(l(V - G))`` with ``l`` = ``0.5 e^2`` or Huber.

    Clipped (CleanRL): ``V_clip = V_old + clip(V - V_old, -c, c)``,
    loss = ``masked_mean(max(l(V - G), l(V_clip - G)))``.
    """
    loss_elements = _elementwise_value_error(values - returns, loss_type, huber_delta)
    if clip_range_value is not None:
        values_clipped = old_values + torch.clamp(values - old_values,
                                                  -clip_range_value, clip_range_value)
        clipped_elements = _elementwise_value_error(values_clipped - returns, loss_type,
                                                    huber_delta)
        loss_elements = torch.max(loss_elements, clipped_elements)
    return masked_mean(loss_elements, mask)


def explained_variance(y_pred: Tensor, y_true: Tensor, mask: Tensor | None = None) -> float:
    """``1 - Var(y_true - y_pred) / Var(y_true)``; NaN when ``Var(y_true) == 0``.

    1 = perfect prediction, 0 = as good as predicting the mean, < 0 = worse.
    """
    y_pred, y_true = y_pred.detach().flatten().double(), y_true.detach().flatten().double()
    if mask is not None:
        keep = mask.detach().flatten() > 0
        y_pred, y_true = y_pred[keep], y_true[keep]
    var_true = torch.var(y_true, unbiased=False)
    if y_true.numel() == 0 or var_true == 0:
        return float("nan")
    return float(1.0 - torch.var(y_true - y_pred, unbiased=False) / var_true)
