"""Demo-augmented PPO: an imitation term that anchors fine-tuning to the demonstrations.

DAPG (Rajeswaran et al., 2018) adds the demonstrations' log-likelihood to the policy gradient;
for a flow policy the imitation objective is its pretraining loss, so every actor minibatch
minimizes

    L = L_PPO + bc_coef * L_CF(demo minibatch; teacher = frozen imitation policy)

where ``L_CF`` is the consistency-flow loss at the sampler's own inputs: ``t_k = k / K`` and
``dt = 1 / K`` for the fine-tuning sampler's K steps (``policy.compute_loss(...,
on_sampler_grid=True)``), so the anchor constrains exactly the velocities that the rollouts and
evaluations use (pretraining's loss spends 75 % of its samples at ``dt = 0``, a query the
K-step sampler never makes). The teacher is the imitation policy the fine-tuning started from,
also when a run continues from a fine-tuned checkpoint (``pipeline.finetune`` reloads it from
the identity each PPO checkpoint records). Why: the PPO trust
region is measured on the one stochastic denoising step of each chain, and changing the
velocity at early (large-sigma) steps is cheap in that KL while it moves the executed action
as much as a late step does; on precise tasks (assembly) a few updates drifted the deterministic
actions by a systematic offset and success fell to 0 (docs/TUNING.md). The demo term pulls the
action distribution back toward the demonstrations wherever PPO has no signal.
"""

from __future__ import annotations

import copy
from typing import Iterator

import torch

__all__ = ["DemoRegularizer"]


class DemoRegularizer:
    """Endless shuffled demo minibatches and ``loss(policy)`` = consistency-flow loss on one.

    ``reference``: the imitation policy; a frozen copy gives the consistency targets, so the
    anchor is the imitation policy, not the moving one.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, reference: torch.nn.Module,
                 batch_size: int = 64, seed: int = 0):
        if len(dataset) < 1:
            raise ValueError("the demo dataset for the BC term is empty")
        self.teacher = copy.deepcopy(reference).eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self._generator = torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, drop_last=True,
            generator=self._generator)
        self._batches: Iterator | None = None

    def next_batch(self) -> dict:
        if self._batches is not None:
            batch = next(self._batches, None)
            if batch is not None:
                return batch
        self._batches = iter(self.loader)
        return next(self._batches)

    def loss(self, policy) -> torch.Tensor:
        batch = self.next_batch()
        loss, _ = policy.compute_loss(batch, teacher=self.teacher, on_sampler_grid=True)
        return loss
