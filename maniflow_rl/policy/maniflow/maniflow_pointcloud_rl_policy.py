"""ManiFlow point-cloud policy with RL support (ALGORITHM.md sections 2-4).

Time-line of one decision point (To = n_obs_steps, H = horizon, Ca = n_action_steps)::

    obs frames:      |o0|o1|                              <- obs tensors [B, To, *shape]
    action horizon:  |a0|a1|a2|a3|a4|a5|a6|a7|a8|..|a15|  <- x [B, H, Da] (normalized)
    executed slice:     |a1 ... a8|                       <- [To-1, To-1+Ca): actions, logprobs

Denoising chain (t = 1 is data): ``x_0 ~ N(0, I)``, ``x_{k+1} = step(x_k, t_k = k/K)``, K =
``num_inference_steps``, recorded as ``chains [B, K+1, H, Da]``. A step is either the Euler step
``x_k + dt v`` or a Gaussian draw ``N(mu_k, std_k^2)`` (``stochastic_sampling``):

- ``flow_sde``: in training rollouts exactly one step per sample (drawn independently per sample)
  is stochastic; ``denoise_inds [B, K]`` repeats that step index K times.
- ``flow_noise``: every step is stochastic (learned std); ``denoise_inds = 0..K-1``.
- evaluation: no step is stochastic; ``denoise_inds = -1``, log-probs 0.

``logprobs [B, Ca, Da]`` = per-element ``log N(x_{k+1}; mu_k, std_k^2)`` on the executed slice,
summed over the stochastic ("evaluated") steps: the chain's log-likelihood (``chain_logprob=
"mean"`` divides by the number of steps instead, as RLinf does). flow_sde's stochastic step is
drawn uniformly from the last ``sde_steps`` denoising steps (default: all K). ``default_forward`` re-evaluates exactly those
steps from the recorded chain (encoder once, velocity net batched over steps) and, with unchanged
weights, reproduces the rollout log-probs.

The value ``V(s)`` comes from the pooled observation features only (never from ``x_t`` or ``t``):
detached from the shared encoder (``critic_mode="detached"``) or from a separate encoder.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .configuration import ManiFlowPolicyConfig
from .consistency_flow import (consistency_flow_loss, num_flow_samples,
                               sampler_grid_consistency_loss)
from .dit_x import DiTX
from .normalizer import LimitsNormalizer
from .obs_encoder import (ObservationEncoder, check_float_image_range, mlp, obs_type,
                          validate_shape_meta)
from .stochastic_sampling import (euler_step, flow_noise_std, flow_sde_transition,
                                  gaussian_entropy, gaussian_log_prob)

SAMPLE_MODES = ("train", "eval")


class ManiFlowPointcloudRLPolicy(nn.Module):
    """ManiFlow (DiT-X + consistency flow) policy exposing the RL policy interface."""

    def __init__(self, shape_meta: Mapping[str, Any],
                 config: ManiFlowPolicyConfig | None = None, **overrides: Any):
        super().__init__()
        validate_shape_meta(shape_meta)
        if "action" in shape_meta["obs"]:
            raise ValueError("an observation key may not be called 'action'")
        config = (config or ManiFlowPolicyConfig()).replace(**overrides).resolved()
        self.shape_meta = copy.deepcopy(dict(shape_meta))
        self.config = config
        self.horizon = config.horizon
        self.n_obs_steps = config.n_obs_steps
        self.n_action_steps = config.n_action_steps
        self.num_inference_steps = config.num_inference_steps
        self.noise_method = config.noise_method
        self.action_dim = int(shape_meta["action"]["shape"][0])
        obs_meta = self.shape_meta["obs"]
        self.obs_shapes = {k: tuple(spec["shape"]) for k, spec in obs_meta.items()}
        self.rgb_keys = tuple(k for k, spec in obs_meta.items() if obs_type(spec) == "rgb")

        self.normalizer = LimitsNormalizer(
            {"action": self.action_dim, **{k: s[-1] for k, s in self.obs_shapes.items()
                                           if k not in self.rgb_keys}},
            passthrough_keys=self.rgb_keys)
        self.obs_encoder = self._build_encoder()
        self.model = DiTX(self.action_dim, config.horizon, config.n_emb, config.n_layer,
                          config.n_head, config.mlp_ratio, config.dropout,
                          context_dim=self.obs_encoder.out_dim)
        self.noise_head = None
        if self.noise_method == "flow_noise":
            self.noise_head = nn.Linear(config.n_emb, self.action_dim)
            nn.init.zeros_(self.noise_head.weight)   # std starts at sqrt(sigma_min * sigma_max)
            nn.init.zeros_(self.noise_head.bias)
        self.critic_encoder = None
        self.value_head = None
        if config.add_value_head:
            if config.critic_mode == "separate":
                self.critic_encoder = self._build_encoder()
            self.value_head = mlp([self.obs_encoder.pooled_dim, *config.value_hidden_dims, 1])
        self.register_buffer("noise_updates", torch.zeros((), dtype=torch.long))

    def _build_encoder(self) -> ObservationEncoder:
        c = self.config
        return ObservationEncoder(self.shape_meta["obs"], c.n_obs_steps, c.n_emb,
                                  c.pointnet_hidden_dims, c.num_point_tokens, c.point_sampling,
                                  c.cnn_channels, c.image_token_grid)

    # ------------------------------------------------------------------ config / bookkeeping
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def executed_slice(self) -> slice:
        """``[To - 1, To - 1 + Ca)`` of the horizon."""
        start = self.n_obs_steps - 1
        return slice(start, start + self.n_action_steps)

    def get_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_config(cls, shape_meta: Mapping[str, Any], config_dict: Mapping[str, Any]
                    ) -> "ManiFlowPointcloudRLPolicy":
        return cls(shape_meta, ManiFlowPolicyConfig.from_dict(dict(config_dict)))

    def set_noise_progress(self, num_updates: int) -> None:
        """Record how many PPO updates are done (drives ``noise_anneal``)."""
        if num_updates < 0:
            raise ValueError(f"num_updates must be >= 0, got {num_updates}")
        self.noise_updates.fill_(int(num_updates))

    def current_noise_level(self) -> float:
        """flow_sde ``a``: ``noise_level``, or with ``noise_anneal`` the linear schedule
        ``start + (end - start) * min(updates / N, 1)`` of ``noise_params = (start, end, N)``."""
        if not self.config.noise_anneal:
            return float(self.config.noise_level)
        start, end, num_updates = self.config.noise_params
        progress = min(int(self.noise_updates) / float(num_updates), 1.0)
        return float(start + (end - start) * progress)

    # ------------------------------------------------------------------ observations
    def validate_obs(self, obs: Mapping[str, Any]) -> int:
        """Check ``obs[k]`` is ``[B, To, *shape]`` for every key; return B (ValueError if not).
        A point cloud may also hold exactly ``min(num_point_tokens, N)`` points: frames already
        cut to the encoder's tokens (``data/point_token_cache.py``)."""
        if not isinstance(obs, Mapping):
            raise ValueError(f"obs must be a dict of arrays, got {type(obs).__name__}")
        missing = [k for k in self.obs_shapes if k not in obs]
        if missing:
            raise ValueError(f"obs is missing key(s) {missing}; got keys {list(obs)}")
        batch = None
        for key, shape in self.obs_shapes.items():
            got = tuple(obs[key].shape)
            presampled = min(self.config.num_point_tokens, shape[0])
            if key in self.obs_encoder.point_keys and got[2:3] == (presampled,):
                shape = (presampled, *shape[1:])  # a cloud already cut to its point tokens
            if len(got) != len(shape) + 2 or got[1:] != (self.n_obs_steps, *shape):
                raise ValueError(f"obs['{key}'] has shape {list(got)}, expected "
                                 f"[B, {self.n_obs_steps}, {', '.join(map(str, shape))}] "
                                 f"(B, n_obs_steps, *shape_meta shape)")
            if batch is not None and got[0] != batch:
                raise ValueError(f"obs['{key}'] has batch size {got[0]}, other keys {batch}")
            batch = got[0]
        return batch

    def normalize_obs(self, obs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Validate, convert (numpy -> tensor on the policy device) and normalize."""
        self.validate_obs(obs)
        out = {}
        for key in self.obs_shapes:
            x = torch.as_tensor(np.asarray(obs[key]) if not torch.is_tensor(obs[key])
                                else obs[key], device=self.device)
            if key not in self.rgb_keys or x.dtype != torch.uint8:
                x = x.float()
            if key in self.rgb_keys and x.dtype != torch.uint8:
                check_float_image_range(key, x)
            out[key] = self.normalizer.normalize(key, x)
        return out

    def encode_obs(self, obs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw obs -> ``(tokens [B, To*L, D], pooled [B, 2D])``."""
        return self.obs_encoder(self.normalize_obs(obs))

    # ------------------------------------------------------------------ transitions
    def flow_sde_noise_level(self, steps: torch.Tensor) -> torch.Tensor | float:
        """flow_sde ``a`` of denoising steps ``steps [B]``: ``noise_level_per_step[k]`` when set,
        else :meth:`current_noise_level`."""
        levels = self.config.noise_level_per_step
        if levels is None:
            return self.current_noise_level()
        table = torch.tensor(levels, dtype=torch.float32, device=steps.device)
        return table[steps.long()].view(-1, 1, 1)

    def _transition(self, x: torch.Tensor, steps: torch.Tensor, v: torch.Tensor,
                    features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the stochastic step ``x_k -> x_{k+1}`` of denoising steps ``k [B]``."""
        dt = 1.0 / self.num_inference_steps
        t = self._step_times(steps)
        if self.noise_method == "flow_sde":
            return flow_sde_transition(x, v, t, dt, self.flow_sde_noise_level(steps))
        std = flow_noise_std(self.noise_head(features).float(), self.config.sigma_min,
                             self.config.sigma_max)
        return euler_step(x, v, dt), std

    def _step_times(self, steps: torch.Tensor) -> torch.Tensor:
        """``t_k = k / K`` (one expression for rollout and re-evaluation: bitwise equal)."""
        return steps.float() / self.num_inference_steps

    def _rollout_denoise_inds(self, batch: int, mode: str,
                              generator: torch.Generator | None) -> torch.Tensor:
        k = self.num_inference_steps
        if mode == "eval":
            return torch.full((batch, k), -1, dtype=torch.long, device=self.device)
        if self.noise_method == "flow_sde":
            first = k - (self.config.sde_steps or k)
            step = torch.randint(first, k, (batch, 1), generator=generator, device=self.device)
            return step.expand(batch, k).contiguous()
        return torch.arange(k, device=self.device).expand(batch, k).contiguous()

    def _evaluated_steps(self, denoise_inds: torch.Tensor) -> torch.Tensor:
        """Stochastic steps ``[B, S]`` of recorded ``denoise_inds`` (flow_sde S=1, else K)."""
        if (denoise_inds < 0).any():
            raise ValueError("denoise_inds contain -1: eval-mode chains have no log-probs")
        if self.noise_method == "flow_sde":
            if (denoise_inds != denoise_inds[:, :1]).any():
                raise ValueError("flow_sde denoise_inds must repeat one step index per sample")
            return denoise_inds[:, :1]
        return denoise_inds

    def _denoise(self, context: torch.Tensor, mode: str, generator: torch.Generator | None,
                 x0: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the K-step chain from ``x0`` (default ``N(0, I)``); return ``chains,
        denoise_inds, logprobs [B, Ca, Da]``."""
        batch, k_steps = context.shape[0], self.num_inference_steps
        dt = 1.0 / k_steps
        denoise_inds = self._rollout_denoise_inds(batch, mode, generator)
        x = x0 if x0 is not None else torch.randn(batch, self.horizon, self.action_dim,
                                                  generator=generator, device=self.device)
        context = self.model.precompute_context(context)   # once for the K steps
        chain, logprob_sum = [x], torch.zeros_like(x[:, self.executed_slice])
        num_stochastic = torch.zeros(batch, device=self.device)
        for k in range(k_steps):
            steps = torch.full((batch,), k, device=self.device)
            v, features = _as_float32(*self.model(x, self._step_times(steps), dt, context))
            x_next = euler_step(x, v, dt)
            is_stochastic = (denoise_inds == k).any(1)
            if is_stochastic.any():
                mu, std = self._transition(x, steps, v, features)
                noise = torch.randn(x.shape, generator=generator, device=self.device)
                mask = is_stochastic.view(-1, 1, 1)
                x_next = torch.where(mask, mu + std * noise, x_next)
                logp = gaussian_log_prob(x_next, mu, std)[:, self.executed_slice]
                logprob_sum = logprob_sum + torch.where(mask, logp, 0.0)
            x = x_next
            chain.append(x)
            num_stochastic = num_stochastic + is_stochastic
        if self.config.chain_logprob == "mean":
            logprob_sum = logprob_sum / num_stochastic.clamp_min(1).view(-1, 1, 1)
        return torch.stack(chain, 1), denoise_inds, logprob_sum

    # ------------------------------------------------------------------ policy interface
    @torch.no_grad()
    def sample_actions(self, obs: Mapping[str, Any], mode: str = "train",
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Rollout sampling: actions [B,Ca,Da] (unnormalized), chains [B,K+1,H,Da],
        denoise_inds [B,K], logprobs [B,Ca,Da], values [B] (see module docstring)."""
        if mode not in SAMPLE_MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {SAMPLE_MODES}")
        obs_n = self.normalize_obs(obs)
        context, pooled = self.obs_encoder(obs_n)
        chains, denoise_inds, logprobs = self._denoise(context, mode, generator)
        action_pred = self.normalizer.unnormalize("action", chains[:, -1])
        return {"actions": action_pred[:, self.executed_slice], "chains": chains,
                "denoise_inds": denoise_inds, "logprobs": logprobs,
                "values": self._values(obs_n, pooled)}

    @torch.no_grad()
    def predict_action(self, obs: Mapping[str, Any], generator: torch.Generator | None = None
                       ) -> dict[str, torch.Tensor]:
        """Deterministic Euler integration (no injected noise) from ``x_0 ~ N(0, I)``.

        Returns ``action [B, Ca, Da]`` (executed slice) and ``action_pred [B, H, Da]``,
        unnormalized. With the same ``generator`` state it equals ``sample_actions(mode='eval')``.
        """
        context, _ = self.encode_obs(obs)
        noise = torch.randn(context.shape[0], self.horizon, self.action_dim, generator=generator,
                            device=self.device)
        return self.actions_from_noise(context, noise)

    @torch.no_grad()
    def actions_from_noise(self, context: torch.Tensor, noise: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        """Deterministic Euler chain from the given initial noise ``x_0 = noise [B, H, Da]``
        (normalized action space), conditioned on encoded ``context`` (:meth:`encode_obs`).

        The map ``noise -> action`` that latent-space steering (DSRL) acts through; with
        ``noise ~ N(0, I)`` it is :meth:`predict_action`. Returns ``action [B, Ca, Da]`` and
        ``action_pred [B, H, Da]``, unnormalized."""
        expected = (context.shape[0], self.horizon, self.action_dim)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise has shape {list(noise.shape)}, expected {list(expected)}")
        chains, _, _ = self._denoise(context, "eval", None, x0=noise.to(self.device).float())
        action_pred = self.normalizer.unnormalize("action", chains[:, -1])
        return {"action": action_pred[:, self.executed_slice], "action_pred": action_pred}

    def default_forward(self, data: Mapping[str, Any], compute_values: bool = True
                        ) -> dict[str, torch.Tensor]:
        """Re-evaluate recorded chains: logprobs [B,Ca,Da], values [B], entropy [B,1]."""
        obs_n = self.normalize_obs(data["observation"])
        chains = torch.as_tensor(data["chains"], device=self.device).float()
        denoise_inds = torch.as_tensor(data["denoise_inds"], device=self.device).long()
        batch, k_steps = chains.shape[0], self.num_inference_steps
        expected = (batch, k_steps + 1, self.horizon, self.action_dim)
        if tuple(chains.shape) != expected or tuple(denoise_inds.shape) != (batch, k_steps):
            raise ValueError(f"chains must be {list(expected)} and denoise_inds "
                             f"[{batch}, {k_steps}], got {list(chains.shape)} and "
                             f"{list(denoise_inds.shape)}")
        steps = self._evaluated_steps(denoise_inds)                          # [B, S]
        num_steps = steps.shape[1]
        context, pooled = self.obs_encoder(obs_n)
        x_k = _gather_steps(chains, steps).flatten(0, 1)                    # [B*S, H, Da]
        x_next = _gather_steps(chains, steps + 1).flatten(0, 1)
        flat_steps = steps.flatten()
        v, features = _as_float32(*self.model(x_k, self._step_times(flat_steps), 1.0 / k_steps,
                                              context))
        mu, std = self._transition(x_k, flat_steps, v, features)             # context repeated
        chunk = self.executed_slice
        logprobs = gaussian_log_prob(x_next, mu, std)[:, chunk]
        entropy = gaussian_entropy(std.expand_as(mu))[:, chunk]
        values = (self._values(obs_n, pooled) if compute_values
                  else torch.zeros(batch, device=self.device))
        per_step = logprobs.unflatten(0, (batch, num_steps))
        return {"logprobs": per_step.mean(1) if self.config.chain_logprob == "mean"
                else per_step.sum(1),
                "values": values,
                "entropy": entropy.reshape(batch, -1).mean(1, keepdim=True)}

    def get_value(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """``V(s) [B]`` from pooled observation features (independent of any chain)."""
        return self._values(self.normalize_obs(obs), None)

    def _values(self, obs_n: dict[str, torch.Tensor], actor_pooled: torch.Tensor | None
                ) -> torch.Tensor:
        batch = next(iter(obs_n.values())).shape[0]
        if self.value_head is None:
            return torch.zeros(batch, device=self.device)
        if self.critic_encoder is not None:
            features = self.critic_encoder(obs_n)[1]
        else:
            if actor_pooled is None:
                actor_pooled = self.obs_encoder(obs_n)[1]
            features = actor_pooled.detach()
        return self.value_head(features).squeeze(-1).float()

    def compute_loss(self, batch: Mapping[str, Any],
                     teacher: "ManiFlowPointcloudRLPolicy | None" = None,
                     generator: torch.Generator | None = None, on_sampler_grid: bool = False
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        """Consistency flow loss on normalized obs/actions; ``teacher`` = EMA copy (or self).

        ``on_sampler_grid``: only at the sampler's own ``(t_k = k/K, dt = 1/K)``, K =
        ``num_inference_steps`` (``sampler_grid_consistency_loss``; the demo term of PPO)."""
        obs_n = self.normalize_obs(batch["obs"])
        action = torch.as_tensor(batch["action"], device=self.device).float()
        expected = (action.shape[0], self.horizon, self.action_dim)
        if action.ndim != 3 or tuple(action.shape) != expected:
            raise ValueError(f"batch['action'] has shape {list(action.shape)}, expected "
                             f"[B, {self.horizon}, {self.action_dim}]")
        context, _ = self.obs_encoder(obs_n)
        teacher = self if teacher is None else teacher
        teacher_context = None
        if teacher is not self:   # the teacher sees the consistency rows only (the last ones)
            first = 0 if on_sampler_grid else num_flow_samples(len(action), self.config.flow_ratio)
            with torch.no_grad():
                teacher_context = teacher.encode_obs(
                    {k: v[first:] for k, v in batch["obs"].items()})[0]
        student_fn = lambda x, t, dt, c: self.model(x, t, dt, c)[0]  # noqa: E731
        teacher_fn = lambda x, t, dt, c: teacher.model(x, t, dt, c)[0]  # noqa: E731
        x1 = self.normalizer.normalize("action", action)
        if on_sampler_grid:
            return sampler_grid_consistency_loss(
                student_fn, teacher_fn, x1, context, self.num_inference_steps,
                self.config.consistency_eps, generator, teacher_context=teacher_context)
        return consistency_flow_loss(student_fn, teacher_fn, x1, context, self.config, generator,
                                     teacher_context=teacher_context)


def _gather_steps(chains: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``chains [B, K+1, H, Da]``, ``steps [B, S]`` -> ``chains[b, steps[b, s]]`` ``[B, S, H, Da]``."""
    index = steps[:, :, None, None].expand(-1, -1, *chains.shape[2:])
    return torch.gather(chains, 1, index)


def _as_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Network outputs as float32 (a no-op without autocast): under bf16 autocast
    (``PPOConfig.autocast``) the transition means, stds and Gaussian log-probs stay float32."""
    return tuple(t.float() for t in tensors)
