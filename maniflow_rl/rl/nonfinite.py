"""Non-finite losses and gradients, shared by both trainers (PPO, DSRL): an optimizer step
whose loss or gradient norm is NaN / inf is skipped; ``max_consecutive_skipped_updates`` of
them in a row stop the run with :class:`NonFiniteTrainingError`, whose message says which
checkpoint is intact. (Env outputs are checked separately: ``env_input_guard.py``.)"""

from __future__ import annotations

import torch


class NonFiniteTrainingError(RuntimeError):
    """Too many optimizer steps in a row were skipped (non-finite loss or gradient)."""


def is_finite_number(value: torch.Tensor | float) -> bool:
    """Whether a scalar loss / gradient norm is finite (not NaN, not +-inf)."""
    return bool(torch.isfinite(torch.as_tensor(value)).all())


def skipped_updates_message(consecutive: int, step: int, last_checkpoint,
                            config_name: str = "PPOConfig", step_name: str = "iteration") -> str:
    """The error text when ``consecutive`` optimizer steps in a row were skipped at ``step``
    (a PPO iteration, a DSRL vector step)."""
    kept = (f"the last good checkpoint, {last_checkpoint}, is intact" if last_checkpoint
            else "no checkpoint was written by this run")
    return (f"training stopped at {step_name} {step}: {consecutive} optimizer steps in a row "
            f"were skipped because the loss or gradient was not finite (NaN / inf); {kept}. "
            f"Check the envs' rewards and observations and the learning rates "
            f"({config_name}.max_consecutive_skipped_updates sets this limit)")
