"""Advantage estimators over decision points (ALGORITHM.md section 5).

RLinf style: every estimator is a pure function registered under a name in
``ADVANTAGE_FUNCTIONS``. All of them take time-major ``[T, N]`` tensors (``rewards``, ``values``,
``dones`` as 0/1 floats) and return ``(advantages, returns)``; GRPO also returns a mask.
Registered functions accept extra keyword arguments and ignore the ones they do not use, so
``ManiFlowAdvantageCalculator`` can call every estimator the same way, with the keywords
``rewards, values, dones, last_values, group_ids, gamma, gae_lambda, nstep, eps,
drop_uniform_groups``.

Time-limit truncation is handled before any estimator runs (``bootstrap_truncated_rewards``):
the reward of the truncated decision point gets ``gamma * V(final obs)`` added, and the
estimators then treat every done (terminated or truncated) as the end of the trajectory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from maniflow_rl.rl.batch import RolloutBatch

AdvantageFunction = Callable[..., tuple[Tensor, ...]]
ADVANTAGE_FUNCTIONS: dict[str, AdvantageFunction] = {}
CUSTOM_ADVANTAGE_TYPE = "custom"


def register_advantage(name: str) -> Callable[[AdvantageFunction], AdvantageFunction]:
    """Decorator: register an estimator under ``name`` (a duplicate name raises ValueError)."""
    def decorator(fn: AdvantageFunction) -> AdvantageFunction:
        if name in ADVANTAGE_FUNCTIONS:
            raise ValueError(f"advantage estimator '{name}' is already registered")
        ADVANTAGE_FUNCTIONS[name] = fn
        return fn
    return decorator


def bootstrap_truncated_rewards(rewards: Tensor, truncated: Tensor, final_values: Tensor,
                                gamma: float) -> Tensor:
    """``r_t + gamma * V(final_obs_t)`` where ``truncated_t`` (time limit), else ``r_t``.

    Returns a new tensor; terminated episodes get no bootstrap.
    """
    return rewards + gamma * truncated.to(rewards.dtype) * final_values


@register_advantage("gae")
def compute_gae(rewards: Tensor, values: Tensor, dones: Tensor, last_values: Tensor,
                gamma: float, gae_lambda: float, **_unused) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation.

    ``delta_t = r_t + gamma V_{t+1} (1 - d_t) - V_t``, ``V_T = last_values``;
    ``A_t = delta_t + gamma lambda (1 - d_t) A_{t+1}``; returns ``A + V``.
    """
    not_done = 1.0 - dones.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(last_values)
    next_value = last_values
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_value * not_done[t] - values[t]
        next_advantage = delta + gamma * gae_lambda * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages, advantages + values


@register_advantage("mc")
def compute_mc_returns(rewards: Tensor, values: Tensor, dones: Tensor, last_values: Tensor,
                       gamma: float, **_unused) -> tuple[Tensor, Tensor]:
    """Monte-Carlo discounted returns-to-go.

    ``G_t = r_t + gamma (1 - d_t) G_{t+1}``, ``G_T = last_values`` (bootstrap for episodes still
    running at the end of the rollout); ``A_t = G_t - V_t``.
    """
    not_done = 1.0 - dones.to(values.dtype)
    returns = torch.zeros_like(values)
    next_return = last_values
    for t in reversed(range(rewards.shape[0])):
        next_return = rewards[t] + gamma * not_done[t] * next_return
        returns[t] = next_return
    return returns - values, returns


@register_advantage("nstep")
def compute_nstep(rewards: Tensor, values: Tensor, dones: Tensor, last_values: Tensor,
                  gamma: float, nstep: int, **_unused) -> tuple[Tensor, Tensor]:
    """n-step TD targets.

    With ``m = min(n, T - t)``: ``G_t = sum_{k<m} gamma^k r_{t+k} [no done in t..t+k-1]
    + gamma^m V_{t+m} [no done in t..t+m-1]`` where ``V_T = last_values``. A done cuts the sum
    after its own reward (no bootstrap). ``A_t = G_t - V_t``.
    """
    num_steps = rewards.shape[0]
    not_done = 1.0 - dones.to(values.dtype)
    values_ext = torch.cat([values, last_values.unsqueeze(0)], dim=0)  # [T+1, N]
    returns = torch.zeros_like(values)
    for t in range(num_steps):
        target = torch.zeros_like(last_values)
        alive = torch.ones_like(last_values)
        discount = 1.0
        end = min(t + nstep, num_steps)
        for k in range(t, end):
            target = target + alive * discount * rewards[k]
            alive = alive * not_done[k]
            discount *= gamma
        returns[t] = target + alive * discount * values_ext[end]
    return returns - values, returns


def episode_segment_returns(rewards: Tensor, dones: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split every env column at its dones into episode segments.

    Returns ``(segment_ids [T, N], segment_returns [N, S], segment_valid [N, S])``:
    ``segment_ids[t, n]`` = number of dones in column n before t; ``segment_returns`` the
    undiscounted reward sum of each segment; ``segment_valid`` marks segments that exist.
    A trailing segment that is still running at the rollout end counts as a segment too.
    """
    dones_long = dones.to(torch.long)
    segment_ids = torch.cumsum(dones_long, dim=0) - dones_long            # [T, N]
    num_segments = int(segment_ids[-1].max().item()) + 1
    num_envs = rewards.shape[1]
    segment_returns = torch.zeros(num_envs, num_segments, dtype=rewards.dtype,
                                  device=rewards.device)
    env_index = torch.arange(num_envs, device=rewards.device).expand_as(segment_ids)
    segment_returns.index_put_((env_index, segment_ids), rewards, accumulate=True)
    segment_valid = (torch.arange(num_segments, device=rewards.device).unsqueeze(0)
                     <= segment_ids[-1].unsqueeze(1))
    return segment_ids, segment_returns, segment_valid


@register_advantage("grpo")
def compute_grpo(rewards: Tensor, dones: Tensor, group_ids: Tensor, eps: float = 1e-6,
                 drop_uniform_groups: bool = True, uniform_atol: float = 1e-6,
                 complete_episodes_only: bool = False, step_mask: Tensor | None = None,
                 **_unused) -> tuple[Tensor, Tensor, Tensor]:
    """Group-relative advantages (critic-free).

    Each decision point's score ``R`` is the undiscounted return of the episode segment it
    belongs to. Envs with equal ``group_ids`` (they share a reset seed) form a group g; over all
    episodes of the group, ``A = (R - mean_g) / (std_g + eps)`` with the population std.
    Returns ``(advantages, returns = R, mask)``; with ``drop_uniform_groups`` the mask is 0 for
    every decision point of a group whose episode returns are all equal (within
    ``uniform_atol``): such a group carries no learning signal.

    ``complete_episodes_only``: a segment still running at the rollout end (no done yet) has an
    unknown outcome, e.g. the next layout an env started after an early success; it is left
    out of the group statistics and its decision points get mask 0. Otherwise its partial
    return counts like a finished episode's.

    ``step_mask [T, N]`` (optional, the rollout's mask): a segment none of whose decision points
    has mask 1 (an idle env after its one episode, in a fresh-episode rollout) is no episode.
    """
    segment_ids, segment_returns, segment_valid = episode_segment_returns(rewards, dones)
    if step_mask is not None:
        env_index = torch.arange(rewards.shape[1], device=rewards.device).expand_as(segment_ids)
        live = torch.zeros_like(segment_returns).index_put_(
            (env_index, segment_ids), step_mask.to(rewards.dtype), accumulate=True)
        segment_valid = segment_valid & (live > 0)
    if complete_episodes_only:
        finished = dones.to(torch.long).sum(0)                                # [N] done count
        segment_index = torch.arange(segment_valid.shape[1], device=rewards.device)
        segment_valid = segment_valid & (segment_index.unsqueeze(0) < finished.unsqueeze(1))
    _, group_index = torch.unique(group_ids, return_inverse=True)          # [N] -> 0..G-1
    num_groups = int(group_index.max().item()) + 1
    valid = segment_valid.to(rewards.dtype)
    episode_group = group_index.unsqueeze(1).expand_as(segment_returns)    # [N, S]

    def group_sum(x: Tensor) -> Tensor:
        out = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device)
        return out.index_add_(0, episode_group.flatten(), (x * valid).flatten())

    count = group_sum(torch.ones_like(segment_returns)).clamp(min=1.0)
    mean = group_sum(segment_returns) / count
    std = torch.sqrt(group_sum((segment_returns - mean[episode_group]) ** 2) / count)

    env_index = torch.arange(rewards.shape[1], device=rewards.device).expand_as(segment_ids)
    scores = segment_returns[env_index, segment_ids]                       # [T, N]
    step_group = group_index.unsqueeze(0).expand_as(scores)
    advantages = (scores - mean[step_group]) / (std[step_group] + eps)

    mask = segment_valid[env_index, segment_ids].to(rewards.dtype)         # [T, N]
    if drop_uniform_groups:
        flat_group = episode_group[segment_valid]
        flat_returns = segment_returns[segment_valid]
        empty = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device)
        group_max = empty.scatter_reduce(0, flat_group, flat_returns, "amax", include_self=False)
        group_min = empty.scatter_reduce(0, flat_group, flat_returns, "amin", include_self=False)
        informative = (group_max - group_min) > uniform_atol
        mask = mask * informative[step_group].to(rewards.dtype)
    return advantages * mask, scores, mask


def normalize_advantages(advantages: Tensor, mask: Tensor | None = None, eps: float = 1e-8,
                         all_reduce: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``(A - mean) / (std + eps)`` over the entries where ``mask`` is 1 (unbiased std).

    ``all_reduce`` (optional) sums a tensor over all ranks and returns it, e.g.
    ``lambda x: (torch.distributed.all_reduce(x), x)[1]``; statistics are then global.
    Masked-out entries are set to 0.
    """
    reduce = all_reduce if all_reduce is not None else (lambda x: x)
    weight = torch.ones_like(advantages) if mask is None else mask.to(advantages.dtype)
    totals = reduce(torch.stack([(advantages * weight).sum(), weight.sum()]))
    total, count = totals[0], totals[1]
    mean = total / count.clamp(min=1.0)
    squared = reduce(((advantages - mean) ** 2 * weight).sum().reshape(1))[0]
    std = torch.sqrt(squared / (count - 1.0).clamp(min=1.0))
    return (advantages - mean) / (std + eps) * weight


@dataclass
class AdvantageConfig:
    gamma: float = 0.99             # discount per decision point (one action chunk)
    gae_lambda: float = 0.95
    advantage_type: str = "gae"     # "gae" | "mc" | "nstep" | "grpo" | "custom"
    normalize_advantages: bool = True
    nstep: int = 5
    group_size: int = 1             # GRPO: envs i with equal i // group_size share a reset seed
    grpo_eps: float = 1e-6
    drop_uniform_groups: bool = True
    # GRPO: leave out episodes still running at the rollout end (their outcome is unknown)
    grpo_complete_episodes_only: bool = True
    # Time-limit endings: True treats them as cut-offs of a longer task (r += gamma V(final));
    # False treats the limit as part of the task (a fixed-horizon success task: running out of
    # time is a failure, worth 0), which keeps failing episodes' advantages negative.
    bootstrap_truncated: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        valid_types = sorted(ADVANTAGE_FUNCTIONS) + [CUSTOM_ADVANTAGE_TYPE]
        if self.advantage_type not in valid_types:
            raise ValueError(f"unknown advantage_type '{self.advantage_type}'; "
                             f"valid: {', '.join(valid_types)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if int(self.nstep) != self.nstep or self.nstep < 1:
            raise ValueError(f"nstep must be an integer >= 1, got {self.nstep}")
        if int(self.group_size) != self.group_size or self.group_size < 1:
            raise ValueError(f"group_size must be an integer >= 1, got {self.group_size}")
        if self.grpo_eps <= 0:
            raise ValueError(f"grpo_eps must be > 0, got {self.grpo_eps}")


class ManiFlowAdvantageCalculator:
    """Fills ``advantages``, ``returns`` and ``mask`` of a RolloutBatch.

    Steps: truncation bootstrap (skipped for the critic-free "grpo") -> registered estimator
    (or ``_calculate_custom_advantages`` for ``advantage_type="custom"``) -> optional
    normalization over the masked entries (global when ``all_reduce`` is given).
    """

    def __init__(self, config: AdvantageConfig | None = None,
                 all_reduce: Callable[[Tensor], Tensor] | None = None):
        self.config = config if config is not None else AdvantageConfig()
        self.config.validate()
        self.all_reduce = all_reduce

    def group_ids_for(self, batch: RolloutBatch) -> Tensor:
        if batch.group_ids is not None:
            return batch.group_ids
        return torch.arange(batch.num_envs, device=batch.rewards.device) // self.config.group_size

    def calculate(self, batch: RolloutBatch) -> RolloutBatch:
        """Compute advantages/returns in place on ``batch`` and return it."""
        cfg = self.config
        rewards = batch.rewards
        if cfg.advantage_type != "grpo" and cfg.bootstrap_truncated:
            rewards = bootstrap_truncated_rewards(batch.rewards, batch.truncated,
                                                  batch.final_values, cfg.gamma)
        if cfg.advantage_type == CUSTOM_ADVANTAGE_TYPE:
            bootstrapped = dataclasses.replace(batch, rewards=rewards)
            result = self._calculate_custom_advantages(bootstrapped, batch.last_values)
        else:
            result = ADVANTAGE_FUNCTIONS[cfg.advantage_type](
                rewards=rewards, values=batch.values, dones=batch.dones,
                last_values=batch.last_values, group_ids=self.group_ids_for(batch),
                gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, nstep=cfg.nstep, eps=cfg.grpo_eps,
                drop_uniform_groups=cfg.drop_uniform_groups,
                complete_episodes_only=cfg.grpo_complete_episodes_only, step_mask=batch.mask)
        advantages, returns = result[0], result[1]
        mask = batch.mask if len(result) < 3 else batch.mask * result[2]
        if cfg.normalize_advantages:
            advantages = normalize_advantages(advantages, mask, all_reduce=self.all_reduce)
        batch.advantages, batch.returns, batch.mask = advantages, returns, mask
        return batch

    def _calculate_custom_advantages(self, rollout_batch: RolloutBatch,
                                     next_values: Tensor) -> tuple[Tensor, ...]:
        """Override in a subclass for ``advantage_type="custom"``.

        ``rollout_batch.rewards`` already include the truncation bootstrap; ``next_values`` is
        ``V(s_T)`` ([N]). Return ``(advantages, returns)`` or ``(advantages, returns, mask)``,
        each ``[T, N]``.
        """
        raise NotImplementedError(
            "advantage_type='custom' needs a subclass of ManiFlowAdvantageCalculator that "
            "implements _calculate_custom_advantages(rollout_batch, next_values) -> "
            "(advantages, returns[, mask]); or register a function with @register_advantage")
