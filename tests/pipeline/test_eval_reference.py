"""``evaluate_reference``: the starting policy scored on the in-training evaluation's own
episodes and seeds, once, before the first update (the like-for-like reference for the
20-episode evaluations during RL)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from maniflow_rl.evaluation.evaluate import EVAL_SEED_OFFSET, evaluate_policy
from maniflow_rl.pipeline.finetune import REFERENCE_EVAL_FILE, evaluate_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rl"))
from test_dsrl_trainer import _trainer as dsrl_trainer  # noqa: E402
from test_trainer import _dummy_trainer as ppo_trainer  # noqa: E402


def _returns(result):
    return [round(e["return"], 6) for e in result["episodes"]]


def _direct(policy, trainer):
    """An independent evaluation of ``policy`` with the trainer's evaluation seeds."""
    return evaluate_policy(policy, trainer.env_runner, trainer.config.eval_episodes,
                           seed=trainer.config.seed + EVAL_SEED_OFFSET, progress=False)


def test_dsrl_reference_scores_the_frozen_policy_not_the_actor(tmp_path):
    trainer = dsrl_trainer(tmp_path, eval_episodes=6)
    stored = evaluate_reference(trainer, tmp_path / "out")
    on_disk = json.loads((tmp_path / "out" / REFERENCE_EVAL_FILE).read_text())
    assert on_disk["num_episodes"] == 6 and on_disk["global_step"] == 0
    assert on_disk["mean_return"] == pytest.approx(stored["mean_return"])
    frozen = _direct(trainer.policy, trainer)
    steered = _direct(trainer.steered, trainer)
    assert stored["mean_return"] == pytest.approx(frozen["mean_return"], abs=1e-6)
    # the untrained actor's tanh-bounded noise is not N(0, I): a different score
    assert _returns(frozen) != _returns(steered)


def test_ppo_reference_is_the_policy_before_any_update(tmp_path):
    trainer = ppo_trainer(tmp_path, eval_episodes=4)
    stored = evaluate_reference(trainer, tmp_path / "out")
    assert stored["num_episodes"] == 4
    assert stored["mean_return"] == pytest.approx(_direct(trainer.policy, trainer)["mean_return"],
                                                  abs=1e-6)


def test_reference_is_computed_once_and_never_after_step_zero(tmp_path, monkeypatch):
    trainer = dsrl_trainer(tmp_path, eval_episodes=2)
    first = evaluate_reference(trainer, tmp_path / "out")
    monkeypatch.setattr(trainer, "evaluate", lambda **_: pytest.fail("evaluated twice"))
    assert evaluate_reference(trainer, tmp_path / "out") == first      # a resumed run reads it
    trainer.global_step = 64                                           # resumed, no file
    assert evaluate_reference(trainer, tmp_path / "other") is None
    assert not (tmp_path / "other" / REFERENCE_EVAL_FILE).exists()
    trainer.global_step, trainer.config.eval_episodes = 0, 0           # evaluations off
    assert evaluate_reference(trainer, tmp_path / "third") is None
    assert np.isfinite(first["success_rate"])
