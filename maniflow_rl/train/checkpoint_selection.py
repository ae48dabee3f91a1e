"""Imitation checkpoint selection on validation seeds, and the DP3-style best-k statistic.

Every ``select_every_steps`` optimizer steps the EMA policy is rolled out for
``select_episodes`` episodes on the **validation seeds**: env ``i`` starts from base seed
``seed + VALIDATION_SEED_OFFSET + i``. An env's episode layouts are a function of its base seed
(``derive_episode_seed``), so they are never a demonstration layout (base ``demos.seed``) nor an
evaluation layout (bases ``eval.seed + i``, 100000 + i by default) while the base seeds differ;
``RunConfig.validate`` checks that they do. The
checkpoint with the highest validation success is kept as ``checkpoints/best.pt`` (a tie goes
to the later, longer-trained checkpoint); the pipeline evaluates and fine-tunes that one, so
the evaluation seeds never take part in the choice. The rollouts sample as the evaluation does
(``select_policy_overrides``: the run passes its ``finetune_policy``, e.g. K = 4).

Validations run at the first epoch end after each multiple of ``select_every_steps`` (and at the
last step), right before ``latest.pt`` is written; ``best.pt`` is written after it, with the
same payload. So a resumed run finds in ``latest.pt`` the record of every validation it did,
and :func:`reconcile_best_checkpoint` repairs the one window a kill can leave (the validation is
recorded in ``latest.pt`` but ``best.pt`` is missing or older) and sets aside a ``best.pt`` from
steps the resumed run will redo.

DP3 and ManiFlow report ``SR_test_L5``: the mean of the 5 best evaluations over training, read
on the *test* seeds, i.e. with the selection made on the same episodes it reports.
:func:`best_k_mean` computes that statistic for any series of evaluations; reports label which
seeds it was read on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from maniflow_rl.utils.checkpoint import load_checkpoint_file

log = logging.getLogger("maniflow_rl")

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


def validation_due(records: Sequence[dict], step: int, every: int, finished: bool) -> bool:
    """A validation at ``step`` (an epoch end): a multiple of ``every`` was crossed since the
    last one, or training ``finished`` at a step not yet validated."""
    if every <= 0:
        return False
    last = records[-1]["step"] if records else 0
    return step // every > last // every or (finished and step != last)


def best_record(records: Sequence[dict]) -> dict | None:
    """The record of ``best.pt``: the highest success, the later one on a tie."""
    best = None
    for record in records:
        if is_new_best(record["success_rate"], None if best is None else best["success_rate"]):
            best = record
    return best


def reconcile_best_checkpoint(path: Path, records: Sequence[dict], step: int,
                              write_current: Callable[[], Any]) -> None:
    """After a resume at ``step`` with the validation ``records`` of ``latest.pt``: make
    ``path`` (best.pt) hold the best recorded step. The current payload is written when the best
    step is ``step`` (a kill between latest.pt and best.pt); a ``best.pt`` of another step is
    renamed ``best.superseded_step<N>.pt`` (nothing is deleted) when it is not the best record."""
    best = best_record(records)
    saved_step = (int(load_checkpoint_file(path, expected_kind="pretrain")["global_step"])
                  if path.exists() else None)
    if best is None or saved_step == best["step"]:
        if best is None and saved_step is not None:
            _set_aside(path, saved_step)
        return
    if saved_step is not None:
        _set_aside(path, saved_step)
    if best["step"] == step:
        write_current()
    else:
        log.warning("best.pt of step %d is missing; the next better validation writes it",
                    best["step"])


def _set_aside(path: Path, step: int) -> None:
    target = path.with_name(f"best.superseded_step{step}.pt")
    path.replace(target)
    log.warning("%s (step %d) is not the best validation of the resumed run: kept as %s",
                path, step, target.name)


def validation_policy(policy: torch.nn.Module, overrides: dict) -> torch.nn.Module:
    """``policy`` (the EMA copy) with sampling ``overrides`` (e.g. ``num_inference_steps``), as
    the evaluation builds it; ``policy`` itself without overrides."""
    if not overrides:
        return policy
    config = {**policy.get_config(), **overrides}
    copy = type(policy).from_config(policy.shape_meta, config).to(
        next(policy.parameters()).device)
    missing, unexpected = copy.load_state_dict(policy.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"select_policy_overrides {overrides} change the network "
                         f"(unexpected weights {unexpected[:3]})")
    return copy.eval()
