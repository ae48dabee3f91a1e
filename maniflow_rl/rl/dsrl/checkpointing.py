"""Checkpoints of the DSRL trainer: the learner state in ``dsrl_<vector step>.pt`` and
``latest.pt`` (written atomically), the replay buffer in ``replay.npz`` beside them.

Order of a save: every learner tensor is checked first (a NaN / inf model or optimizer state
is never written, the previous files stay as they were), then ``replay.npz`` (the buffer the
checkpoint needs), then the checkpoint files. A load restores the modules, optimizers, alpha,
counters, history, RNG streams and the buffer, re-seeds the envs from ``(seed, global_step)``
(:func:`~maniflow_rl.utils.seeding.resume_env_seed`: a resumed run does not replay its first
layouts) and closes the logger so that it reopens at the restored step (metrics.jsonl and
TensorBoard truncated there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maniflow_rl.rl.checkpoint_names import LATEST_CHECKPOINT, dsrl_checkpoint_path
from maniflow_rl.utils.checkpoint import (assert_finite_state, load_checkpoint_file,
                                          save_checkpoint_atomic)
from maniflow_rl.utils.seeding import (get_rng_state, reseed_env_runner_for_resume,
                                       set_rng_state)


def save_dsrl_checkpoint(trainer, path: str | Path | None = None) -> Path:
    """Write ``path``, or ``dsrl_<vector step>.pt`` + ``latest.pt`` in ``trainer.save_dir``;
    returns the written file."""
    modules = trainer._modules()
    optimizers = {k: o.state_dict() for k, o in trainer.optimizers.items()}
    assert_finite_state({"modules": modules, "optimizers": optimizers,
                         "log_alpha": trainer.log_alpha},
                        f"refusing to checkpoint DSRL at step {trainer.global_step}: the learner")
    directory = Path(path).parent if path is not None else trainer.save_dir
    trainer.replay.save(directory / "replay.npz")
    payload = {
        "kind": "dsrl", "dsrl_config": trainer.config.to_dict(),
        "shape_meta": trainer.policy.shape_meta, "policy_config": trainer.policy.get_config(),
        "policy_state_dict": trainer.policy.state_dict(),
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizers": optimizers,
        "log_alpha": trainer.log_alpha.detach().clone(),
        "counters": {"global_step": trainer.global_step, "vector_steps": trainer.vector_steps,
                     "executed_env_steps": trainer.executed_env_steps,
                     "gradient_steps": trainer.gradient_steps,
                     "skipped_updates": trainer.skipped_updates},
        "history": trainer.history, "rng": get_rng_state(),
        "generator": trainer._generator.get_state(),
    }
    if path is not None:
        return save_checkpoint_atomic(payload, path)
    target = save_checkpoint_atomic(payload, dsrl_checkpoint_path(directory, trainer.vector_steps))
    save_checkpoint_atomic(payload, directory / LATEST_CHECKPOINT)
    return target


def load_dsrl_checkpoint(trainer, path: str | Path) -> dict[str, Any]:
    """Restore ``trainer`` from ``path`` and the ``replay.npz`` beside it; returns the payload."""
    payload = load_checkpoint_file(path, map_location=trainer.device, expected_kind="dsrl")
    replay = Path(path).parent / "replay.npz"
    if not replay.is_file():
        raise FileNotFoundError(f"{replay} (the replay buffer of {path}) is missing")
    for key, module in trainer._modules().items():
        module.load_state_dict(payload["modules"][key])
    for key, optimizer in trainer.optimizers.items():
        optimizer.load_state_dict(payload["optimizers"][key])
    with torch.no_grad():
        trainer.log_alpha.copy_(payload["log_alpha"])
    counters = payload["counters"]
    trainer.global_step, trainer.vector_steps = counters["global_step"], counters["vector_steps"]
    trainer.gradient_steps = counters["gradient_steps"]
    trainer.executed_env_steps = counters.get("executed_env_steps", trainer.global_step)
    trainer.skipped_updates = counters.get("skipped_updates", 0)
    trainer.history = list(payload.get("history", []))
    set_rng_state(payload.get("rng"))
    trainer._generator.set_state(payload["generator"])
    trainer.replay.load(replay)
    reseed_env_runner_for_resume(trainer.env_runner, trainer.config.seed, trainer.global_step)
    trainer.collector.reset()
    trainer._cached = None
    trainer.close()   # reopens at the restored step: metrics.jsonl / TensorBoard truncated there
    return payload
