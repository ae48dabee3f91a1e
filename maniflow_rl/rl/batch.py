"""RolloutBatch: the one batch type that flows rollout -> advantages -> PPO update.

All per-decision-point fields are time-major ``[T, N, ...]`` (T decision points, N envs); see the
table in ``docs/ARCHITECTURE.md``. ``dones``, ``truncated`` and ``mask`` are float tensors of
0/1 so they can enter arithmetic directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

# Fields with a [T, N, ...] layout; flatten() turns them into [T*N, ...].
PER_STEP_FIELDS = (
    "chains", "denoise_inds", "actions", "logprobs", "values", "rewards", "dones", "truncated",
    "final_values", "mask", "advantages", "returns",
)


@dataclass
class RolloutBatch:
    """One rollout of T decision points in N envs (time-major)."""

    obs: dict[str, Tensor]        # [T, N, To, *shape] observation history per decision point
    chains: Tensor                # [T, N, K+1, H, Da] recorded denoising chain (normalized)
    denoise_inds: Tensor          # [T, N, K] evaluated denoising steps
    actions: Tensor               # [T, N, Ca, Da] executed actions (unnormalized)
    logprobs: Tensor              # [T, N, Ca, Da] rollout log-probs
    values: Tensor                # [T, N] V(s_t) at rollout time
    rewards: Tensor               # [T, N] sum of counted sub-step rewards
    dones: Tensor                 # [T, N] 1 if the episode ended inside this chunk
    truncated: Tensor             # [T, N] 1 if it ended by time limit (not termination)
    final_values: Tensor          # [T, N] V(final obs history) where truncated, else 0
    last_values: Tensor           # [N] V(s_T) after the last decision point
    mask: Tensor | None = None    # [T, N] 1 = use in the loss; defaults to ones
    group_ids: Tensor | None = None   # [N] GRPO group of each env
    advantages: Tensor | None = None  # [T, N] filled by ManiFlowAdvantageCalculator
    returns: Tensor | None = None     # [T, N] filled by ManiFlowAdvantageCalculator

    def __post_init__(self) -> None:
        if self.mask is None:
            self.mask = torch.ones_like(self.rewards, dtype=torch.float32)
        self.validate()

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def num_samples(self) -> int:
        """Number of decision points T * N (the size of the flattened batch)."""
        return self.num_steps * self.num_envs

    def validate(self) -> None:
        """Raise ValueError when a field's leading dims disagree with ``rewards`` ([T, N])."""
        if self.rewards.dim() != 2:
            raise ValueError("RolloutBatch.rewards must be [T, N], "
                             f"got {tuple(self.rewards.shape)}")
        tn = tuple(self.rewards.shape)
        for name in PER_STEP_FIELDS:
            value = getattr(self, name)
            if value is not None and tuple(value.shape[:2]) != tn:
                raise ValueError(f"RolloutBatch.{name} has shape {tuple(value.shape)}, "
                                 f"expected leading dims [T, N] = {list(tn)}")
        for key, value in self.obs.items():
            if tuple(value.shape[:2]) != tn:
                raise ValueError(f"RolloutBatch.obs['{key}'] has shape {tuple(value.shape)}, "
                                 f"expected leading dims [T, N] = {list(tn)}")
        for name in ("last_values", "group_ids"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (tn[1],):
                raise ValueError(f"RolloutBatch.{name} has shape {tuple(value.shape)}, "
                                 f"expected [N] = [{tn[1]}]")

    def flatten(self) -> dict[str, Tensor | dict[str, Tensor]]:
        """Return ``[T*N, ...]`` tensors for minibatching; ``obs`` is a nested dict.

        ``last_values`` (one per env, not per decision point) is left out; ``group_ids`` is
        broadcast over time so every sample carries its group. Fields that are None are omitted.
        """
        flat: dict[str, Tensor | dict[str, Tensor]] = {
            "obs": {key: value.flatten(0, 1) for key, value in self.obs.items()},
        }
        for name in PER_STEP_FIELDS:
            value = getattr(self, name)
            if value is not None:
                flat[name] = value.flatten(0, 1)
        if self.group_ids is not None:
            flat["group_ids"] = self.group_ids.unsqueeze(0).expand(self.num_steps, -1).flatten()
        return flat

    def to(self, device: torch.device | str) -> "RolloutBatch":
        """Return a copy with every tensor moved to ``device``."""
        moved = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, dict):
                moved[field.name] = {k: v.to(device) for k, v in value.items()}
            elif isinstance(value, Tensor):
                moved[field.name] = value.to(device)
            else:
                moved[field.name] = value
        return RolloutBatch(**moved)
