"""Which fine-tuned policy a run keeps: the best evaluation during RL, the start included.

RL can leave a policy worse than it found it (a run's evaluations during fine-tuning often go
up and down by 10-30 points). The evaluations during RL run every ``eval_interval`` on their
own layouts (``eval.rl_seed``; ``finetune/eval_reference.json`` scores the starting policy on
the same episodes before the first update), and every evaluated policy is checkpointed. With
``finetune.select=best`` the run keeps the candidate with the highest success among::

    step 0            the starting policy (its reference evaluation)
    step s_1 < ...    every evaluated checkpoint (``checkpoint_<iteration>.pt`` for PPO,
                      ``dsrl_<vector step>.pt`` for DSRL)

a tie between checkpoints going to the later, longer-trained one (as the imitation's
``best.pt``, ``train/checkpoint_selection.py``), while a checkpoint must beat the starting
policy strictly to replace it: a tie says RL found nothing better, so the untouched imitation
policy stays (pick-place, run 32: its last checkpoint tied the start at 50 % and scored 38 %
against the imitation's 44 % on the final episodes). The before/after evaluation then scores
the selected policy on ``eval.seed``'s layouts, which took no part in the choice; the last
checkpoint is scored on the same episodes beside it, so a report shows both. If the starting policy wins,
fine-tuning found nothing better on the evaluation layouts during RL and the run reports
the imitation policy. ``finetune.select=last`` keeps the final checkpoint.

The choice is written to ``finetune/selection.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from maniflow_rl.config.sections import FINETUNE_SELECTIONS
from maniflow_rl.train.checkpoint_selection import best_record

log = logging.getLogger("maniflow_rl")

SELECTION_FILE = "selection.json"


def evaluated_checkpoint(finetune_dir: Path, row: dict[str, Any], algorithm: str) -> Path:
    """The checkpoint the trainer wrote at the step of a metrics row (PPO: after the
    iteration's update, DSRL: after the vector step's)."""
    from maniflow_rl.rl.checkpoint_names import dsrl_checkpoint_path, ppo_checkpoint_path

    if algorithm == "dsrl":
        return dsrl_checkpoint_path(finetune_dir, row["vector_step"])
    return ppo_checkpoint_path(finetune_dir, row["iteration"])


def selection_candidates(finetune_dir: Path, algorithm: str, start_checkpoint: Path,
                         layout_seed: int) -> list[dict[str, Any]]:
    """The starting policy (when its reference evaluation exists) and every evaluation during
    RL whose checkpoint is on disk, in training order; only evaluations recorded on
    ``layout_seed``'s layouts (``eval.rl_seed``): those of runs started before it existed
    scored the final evaluation's own episodes and are never candidates."""
    from maniflow_rl.pipeline.finetune import REFERENCE_EVAL_FILE
    from maniflow_rl.pipeline.report import load_history

    candidates, foreign = [], 0
    reference_file = finetune_dir / REFERENCE_EVAL_FILE
    if reference_file.is_file():
        reference = json.loads(reference_file.read_text())
        if reference.get("layout_seed") == layout_seed:
            candidates.append({"global_step": 0, "checkpoint": str(start_checkpoint),
                               "success_rate": reference["success_rate"]})
        else:
            foreign += 1
    for row in load_history(finetune_dir / "metrics.jsonl"):
        if "eval/success_rate" not in row:
            continue
        path = evaluated_checkpoint(finetune_dir, row, algorithm)
        if row.get("eval/layout_seed") != layout_seed:
            foreign += 1
        elif path.is_file():
            candidates.append({"global_step": int(row["global_step"]), "checkpoint": str(path),
                               "success_rate": float(row["eval/success_rate"])})
    if foreign:
        log.warning("%d evaluation(s) during RL in %s were not made on eval.rl_seed=%d's "
                    "layouts (a run started before eval.rl_seed existed, or another rl_seed): "
                    "not selection candidates", foreign, finetune_dir, layout_seed)
    return candidates


def keep_best_candidate(candidates: Sequence[dict[str, Any]],
                        start_checkpoint: str) -> dict[str, Any]:
    """The highest-scoring checkpoint (the later on a tie), unless it does not beat the
    starting policy's score strictly: then the start."""
    start = next((c for c in candidates if c["checkpoint"] == start_checkpoint), None)
    trained = best_record([c for c in candidates if c is not start])
    if start is None or (trained is not None and trained["success_rate"] > start["success_rate"]):
        return trained
    return start


def select_finetuned_checkpoint(finetune_dir: str | Path, algorithm: str,
                                start_checkpoint: str | Path, final_step: int,
                                layout_seed: int, mode: str = "best") -> dict[str, Any]:
    """Choose the policy the run reports (module docstring); ``final_step``: the env step
    ``latest.pt`` holds; ``layout_seed``: ``eval.rl_seed``. Writes and returns
    ``finetune/selection.json``: ``{mode, checkpoint, global_step, success_rate (during RL;
    None for "last" or without candidates), is_start, is_last, candidates}``."""
    if mode not in FINETUNE_SELECTIONS:
        raise ValueError(f"finetune.select must be one of {FINETUNE_SELECTIONS}, got {mode!r}")
    finetune_dir = Path(finetune_dir)
    candidates = selection_candidates(finetune_dir, algorithm, Path(start_checkpoint),
                                      layout_seed) if mode == "best" else []
    if candidates:
        chosen = keep_best_candidate(candidates, str(start_checkpoint))
    else:   # "last", or nothing was evaluated during RL
        from maniflow_rl.rl.checkpoint_names import LATEST_CHECKPOINT

        chosen = {"global_step": int(final_step),
                  "checkpoint": str(finetune_dir / LATEST_CHECKPOINT),
                  "success_rate": None}
    is_start = chosen["checkpoint"] == str(start_checkpoint)
    selection = {"mode": mode, **chosen, "is_start": is_start,
                 "is_last": not is_start and chosen["global_step"] == int(final_step),
                 "candidates": candidates}
    (finetune_dir / SELECTION_FILE).write_text(json.dumps(selection, indent=2))
    return selection
