"""One PPO update over a rollout (CleanRL's inner loop, for chain-recording flow policies).

For every epoch and minibatch::

    out       = policy.default_forward({observation, chains, denoise_inds})
    logratio  = agg(out.logprobs) - agg(old_logprobs)          # level: chunk | action | dim
    L_pi      = mean max(-A r, -A clip(r, 1-eps, 1+eps))        # (+ dual clip)
    L_v       = value loss (MSE / Huber, optionally clipped around the old value)
    L         = L_pi + c_v L_v - c_ent H
    clip grad-norm, optimizer step; stop the update once a minibatch's approx_kl > 1.5 target_kl.

During critic warm-up only ``L_v`` is optimised (actor weights stay frozen).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable

import torch

from maniflow_rl.rl.batch import RolloutBatch
from maniflow_rl.rl.losses import (
    aggregate_logprobs,
    broadcast_to_level,
    explained_variance,
    ppo_policy_loss,
    value_loss,
)
from maniflow_rl.rl.ppo_config import PPOConfig


def ppo_update(policy, optimizer: torch.optim.Optimizer, batch: RolloutBatch, config: PPOConfig,
               generator: torch.Generator | None = None, critic_only: bool = False,
               critic_params: list[torch.nn.Parameter] | None = None,
               bc_loss_fn: Callable[[], torch.Tensor] | None = None) -> dict[str, float]:
    """Run ``update_epochs`` epochs of minibatch PPO on ``batch``; return mean diagnostics.

    ``bc_loss_fn`` (optional): the demo imitation loss, added as ``config.bc_coef * bc_loss_fn()``
    to every actor minibatch (see :mod:`maniflow_rl.rl.demo_regularizer`)."""
    data = batch.flatten()
    num_samples = data["values"].shape[0]
    device = data["values"].device
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)  # per key: per-step diagnostics are not in every mb
    count = 0
    stopped_early = 0.0
    params = critic_params if critic_only else [p for g in optimizer.param_groups for p in g["params"]]
    for _ in range(config.update_epochs):
        order = torch.randperm(num_samples, generator=generator).to(device)
        for start in range(0, num_samples, config.batch_size):
            idx = order[start:start + config.batch_size]
            metrics = _minibatch_step(policy, optimizer, data, idx, config, critic_only, params,
                                      bc_loss_fn)
            for key, value in metrics.items():
                sums[key] += value
                counts[key] += 1
            count += 1
            # KL early stop (SB3 style): the minibatch just stepped on had drifted too far
            if (not critic_only and config.target_kl is not None
                    and metrics["approx_kl"] > 1.5 * config.target_kl):
                stopped_early = 1.0
                break
        if stopped_early:
            break
    result = {key: value / counts[key] for key, value in sums.items()}
    result["explained_variance"] = float(explained_variance(data["values"], data["returns"]))
    result["kl_early_stop"] = stopped_early
    result["num_minibatches"] = float(count)
    return result


def _select(data: dict[str, Any], idx: torch.Tensor) -> dict[str, Any]:
    return {k: (_select(v, idx) if isinstance(v, dict) else v[idx]) for k, v in data.items()
            if v is not None}


def _minibatch_step(policy, optimizer, data, idx, config: PPOConfig, critic_only: bool,
                    params, bc_loss_fn=None) -> dict[str, float]:
    mb = _select(data, idx)
    out = policy.default_forward(
        {"observation": mb["obs"], "chains": mb["chains"], "denoise_inds": mb["denoise_inds"]},
        compute_values=True,
    )
    level = config.logprob_level
    logratio = aggregate_logprobs(out["logprobs"], level) - aggregate_logprobs(mb["logprobs"], level)
    advantages = broadcast_to_level(mb["advantages"], level, like=logratio)
    mask = broadcast_to_level(mb["mask"], level, like=logratio)
    pg_loss, pg_info = ppo_policy_loss(logratio, advantages, config.clip_range,
                                       dual_clip=config.dual_clip, mask=mask)
    v_loss = value_loss(out["values"], mb["values"], mb["returns"],
                        clip_range_value=config.clip_range_value,
                        loss_type=config.value_loss_type, huber_delta=config.huber_delta,
                        mask=mb["mask"])
    entropy = out["entropy"].mean()
    step_stats = _per_denoise_step_kl(logratio.detach(), mb["denoise_inds"])
    if critic_only:
        loss = config.value_coef * v_loss
    else:
        loss = pg_loss + config.value_coef * v_loss - config.entropy_coef * entropy
    bc_loss = None
    if bc_loss_fn is not None and not critic_only:
        bc_loss = bc_loss_fn()
        loss = loss + config.bc_coef * bc_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    if critic_only:
        actor = {id(p) for p in params}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in actor:
                    p.grad = None
    optimizer.step()
    return {
        "policy_loss": float(pg_loss.detach()),
        "value_loss": float(v_loss.detach()),
        "entropy": float(entropy.detach()),
        "loss": float(loss.detach()),
        "grad_norm": float(grad_norm),
        "sigma_geometric_mean": float(torch.exp(entropy.detach() - GAUSSIAN_ENTROPY_OFFSET)),
        **{k: float(v) for k, v in pg_info.items()},
        **step_stats,
        **({} if bc_loss is None else {"bc_loss": float(bc_loss.detach())}),
    }


# entropy of N(mu, sigma^2) per dimension = log(sigma) + 0.5 log(2 pi e)
GAUSSIAN_ENTROPY_OFFSET = 0.5 * math.log(2 * math.pi * math.e)


def _per_denoise_step_kl(logratio: torch.Tensor, denoise_inds: torch.Tensor) -> dict[str, float]:
    """flow_sde diagnostics: approx_kl of the samples whose stochastic step was k, per k.

    Only for chains with one evaluated step per sample (flow_sde: ``denoise_inds`` repeats it);
    empty for flow_noise, where every sample evaluates all steps.
    """
    steps = denoise_inds[:, 0]
    if not bool((denoise_inds == steps[:, None]).all()) or bool((steps < 0).any()):
        return {}
    per_sample = logratio.reshape(logratio.shape[0], -1)
    kl = ((per_sample.exp() - 1) - per_sample).mean(1)
    return {f"approx_kl_step{int(k)}": float(kl[steps == k].mean()) for k in steps.unique()}
