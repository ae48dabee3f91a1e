"""Imitation checkpoint selection on validation seeds, and the DP3-style best-k statistic.

Every ``select_every_steps`` optimizer steps the EMA policy is rolled out for
``select_episodes`` episodes on the **validation seeds** ``seed + VALIDATION_SEED_OFFSET + i``:
never a demonstration layout (the scripted demos use ``demos.seed + i``) and never an
evaluation layout (``seed + EVAL_SEED_OFFSET + i``, the before/after evaluations). The
checkpoint with the highest validation success is kept as ``checkpoints/best.pt`` (a tie goes
to the later, longer-trained checkpoint); the pipeline evaluates and fine-tunes that one, so
the evaluation seeds never take part in the choice.

DP3 and ManiFlow report ``SR_test_L5``: the mean of the 5 best evaluations over training, read
on the *test* seeds, i.e. with the selection made on the same episodes it reports.
:func:`best_k_mean` computes that statistic for any series of evaluations; reports label which
seeds it was read on.
"""

from __future__ import annotations

from typing import Sequence

VALIDATION_SEED_OFFSET = 200_000


def validation_seed(run_seed: int) -> int:
    """First env seed of the validation rollouts of a run seeded ``run_seed``."""
    return int(run_seed) + VALIDATION_SEED_OFFSET


def is_new_best(success: float, best: float | None) -> bool:
    """``success >= best``: the first evaluation, an improvement, or a tie (the later wins)."""
    return best is None or success >= best


def best_k_mean(successes: Sequence[float], k: int = 5) -> float:
    """Mean of the ``k`` largest values (all of them if fewer): ``SR_L5`` for ``k = 5``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not successes:
        raise ValueError("best_k_mean needs at least one evaluation")
    top = sorted((float(s) for s in successes), reverse=True)[:k]
    return sum(top) / len(top)
