"""Networks of latent steering: the tanh-Gaussian latent actor over the initial noise and an
ensemble of LayerNorm MLP critics (RLPD / DSRL style: Linear -> LayerNorm -> activation)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from maniflow_rl.rl.dsrl.losses import tanh_gaussian_log_prob

LOG_STD_RANGE = (-5.0, 2.0)


def layernorm_mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, int(width)), nn.LayerNorm(int(width)), nn.ReLU()]
        in_dim = int(width)
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class LatentActor(nn.Module):
    """``pi(w | s)``: ``w = bound * tanh(u)``, ``u ~ N(mu(s), sigma(s)^2)`` over the flattened
    latent ``w [B, Dw]``: the frozen flow policy's initial noise ``[H * Da]``, followed by the
    residual on the executed chunk ``[Ca * Da]`` when there is one. ``noise_bound``: one bound
    for every dim, or one per dim ``[Dw]``."""

    def __init__(self, feature_dim: int, noise_dim: int, hidden_dims: Sequence[int],
                 noise_bound: float | Tensor):
        super().__init__()
        self.noise_dim = int(noise_dim)
        bound = torch.as_tensor(noise_bound, dtype=torch.float32).expand(self.noise_dim)
        self.register_buffer("noise_bound", bound.clone(), persistent=False)
        self.net = layernorm_mlp(feature_dim, hidden_dims, 2 * noise_dim)

    def distribution(self, features: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(features).chunk(2, dim=-1)
        return mean, log_std.clamp(*LOG_STD_RANGE)

    def sample(self, features: Tensor, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
        """Reparametrized ``(w [B, Dw], log pi(w | s) [B])``."""
        mean, log_std = self.distribution(features)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        u = mean + log_std.exp() * eps
        w = self.noise_bound * torch.tanh(u)
        return w, tanh_gaussian_log_prob(u, mean, log_std, self.noise_bound)

    def mean_noise(self, features: Tensor) -> Tensor:
        """Deterministic noise ``bound * tanh(mu(s))`` (evaluation)."""
        return self.noise_bound * torch.tanh(self.distribution(features)[0])


class CriticEnsemble(nn.Module):
    """``Q_e(s, x)`` for ``e < num_critics``: ``forward(features, x) -> [E, B]``."""

    def __init__(self, feature_dim: int, input_dim: int, hidden_dims: Sequence[int],
                 num_critics: int):
        super().__init__()
        self.members = nn.ModuleList(layernorm_mlp(feature_dim + input_dim, hidden_dims, 1)
                                     for _ in range(num_critics))

    def forward(self, features: Tensor, x: Tensor) -> Tensor:
        joint = torch.cat([features, x.flatten(1)], dim=-1)
        return torch.stack([member(joint).squeeze(-1) for member in self.members])
