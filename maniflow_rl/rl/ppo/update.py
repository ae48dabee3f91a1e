"""One PPO update over a rollout (CleanRL's inner loop, for chain-recording flow policies).

Samples whose ``mask`` is 0 (idle envs, GRPO groups without signal) carry no gradient; they
are dropped before minibatching. For every epoch and minibatch::

    out       = policy.default_forward({observation, chains, denoise_inds})
    logratio  = agg(out.logprobs) - agg(old_logprobs)          # level: chunk | action | dim
    approx_kl = mean((r - 1) - log r)
    if approx_kl > 1.5 target_kl: stop the update (before stepping on this minibatch, as SB3)
    L_pi      = mean max(-A r, -A clip(r, 1-eps, 1+eps))        # (+ dual clip)
    L_v       = value loss (MSE / Huber, optionally clipped around the old value)
    L         = L_pi + c_v L_v - c_ent H  (+ bc_coef L_demo)
    clip the actor's and the critic's gradient norms separately, optimizer step.

During critic warm-up only ``L_v`` is optimised (actor weights stay frozen).

A minibatch whose loss or (actor / critic) gradient norm is not finite is skipped: no optimizer
step, so parameters and optimizer state stay as they were. ``skipped_updates`` counts them and
``trailing_skipped_updates`` is the run of skips at the end of the update (the trainer stops
after ``max_consecutive_skipped_updates`` in a row, see :func:`consecutive_skipped_updates`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Sequence

import torch

from maniflow_rl.rl.batch import RolloutBatch
from maniflow_rl.rl.losses import (
    aggregate_logprobs,
    broadcast_to_level,
    explained_variance,
    ppo_policy_loss,
    value_loss,
)
from maniflow_rl.rl.nonfinite import is_finite_number
from maniflow_rl.rl.ppo.config import PPOConfig
from maniflow_rl.utils.distributed import GradientSync, minibatch_chunks


def ppo_update(policy, optimizer: torch.optim.Optimizer, batch: RolloutBatch, config: PPOConfig,
               generator: torch.Generator | None = None, critic_only: bool = False,
               critic_params: Sequence[torch.nn.Parameter] | None = None,
               bc_loss_fn: Callable[[], torch.Tensor] | None = None,
               actor_params: Sequence[torch.nn.Parameter] | None = None,
               sync: GradientSync | None = None) -> dict[str, float]:
    """Run ``update_epochs`` epochs of minibatch PPO on ``batch``; return mean diagnostics.

    ``actor_params`` / ``critic_params``: the two parameter sets whose gradient norms are
    clipped separately (``max_grad_norm``, ``critic_max_grad_norm``); by default the optimizer
    groups named ``actor`` / ``critic`` (anything unnamed counts as actor).
    ``bc_loss_fn`` (optional): the demo imitation loss, added as ``config.bc_coef * bc_loss_fn()``
    to every actor minibatch (see :mod:`maniflow_rl.rl.ppo.demo_regularizer`).
    ``sync`` (data-parallel, ``utils/distributed.py``): every rank holds its own ``batch``; each
    epoch splits it into ``ceil(all ranks' samples / batch_size)`` minibatches (the same count
    on every rank), and each step uses the sample-weighted mean of the ranks' gradients and
    KL, so the ranks step together and stay identical."""
    actor_params, critic_params = _actor_critic_params(optimizer, actor_params, critic_params)
    data = batch.flatten()
    keep = torch.nonzero(data["mask"] > 0).flatten()
    num_samples = int(keep.numel())
    total_samples = num_samples if sync is None else sync.total(num_samples)
    device = data["values"].device
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)  # per key: per-step diagnostics are not in every mb
    count = 0
    skipped = trailing_skipped = 0
    stopped_early = 0.0
    for _ in range(config.update_epochs if total_samples else 0):
        order = keep[torch.randperm(num_samples, generator=generator).to(device)]
        for idx in minibatch_chunks(order, config.batch_size,
                                    None if sync is None else total_samples):
            metrics = _minibatch_step(policy, optimizer, data, idx, config, critic_only,
                                      actor_params, critic_params, bc_loss_fn, sync)
            if metrics.get("skipped"):
                skipped += 1
                trailing_skipped += 1
                continue
            for key, value in metrics.items():
                sums[key] += value
                counts[key] += 1
            if metrics["kl_stop"]:
                stopped_early = 1.0
                break
            count += 1
            trailing_skipped = 0
        if stopped_early:
            break
    result = {key: value / counts[key] for key, value in sums.items() if key != "kl_stop"}
    result["explained_variance"] = float(explained_variance(data["values"], data["returns"]))
    result["kl_early_stop"] = stopped_early
    result["num_minibatches"] = float(count)   # optimizer steps taken
    result["skipped_updates"] = float(skipped)
    result["trailing_skipped_updates"] = float(trailing_skipped)
    result["active_samples"] = float(num_samples)
    return result


def consecutive_skipped_updates(previous: int, skipped: int, trailing: int,
                                steps_taken: int) -> int:
    """Optimizer steps skipped in a row after one update: ``previous`` (the count before it)
    plus ``skipped`` if the update took no step, else the update's ``trailing`` skips."""
    return int(trailing) if steps_taken > 0 else int(previous) + int(skipped)


def _actor_critic_params(optimizer, actor_params, critic_params):
    """The given parameter lists, or else: the optimizer group named ``critic`` is the critic,
    every other parameter the actor."""
    if critic_params is None:
        critic_params = [p for g in optimizer.param_groups if g.get("name") == "critic"
                         for p in g["params"]]
    if actor_params is None:
        critic_ids = {id(p) for p in critic_params}
        actor_params = [p for g in optimizer.param_groups for p in g["params"]
                        if id(p) not in critic_ids]
    return list(actor_params), list(critic_params)


def _select(data: dict[str, Any], idx: torch.Tensor) -> dict[str, Any]:
    return {k: (_select(v, idx) if isinstance(v, dict) else v[idx]) for k, v in data.items()
            if v is not None}


def _policy_terms(policy, mb, config: PPOConfig):
    """Forward pass of one minibatch: ``(out, pg_loss, diagnostics)`` (approx_kl, clipfrac, ...)."""
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
    diagnostics = {k: float(v) for k, v in pg_info.items()}
    diagnostics.update(_per_denoise_step_kl(logratio.detach(), mb["denoise_inds"]))
    return out, pg_loss, diagnostics


def _minibatch_step(policy, optimizer, data, idx, config: PPOConfig, critic_only: bool,
                    actor_params, critic_params, bc_loss_fn=None,
                    sync: GradientSync | None = None) -> dict[str, float]:
    """One minibatch: losses, then (unless the KL limit is already exceeded) one step.

    Data-parallel (``sync``): the KL stop and the non-finite skip are decided on all ranks'
    samples, and the loss is scaled by this rank's share of them, so the summed gradient is the
    mean over the global minibatch. A rank without samples in it still joins the collectives
    and the optimizer step."""
    count = int(idx.numel())
    mb = _select(data, idx)
    out, pg_loss, diagnostics = _policy_terms(policy, mb, config) if count else (None, None, {})
    total, approx_kl = count, diagnostics.get("approx_kl", 0.0)
    if sync is not None:
        total, approx_kl = sync.weighted_mean(count, approx_kl)
    # KL early stop (SB3): decided on this minibatch's KL *before* the optimizer steps on it
    kl_stop = (not critic_only and config.target_kl is not None
               and approx_kl > 1.5 * config.target_kl)
    if kl_stop:
        return {**diagnostics, "kl_stop": 1.0}
    losses: dict[str, torch.Tensor] = {}
    if count:
        losses = _total_loss(out, pg_loss, mb, config, critic_only, bc_loss_fn)
    optimizer.zero_grad(set_to_none=True)
    nonfinite = bool(losses) and not is_finite_number(losses["loss"].detach())
    if nonfinite and sync is None:   # skip: no backward, no step
        return {"skipped": 1.0, "kl_stop": 0.0}
    if losses and not nonfinite:
        (losses["loss"] * (count / total)).backward()
    if critic_only:
        for p in actor_params:
            p.grad = None
    if sync is not None and sync.gradients([*actor_params, *critic_params], nonfinite):
        optimizer.zero_grad(set_to_none=True)   # some rank's loss was NaN / inf: all skip
        return {"skipped": 1.0, "kl_stop": 0.0}
    actor_norm = (torch.zeros(()) if critic_only else
                  torch.nn.utils.clip_grad_norm_(actor_params, config.max_grad_norm))
    critic_norm = (torch.nn.utils.clip_grad_norm_(critic_params, config.critic_max_grad_norm)
                   if critic_params else torch.zeros(()))
    if not (is_finite_number(actor_norm) and is_finite_number(critic_norm)):
        optimizer.zero_grad(set_to_none=True)   # the step is skipped; drop the bad gradients
        return {"skipped": 1.0, "kl_stop": 0.0}
    optimizer.step()
    return {**{k: float(v.detach()) for k, v in losses.items()},
            "grad_norm": float(actor_norm), "critic_grad_norm": float(critic_norm),
            **diagnostics, "kl_stop": 0.0}


def _total_loss(out, pg_loss, mb, config: PPOConfig, critic_only: bool,
                bc_loss_fn) -> dict[str, torch.Tensor]:
    """``policy_loss``, ``value_loss``, ``entropy``, ``loss`` (+ ``bc_loss``) of a minibatch,
    and ``sigma_geometric_mean`` (from the entropy)."""
    v_loss = value_loss(out["values"], mb["values"], mb["returns"],
                        clip_range_value=config.clip_range_value,
                        loss_type=config.value_loss_type, huber_delta=config.huber_delta,
                        mask=mb["mask"])
    entropy = out["entropy"].mean()
    if critic_only:
        loss = config.value_coef * v_loss
    else:
        loss = pg_loss + config.value_coef * v_loss - config.entropy_coef * entropy
    terms = {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy}
    if bc_loss_fn is not None and not critic_only:
        terms["bc_loss"] = bc_loss_fn()
        loss = loss + config.bc_coef * terms["bc_loss"]
    terms["loss"] = loss
    terms["sigma_geometric_mean"] = torch.exp(entropy.detach() - GAUSSIAN_ENTROPY_OFFSET)
    return terms


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
