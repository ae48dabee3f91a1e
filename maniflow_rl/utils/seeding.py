"""Seeding and RNG-state capture, so a resumed run continues the same random streams."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any] | None) -> None:
    if not state:
        return
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def resume_env_seed(base_seed: int, step: int) -> int:
    """Env reset seed for a run resumed at ``step``: ``SeedSequence([base_seed, step])``. Not
    the run's start seed, so a resumed run does not replay its first layouts; equal for every
    resume from the same step, so resuming stays reproducible."""
    return int(np.random.SeedSequence([int(base_seed), int(step)]).generate_state(1)[0])


def reseed_env_runner_for_resume(env_runner: Any, base_seed: int, step: int) -> bool:
    """``env_runner.seed(resume_env_seed(base_seed, step))`` if the runner has ``seed``; the
    next ``reset()`` then starts new layout sequences. Returns whether it was re-seeded."""
    seed = getattr(env_runner, "seed", None)
    if not callable(seed):
        return False
    seed(resume_env_seed(base_seed, step))
    return True
