"""Configuration of the ManiFlow point-cloud RL policy.

Time-line of one decision point (``n_obs_steps`` To=2, ``horizon`` H=16, ``n_action_steps`` Ca=8)::

    obs frames:      |o0|o1|                              <- To frames, o1 is "now"
    action horizon:  |a0|a1|a2|a3|a4|a5|a6|a7|a8|..|a15|  <- H predicted
    executed slice:     |a1 ... a8|                       <- [To-1, To-1+Ca)

so a valid config needs ``n_action_steps <= horizon - n_obs_steps + 1``.

Flow time follows ManiFlow: ``x_t = (1 - t) x0 + t x1`` with noise ``x0 ~ N(0, I)`` at t = 0 and
data ``x1`` at t = 1. ``num_inference_steps`` K gives the Euler grid ``t_k = k / K``.

Model size: the width fields ``n_emb, n_layer, n_head, mlp_ratio`` (and the encoder widths) are
``None`` by default and filled from the ``model_size`` preset by :meth:`resolved`:

- ``"cpu"``: width 128, 2 DiT-X blocks, 4 heads (1.09M parameters with the seed shape_meta):
  fast enough for CPU RL.
- ``"paper"``: width 768, 12 blocks, 8 heads (ManiFlow paper size). Each block holds
  self-attention (4 D^2), cross-attention (4 D^2), an MLP (8 D^2) and the adaLN modulation
  (9 D^2), i.e. ~25 D^2 = 14.7M parameters, so 12 blocks are ~177M; 182.4M in total with the
  encoders and heads for the seed shape_meta. Meant for a GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

NOISE_METHODS = ("flow_sde", "flow_noise")
CHAIN_LOGPROB_REDUCTIONS = ("sum", "mean")
CRITIC_MODES = ("detached", "separate")
POINT_SAMPLING_METHODS = ("fps", "stride")

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(n_emb=128, n_layer=2, n_head=4, mlp_ratio=4.0,
                pointnet_hidden_dims=(64, 128), cnn_channels=(16, 32, 64),
                value_hidden_dims=(128, 128)),
    "paper": dict(n_emb=768, n_layer=12, n_head=8, mlp_ratio=4.0,
                  pointnet_hidden_dims=(64, 128, 256), cnn_channels=(32, 64, 128, 256),
                  value_hidden_dims=(512, 512)),
}
_PRESET_FIELDS = tuple(MODEL_PRESETS["cpu"])


@dataclass
class ManiFlowPolicyConfig:
    """All hyper-parameters of :class:`ManiFlowPointcloudRLPolicy` (see module docstring)."""

    # decision-point time-line
    horizon: int = 16
    n_action_steps: int = 8
    n_obs_steps: int = 2
    # sampling / exploration noise (ALGORITHM.md section 3)
    noise_method: str = "flow_sde"
    num_inference_steps: int = 10
    noise_level: float = 0.5                     # flow_sde "a" when noise_anneal is False
    noise_anneal: bool = False
    noise_params: tuple = (0.7, 0.3, 400)        # flow_sde anneal: (start a, end a, N updates)
    sigma_min: float = 0.08                      # flow_noise std range
    sigma_max: float = 0.16
    # flow_sde: the stochastic step is drawn from the last ``sde_steps`` denoising steps only
    # (None = all K); ``noise_level_per_step`` (K values) replaces noise_level step by step
    sde_steps: int | None = None
    noise_level_per_step: tuple | None = None
    # log-prob of a chain with several stochastic steps (flow_noise): "sum" is the chain's
    # log-likelihood; "mean" divides it by the number of steps (RLinf parity, ALGORITHM.md)
    chain_logprob: str = "sum"
    # value function (ALGORITHM.md section 4)
    add_value_head: bool = True
    critic_mode: str = "detached"                # "detached" shared encoder | "separate" encoder
    value_hidden_dims: tuple | None = None
    # network size
    model_size: str = "cpu"
    n_emb: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    mlp_ratio: float | None = None
    dropout: float = 0.0
    # observation encoder
    pointnet_hidden_dims: tuple | None = None
    num_point_tokens: int = 64
    point_sampling: str = "fps"                  # "fps" (farthest point) | "stride"
    cnn_channels: tuple | None = None
    image_token_grid: int = 2                    # each image gives grid x grid tokens
    # consistency flow training (ALGORITHM.md section 2)
    flow_ratio: float = 0.75                     # share of flow-matching samples per batch
    flow_t_scale: float = 0.999                  # t ~ flow_t_scale * Beta(a, b)
    flow_beta_a: float = 1.0
    flow_beta_b: float = 1.5
    consistency_num_t: int = 10                  # t in {0, 1/n, ..., (n-1)/n}
    consistency_eps: float = 1e-3                # clamp of (1 - t) in the consistency target

    def __post_init__(self) -> None:
        for name in ("noise_params", "value_hidden_dims", "pointnet_hidden_dims",
                     "cnn_channels", "noise_level_per_step"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    def resolved(self) -> "ManiFlowPolicyConfig":
        """Copy with every ``None`` width field filled from the ``model_size`` preset."""
        if self.model_size not in MODEL_PRESETS:
            raise ValueError(f"unknown model_size {self.model_size!r}; "
                             f"expected one of {tuple(MODEL_PRESETS)}")
        preset = MODEL_PRESETS[self.model_size]
        fills = {k: preset[k] for k in _PRESET_FIELDS if getattr(self, k) is None}
        return dataclasses.replace(self, **fills) if fills else self

    def validate(self) -> None:
        """Raise ``ValueError`` with a readable message for any inconsistent setting."""
        for name in ("horizon", "n_action_steps", "n_obs_steps", "num_inference_steps",
                     "num_point_tokens", "image_token_grid", "consistency_num_t"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_action_steps > self.horizon - self.n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} does not fit the horizon: the executed "
                f"slice [n_obs_steps-1, n_obs_steps-1+n_action_steps) must lie inside "
                f"horizon={self.horizon}, i.e. n_action_steps <= horizon - n_obs_steps + 1 = "
                f"{self.horizon - self.n_obs_steps + 1}")
        _check_choice("noise_method", self.noise_method, NOISE_METHODS)
        _check_choice("critic_mode", self.critic_mode, CRITIC_MODES)
        _check_choice("model_size", self.model_size, tuple(MODEL_PRESETS))
        _check_choice("point_sampling", self.point_sampling, POINT_SAMPLING_METHODS)
        if not self.noise_level > 0:
            raise ValueError(f"noise_level must be > 0, got {self.noise_level}")
        _check_choice("chain_logprob", self.chain_logprob, CHAIN_LOGPROB_REDUCTIONS)
        if self.sde_steps is not None and not (
                isinstance(self.sde_steps, int) and 1 <= self.sde_steps <= self.num_inference_steps):
            raise ValueError(f"sde_steps must be None or an integer in [1, num_inference_steps="
                             f"{self.num_inference_steps}], got {self.sde_steps!r}")
        if self.noise_level_per_step is not None:
            levels = self.noise_level_per_step
            if len(levels) != self.num_inference_steps or not all(a > 0 for a in levels):
                raise ValueError(f"noise_level_per_step must hold num_inference_steps="
                                 f"{self.num_inference_steps} values > 0, got {levels!r}")
            if self.noise_anneal:
                raise ValueError("noise_level_per_step and noise_anneal cannot be combined")
        if len(self.noise_params) != 3:
            raise ValueError(f"noise_params must be (start, end, num_updates), "
                             f"got {self.noise_params!r}")
        start, end, num_updates = self.noise_params
        if not (start > 0 and end > 0 and num_updates > 0):
            raise ValueError(f"noise_params (start, end, num_updates) must all be > 0, "
                             f"got {self.noise_params!r}")
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got "
                             f"({self.sigma_min}, {self.sigma_max})")
        if not 0.0 <= self.flow_ratio <= 1.0:
            raise ValueError(f"flow_ratio must be in [0, 1], got {self.flow_ratio}")
        if not 0.0 < self.flow_t_scale <= 1.0:
            raise ValueError(f"flow_t_scale must be in (0, 1], got {self.flow_t_scale}")
        if not (self.flow_beta_a > 0 and self.flow_beta_b > 0):
            raise ValueError("flow_beta_a and flow_beta_b must be > 0")
        if not 0.0 < self.consistency_eps < 1.0:
            raise ValueError(f"consistency_eps must be in (0, 1), got {self.consistency_eps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        sizes = self.resolved()
        for name in ("n_emb", "n_layer", "n_head"):
            value = getattr(sizes, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if sizes.n_emb % sizes.n_head:
            raise ValueError(f"n_emb={sizes.n_emb} must be divisible by n_head={sizes.n_head}")
        if not sizes.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {sizes.mlp_ratio}")
        for name in ("pointnet_hidden_dims", "cnn_channels", "value_hidden_dims"):
            dims = getattr(sizes, name)
            if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
                raise ValueError(f"{name} must be a non-empty tuple of positive ints, "
                                 f"got {dims!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML/JSON friendly) dict; tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ManiFlowPolicyConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ManiFlowPolicyConfig field(s) {unknown}; "
                             f"known fields: {sorted(known)}")
        return cls(**data)

    def replace(self, **overrides: Any) -> "ManiFlowPolicyConfig":
        """``dataclasses.replace`` with a ``ValueError`` naming unknown fields."""
        if overrides:
            self.from_dict({**self.to_dict(), **overrides})  # validates the names
        return dataclasses.replace(self, **overrides)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")
