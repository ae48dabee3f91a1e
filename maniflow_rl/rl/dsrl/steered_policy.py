"""The frozen flow policy steered by a latent actor, behind the policy interface.

``features(obs)`` are what the actor and the critics read: the frozen encoder's pooled tokens
``[B, 2D]`` and the normalized low-dim observation keys of the newest frame. The actor never
sees anything else (no privileged state).

The actor's latent ``z = [w, r]``: the initial noise ``w [H * Da]`` (``|w| <= noise_bound``)
and, when ``residual_bound > 0``, a residual ``r [Ca * Da]`` (``|r| <= residual_bound``) added
to the executed chunk in the policy's normalized action space (Policy Decorator / ResFiT
style; docs/ALGORITHM.md section 9)::

    a(s, z) = unnormalize( normalize(f(s, w)) + r )        (r = 0 without a residual)

The imitation policy is ``z = [w ~ N(0, I), 0]``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from maniflow_rl.rl.dsrl.networks import LatentActor


class LatentSteeredPolicy(nn.Module):
    """``predict_action(obs)``: the actor's noise ``w(s)`` through the frozen policy: its mean
    (``eval_noise="mean"``, deterministic) or a draw ``w ~ pi(. | s)`` (``"sample"``, seeded by
    the caller's ``generator`` / torch RNG, like the imitation policy's ``N(0, I)`` draws)."""

    def __init__(self, policy: nn.Module, hidden_dims: tuple = (256, 256, 256),
                 noise_bound: float = 1.5, eval_noise: str = "mean",
                 residual_bound: float = 0.0):
        super().__init__()
        if eval_noise not in ("mean", "sample"):
            raise ValueError(f"eval_noise must be 'mean' or 'sample', got {eval_noise!r}")
        self.eval_noise = eval_noise
        self.policy = policy
        self.shape_meta = policy.shape_meta
        self.horizon, self.action_dim = policy.horizon, policy.action_dim
        self.n_obs_steps, self.n_action_steps = policy.n_obs_steps, policy.n_action_steps
        self.low_dim_keys = [k for k, spec in policy.shape_meta["obs"].items()
                             if spec.get("type", "low_dim") == "low_dim"]
        self.noise_bound, self.residual_bound = float(noise_bound), float(residual_bound)
        bounds = torch.cat([torch.full((self.noise_dim,), self.noise_bound),
                            torch.full((self.residual_dim,), self.residual_bound)])
        self.actor = LatentActor(self.feature_dim, self.latent_dim, hidden_dims, bounds)

    @property
    def feature_dim(self) -> int:
        low_dim = sum(math.prod(self.shape_meta["obs"][k]["shape"]) for k in self.low_dim_keys)
        return self.policy.obs_encoder.pooled_dim + low_dim

    @property
    def noise_dim(self) -> int:
        return self.horizon * self.action_dim

    @property
    def residual_dim(self) -> int:
        return self.n_action_steps * self.action_dim if self.residual_bound > 0 else 0

    @property
    def latent_dim(self) -> int:
        return self.noise_dim + self.residual_dim

    def prior_latent(self, count: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """``[count, Dz]`` latents of the imitation policy: ``w ~ N(0, I)`` clipped to the
        noise bound, no residual."""
        latent = torch.zeros(count, self.latent_dim, device=device)
        latent[:, :self.noise_dim] = torch.randn(count, self.noise_dim, generator=generator,
                                                 device=device).clamp(-self.noise_bound,
                                                                      self.noise_bound)
        return latent

    @torch.no_grad()
    def features(self, obs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context [B, To*L, D], features [B, F])`` of raw observations ``[B, To, ...]``."""
        obs_n = self.policy.normalize_obs(obs)
        context, pooled = self.policy.obs_encoder(obs_n)
        low = [obs_n[k][:, -1].flatten(1) for k in self.low_dim_keys]
        return context, torch.cat([pooled, *low], dim=-1)

    @torch.no_grad()
    def chunks(self, context: torch.Tensor, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """``policy.actions_from_noise``'s outputs for flat latents ``[B, Dz]``, the residual
        (if any) added to the executed chunk (module docstring)."""
        noise = latent[:, :self.noise_dim].reshape(-1, self.horizon, self.action_dim)
        out = self.policy.actions_from_noise(context, noise)
        if not self.residual_dim:
            return out
        normalizer = self.policy.normalizer
        residual = latent[:, self.noise_dim:].reshape(-1, self.n_action_steps, self.action_dim)
        action = normalizer.unnormalize("action",
                                        normalizer.normalize("action", out["action"]) + residual)
        action_pred = out["action_pred"].clone()
        action_pred[:, self.policy.executed_slice] = action
        return {"action": action, "action_pred": action_pred}

    def actions(self, context: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Unnormalized executed chunk ``[B, Ca, Da]`` for flat latents ``[B, Dz]``."""
        return self.chunks(context, latent)["action"]

    @torch.no_grad()
    def predict_action(self, obs: Mapping[str, Any], generator: torch.Generator | None = None,
                       deterministic: bool | None = None) -> dict[str, torch.Tensor]:
        """``w = noise_bound * tanh(mu(s))`` (deterministic; the default unless
        ``eval_noise="sample"``) or ``w ~ pi(. | s)``; a residual always at its mean
        ``residual_bound * tanh(mu_r(s))``; ``policy.predict_action``'s outputs."""
        context, features = self.features(obs)
        if deterministic is None:
            deterministic = self.eval_noise == "mean"
        latent = self.actor.mean_noise(features)
        if not deterministic:   # a drawn noise; the residual (a correction) at its mean
            latent[:, :self.noise_dim] = self.actor.sample(features, generator)[0][
                :, :self.noise_dim]
        return self.chunks(context, latent)

    def normalized_chunk(self, actions: torch.Tensor) -> torch.Tensor:
        """Executed chunk ``[B, Ca, Da]`` in the policy's normalized action space, flattened."""
        return self.policy.normalizer.normalize("action", actions).flatten(1)


def steered_policy_from_checkpoint(payload: Mapping[str, Any]) -> LatentSteeredPolicy:
    """Rebuild the frozen policy and the latent actor stored in a DSRL checkpoint payload."""
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
    from maniflow_rl.rl.dsrl.config import DSRLConfig

    policy = ManiFlowPointcloudRLPolicy.from_config(payload["shape_meta"],
                                                    payload["policy_config"])
    policy.load_state_dict(payload["policy_state_dict"])
    config = DSRLConfig(**payload["dsrl_config"])
    steered = LatentSteeredPolicy(policy, config.hidden_dims, config.noise_bound,
                                  config.eval_noise, config.residual_bound)
    steered.actor.load_state_dict(payload["modules"]["actor"])
    return steered.eval()
