"""Where the fine-tuning trainers write their step checkpoints: one place for the trainers
that write them and the pipeline that chooses among them (``pipeline/finetune_selection.py``).

    PPO:   <save_path>/checkpoint_<iteration>.pt     (after that iteration's update)
    DSRL:  <save_path>/dsrl_<vector step>.pt         (after that vector step's updates)
    both:  <save_path>/latest.pt                     (the newest of the above; resume)
"""

from __future__ import annotations

from pathlib import Path

LATEST_CHECKPOINT = "latest.pt"


def ppo_checkpoint_path(directory: str | Path, iteration: int) -> Path:
    return Path(directory) / f"checkpoint_{int(iteration)}.pt"


def dsrl_checkpoint_path(directory: str | Path, vector_step: int) -> Path:
    return Path(directory) / f"dsrl_{int(vector_step)}.pt"
