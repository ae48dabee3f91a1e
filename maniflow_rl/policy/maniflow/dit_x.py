"""DiT-X velocity network of ManiFlow (ALGORITHM.md section 2).

``v = f(x_t, t, dt | obs)`` for an action chunk ``x_t [B, H, Da]`` (normalized, H = horizon)::

    h_0 = W_in x_t + pos_emb                           action tokens [B, H, D]
    c   = emb_t(t) + emb_dt(dt)                        conditioning [B, D] (t and dt ONLY)
    per block, with (shift_i, scale_i, gate_i) = Linear_i(SiLU(c)), i = 1..3 (zero-init):
        h = h + gate_1 * SelfAttn(LN(h) * (1 + scale_1) + shift_1)
        h = h + gate_2 * CrossAttn(LN(h) * (1 + scale_2) + shift_2, context)
        h = h + gate_3 * MLP(LN(h) * (1 + scale_3) + shift_3)
    features = LN(h) * (1 + scale_f) + shift_f          (final adaLN, zero-init)
    v = W_out features                                  (zero-init)

The observation ``context [Bc, L, D]`` may have fewer rows than ``x``: when ``x`` stacks S
denoising steps per sample (``B = Bc * S``, sample-major order ``row = b * S + s``), the context
keys/values are computed once per sample and repeated S times (the observation is never
re-encoded). A sampler that runs K denoising steps on one context computes its per-block
cross-attention keys/values once (:meth:`DiTX.precompute_context`) and passes the result as
``context``: the same numbers as recomputing them at every step, without the cost (the context
has To * L tokens against the chunk's H, so its key/value projection is about half of a step's
linear-layer work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

TIME_SCALE = 1000.0  # t, dt in [0, 1] are embedded as t * TIME_SCALE (DiT convention)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``[B] -> [B, dim]``: ``[cos(t w_j), sin(t w_j)]``, ``w_j = max_period^(-j / (dim/2))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-sample ``shift, scale [B, D]``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def repeat_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Repeat each row of ``x`` ``rows // len(x)`` times (``row = b * S + s``)."""
    if x.shape[0] == rows:
        return x
    if rows % x.shape[0]:
        raise ValueError(f"batch {rows} is not a multiple of the context batch {x.shape[0]}")
    return x.repeat_interleave(rows // x.shape[0], dim=0)


class TimeEmbedder(nn.Module):
    """Scalar in [0, 1] -> sinusoidal features -> MLP -> ``[B, D]``."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t * TIME_SCALE, self.freq_dim))


@dataclass(frozen=True)
class PrecomputedContext:
    """Per-block cross-attention ``(keys, values) [Bc, heads, L, Dh]`` of one context."""

    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]


class Attention(nn.Module):
    """Multi-head attention; without ``kv`` it is self-attention."""

    def __init__(self, dim: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Attend from ``x`` to the keys/values ``kv`` of a context (:meth:`keys_values`), or
        to ``x`` itself when ``kv`` is None (self-attention)."""
        q = self._heads(self.q(x))
        k, v = kv if kv is not None else self.keys_values(x)
        k, v = repeat_rows(k, x.shape[0]), repeat_rows(v, x.shape[0])
        y = F.scaled_dot_product_attention(q, k, v,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).flatten(2))

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``source [B, L, D]`` -> keys, values ``[B, heads, L, Dh]``."""
        k, v = self.kv(source).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_head, -1)).transpose(1, 2)   # [B, heads, L, Dh]


class DiTXBlock(nn.Module):
    """adaLN-Zero self-attention -> cross-attention -> MLP (see module docstring)."""

    def __init__(self, dim: int, n_head: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=False) for _ in range(3))
        self.self_attn = Attention(dim, n_head, dropout)
        self.cross_attn = Attention(dim, n_head, dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor,
                context_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``context_kv``: this block's cross-attention keys/values of the context."""
        mods = self.modulation(cond).chunk(9, dim=-1)
        sublayers = (self.self_attn, lambda y: self.cross_attn(y, kv=context_kv), self.mlp)
        for i, sublayer in enumerate(sublayers):
            shift, scale, gate = mods[3 * i: 3 * i + 3]
            h = h + gate.unsqueeze(1) * sublayer(modulate(self.norms[i](h), shift, scale))
        return h


class DiTX(nn.Module):
    """Velocity net ``forward(x [B,H,Da], t [B], dt [B], context [Bc,L,D]) -> (v, features)``."""

    def __init__(self, action_dim: int, horizon: int, n_emb: int, n_layer: int, n_head: int,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, context_dim: int | None = None):
        super().__init__()
        self.horizon = horizon
        self.input_proj = nn.Linear(action_dim, n_emb)
        self.pos_emb = nn.Parameter(torch.randn(1, horizon, n_emb) * 0.02)
        self.t_embed = TimeEmbedder(n_emb)
        self.dt_embed = TimeEmbedder(n_emb)
        self.context_proj = (nn.Identity() if context_dim in (None, n_emb)
                             else nn.Linear(context_dim, n_emb))
        self.blocks = nn.ModuleList(DiTXBlock(n_emb, n_head, mlp_ratio, dropout)
                                    for _ in range(n_layer))
        self.final_norm = nn.LayerNorm(n_emb, elementwise_affine=False)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(n_emb, 2 * n_emb))
        self.output_proj = nn.Linear(n_emb, action_dim)
        for layer in (self.final_modulation[1], self.output_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def precompute_context(self, context: torch.Tensor) -> PrecomputedContext:
        """The cross-attention keys/values of every block for ``context [Bc, L, D]``, to pass
        as ``context`` to several :meth:`forward` calls on the same observations."""
        context = self.context_proj(context)
        return PrecomputedContext(tuple(block.cross_attn.keys_values(context)
                                        for block in self.blocks))

    def forward(self, x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor,
                context: torch.Tensor | PrecomputedContext
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return velocity ``v [B, H, Da]`` and final per-token ``features [B, H, D]``."""
        batch = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(batch)
        dt = torch.as_tensor(dt, dtype=x.dtype, device=x.device).expand(batch)
        cond = self.t_embed(t) + self.dt_embed(dt)
        if not isinstance(context, PrecomputedContext):
            context = self.precompute_context(context)
        h = self.input_proj(x) + self.pos_emb[:, : x.shape[1]]
        for block, context_kv in zip(self.blocks, context.kv):
            h = block(h, cond, context_kv)
        shift, scale = self.final_modulation(cond).chunk(2, dim=-1)
        features = modulate(self.final_norm(h), shift, scale)
        return self.output_proj(features), features
