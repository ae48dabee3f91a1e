"""Helpers of the PPO trainer: actor/critic parameter split, LR schedule, per-denoising-step
diagnostics, the console columns, the GRPO setup check, a rank's RNG state in a checkpoint, and
the error that stops a run whose updates keep failing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

CONSOLE_KEYS = ("rollout/return_mean", "rollout/success_rate", "eval/success_rate",
                "train/policy_loss", "train/value_loss", "train/approx_kl", "train/clipfrac",
                "train/explained_variance", "perf/sps")
CRITIC_NAME_MARKERS = ("value_head", "critic")


def split_actor_critic_parameters(policy: torch.nn.Module):
    """Critic = parameters whose name contains ``value_head`` or ``critic``; actor = the rest."""
    actor, critic = [], []
    for name, param in policy.named_parameters():
        if not param.requires_grad:
            continue
        (critic if any(m in name for m in CRITIC_NAME_MARKERS) else actor).append(param)
    return actor, critic


def policy_autocast(mode: str, device: torch.device) -> torch.autocast:
    """The autocast context of ``PPOConfig.autocast`` (``bf16``: the policy networks in
    bfloat16 on ``device``; ``none``: disabled, a no-op)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=mode == "bf16")


def make_optimizer(actor_params, critic_params, config) -> torch.optim.AdamW:
    """AdamW with an ``actor`` and (if any) a ``critic`` group at their learning rates; each
    group remembers its ``initial_lr`` for the LR schedule."""
    groups = [{"params": actor_params, "lr": config.learning_rate, "name": "actor"}]
    if critic_params:
        groups.append({"params": critic_params, "lr": config.critic_learning_rate,
                       "name": "critic"})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def lr_multiplier(schedule: str, iteration: int, num_iterations: int, warmup: int) -> float:
    """LR factor: linear warm-up over ``warmup`` iterations, then constant / linear / cosine decay
    to 0 at ``num_iterations``."""
    if warmup > 0 and iteration < warmup:
        return (iteration + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (iteration - warmup) / max(1, num_iterations - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def denoising_step_diagnostics(chains: torch.Tensor, denoise_inds: torch.Tensor,
                               executed: slice) -> dict[str, float]:
    """How much each denoising step moves the executed actions: ``mean |x_{k+1} - x_k|`` over
    the executed slice, per step k (``rollout/step_change_k``), and for the chains whose
    stochastic step was k (``rollout/noisy_step_change_k``); the mean stochastic step index."""
    chains = chains.flatten(0, -4)[:, :, executed]                       # [B, K+1, Ca, Da]
    change = (chains[:, 1:] - chains[:, :-1]).abs().flatten(2).mean(2)   # [B, K]
    inds = denoise_inds.flatten(0, -2)
    out = {f"rollout/step_change_k{k}": float(change[:, k].mean())
           for k in range(change.shape[1])}
    single = bool((inds == inds[:, :1]).all()) and bool((inds >= 0).all())
    if single:   # flow_sde: one stochastic step per chain
        steps = inds[:, 0]
        out["rollout/sde_step_mean"] = float(steps.float().mean())
        for k in steps.unique().tolist():
            out[f"rollout/noisy_step_change_k{k}"] = float(change[steps == k, k].mean())
    return out


def rollout_metrics(stats: dict[str, Any], batch, executed: slice) -> dict[str, float]:
    """``rollout/*`` metrics of one rollout: episode statistics (when episodes finished),
    reward per decision point, mask fraction, dropped bad env values, denoising diagnostics,
    value mean and advantage std."""
    metrics: dict[str, float] = {}
    returns = stats.get("episode_returns", [])
    successes = stats.get("episode_successes", [])
    lengths = stats.get("episode_lengths", [])
    if len(returns):
        metrics["rollout/return_mean"] = float(np.mean(returns))
        metrics["rollout/episode_length"] = float(np.mean(lengths))
        metrics["rollout/num_episodes"] = float(len(returns))
    if len(successes):
        metrics["rollout/success_rate"] = float(np.mean(successes))
    metrics["rollout/reward_per_decision"] = float(batch.rewards.mean())
    metrics["rollout/mask_fraction"] = float(batch.mask.mean())   # samples with signal
    metrics["rollout/nonfinite_dropped"] = float(stats.get("nonfinite_dropped", 0))
    for key in ("active_env_steps", "executed_env_steps"):
        if key in stats:
            metrics[f"rollout/{key}"] = float(stats[key])
    metrics.update(denoising_step_diagnostics(batch.chains, batch.denoise_inds, executed))
    metrics["rollout/value_mean"] = float(batch.values.mean())
    metrics["rollout/advantage_std"] = float(batch.advantages.std())
    return metrics


def check_env_count(env_runner, num_envs: int, world_size: int) -> None:
    """The runner holds this rank's share of ``PPOConfig.num_envs`` (all of them in one
    process, ``num_envs / world_size`` under torchrun)."""
    local = num_envs // world_size
    if getattr(env_runner, "num_envs", local) != local:
        share = f" / world size {world_size} = {local} per rank" if world_size > 1 else ""
        raise ValueError(f"env_runner has {env_runner.num_envs} envs but "
                         f"PPOConfig.num_envs={num_envs}{share}")


def check_grpo_setup(env_runner, config, group_size: int, local_num_envs: int,
                     max_steps_per_episode: int, n_action_steps: int) -> None:
    """GRPO rollouts are one fresh episode per env, groups seeded alike (rollout_collector):
    the runner needs ``seed``, each rank's envs whole groups, a rollout one full episode."""
    if not callable(getattr(env_runner, "seed", None)):
        raise ValueError(f"advantage_type='grpo' needs an env runner with seed(seeds) (one "
                         f"reset seed per env, so that a group shares its layout); "
                         f"{type(env_runner).__name__} has none")
    if local_num_envs % group_size:
        per_rank = (f" ({local_num_envs} per rank: a group must live on one rank)"
                    if local_num_envs != config.num_envs else "")
        raise ValueError(f"PPOConfig.num_envs={config.num_envs}{per_rank} must be a multiple "
                         f"of AdvantageConfig.group_size={group_size} for GRPO")
    limit = min(int(getattr(env_runner, "max_episode_steps", None) or 10**9),
                max_steps_per_episode)
    needed = math.ceil(limit / n_action_steps)
    if config.num_steps_per_rollout != needed:
        raise ValueError(
            f"a GRPO rollout is one full episode: with max_episode_steps={limit} and "
            f"n_action_steps={n_action_steps}, set PPOConfig."
            f"num_steps_per_rollout={needed} (got {config.num_steps_per_rollout})")


def rank_state_of(payload: dict[str, Any], rank: int) -> dict[str, Any] | None:
    """Rank ``rank``'s RNG state in a PPO checkpoint (older checkpoints: rank 0's only)."""
    states = payload.get("rank_states")
    if states:
        return states[rank] if rank < len(states) else None
    return {"rng": payload.get("rng"), "trainer_generator": payload.get("trainer_generator")} \
        if rank == 0 else None
