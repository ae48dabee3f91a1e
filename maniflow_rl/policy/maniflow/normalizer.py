"""Per-key min/max ("limits") normalizer mapping every feature to [-1, 1].

For each registered key the normalizer keeps one affine map per feature of the *last* axis::

    normalize(x)   = x * scale + offset,   scale = 2 / (max - min),  offset = -(max + min) / (max - min)
    unnormalize(y) = (y - offset) / scale

so ``min -> -1`` and ``max -> +1``. A constant feature (``max - min < eps``) gets ``scale = 1``
and ``offset = -center`` and maps to 0. Point clouds ``[N, 3 | 6]`` are normalized per channel,
i.e. xyz per axis and the extra (rgb) channels each separately. Image keys are registered as
pass-through (the image encoder rescales pixels itself).

Before :meth:`fit` every map is the identity (scale 1, offset 0), so an unfitted policy runs on
raw observations. All maps live in buffers, so they are part of ``state_dict``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

ArrayLike = np.ndarray | torch.Tensor


class _Limits(nn.Module):
    """Affine map of one key (buffers ``scale``, ``offset`` [D] and a ``fitted`` flag)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("offset", torch.zeros(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))


class LimitsNormalizer(nn.Module):
    """Normalizer with a fixed set of keys: ``key_dims[key]`` is the size of the last axis."""

    def __init__(self, key_dims: Mapping[str, int], passthrough_keys: tuple[str, ...] = (),
                 eps: float = 1e-4):
        super().__init__()
        bad = [k for k in list(key_dims) + list(passthrough_keys) if "." in k or not k]
        if bad:
            raise ValueError(f"normalizer keys must be non-empty and contain no '.': {bad}")
        self.limits = nn.ModuleDict({k: _Limits(int(d)) for k, d in key_dims.items()})
        self.passthrough_keys = tuple(passthrough_keys)
        self.eps = eps

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.limits)

    @property
    def is_fitted(self) -> bool:
        """True when every registered (non pass-through) key has been fitted."""
        return all(bool(lim.fitted) for lim in self.limits.values())

    @torch.no_grad()
    def fit(self, data: Mapping[str, ArrayLike]) -> "LimitsNormalizer":
        """Fit min/max of each key in ``data`` (arrays ``[..., D]``, all leading axes pooled).

        Keys of ``data`` that are registered as pass-through are skipped; unknown keys raise.
        """
        unknown = [k for k in data if k not in self.limits and k not in self.passthrough_keys]
        if unknown:
            raise ValueError(f"cannot fit unknown key(s) {unknown}; "
                             f"known keys: {list(self.limits)}")
        for key, value in data.items():
            if key in self.passthrough_keys:
                continue
            limits = self.limits[key]
            x = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
            x = x.detach().to(device=limits.scale.device, dtype=torch.float64)
            dim = limits.scale.shape[0]
            if x.ndim == 0 or x.shape[-1] != dim or x.numel() == 0:
                raise ValueError(f"fit data for '{key}' must have shape [..., {dim}] and be "
                                 f"non-empty, got {tuple(x.shape)}")
            flat = x.reshape(-1, dim)
            if not torch.isfinite(flat).all():
                raise ValueError(f"fit data for '{key}' contains NaN or inf")
            scale, offset = limits_to_affine(flat.amin(0), flat.amax(0), self.eps)
            limits.scale.copy_(scale)
            limits.offset.copy_(offset)
            limits.fitted.fill_(True)
        return self

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if key in self.passthrough_keys:
            return x
        limits = self._get(key)
        return x * limits.scale.to(x.dtype) + limits.offset.to(x.dtype)

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if key in self.passthrough_keys:
            return x
        limits = self._get(key)
        return (x - limits.offset.to(x.dtype)) / limits.scale.to(x.dtype)

    def normalize_dict(self, data: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.normalize(k, v) for k, v in data.items()}

    def _get(self, key: str) -> _Limits:
        if key not in self.limits:
            raise KeyError(f"normalizer has no key '{key}'; known keys: {list(self.limits)}")
        return self.limits[key]


def limits_to_affine(lo: torch.Tensor, hi: torch.Tensor, eps: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine map ``y = x * scale + offset`` taking [lo, hi] to [-1, 1] (constant dims -> 0)."""
    span = hi - lo
    constant = span < eps
    scale = torch.where(constant, torch.ones_like(span), 2.0 / torch.where(constant, 1.0, span))
    offset = -0.5 * (hi + lo) * scale
    return scale.float(), offset.float()
