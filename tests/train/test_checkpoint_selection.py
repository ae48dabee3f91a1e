"""Imitation checkpoint selection: validation seeds only, best.pt is the best (ties: later),
selection does not change training, and the best-k statistic."""

import pytest
import torch
from pretrain_testlib import tiny_pretrain_config, write_synthetic_dataset

from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
from maniflow_rl.evaluation.evaluate import EVAL_SEED_OFFSET
from maniflow_rl.train import pretrain as pretrain_module
from maniflow_rl.train import run_pretraining
from maniflow_rl.train.checkpoint_selection import (VALIDATION_SEED_OFFSET, best_k_mean,
                                                    is_new_best, validation_seed)
from maniflow_rl.utils.checkpoint import load_checkpoint_file

META = {"obs": {"point_cloud": {"shape": [32, 3], "type": "point_cloud"},
                "agent_pos": {"shape": [9], "type": "low_dim"}},
        "action": {"shape": [4]}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "demos.zarr", n_episodes=4)


def _dummy_runner():
    return ManiFlowDummyEnvRunner(META, num_envs=2, max_episode_steps=6)


def test_best_k_mean_and_tie_rule():
    assert best_k_mean([0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.2]) == pytest.approx(
        (0.9 + 0.8 + 0.7 + 0.5 + 0.3) / 5)
    assert best_k_mean([0.4, 0.6], k=5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        best_k_mean([])
    assert is_new_best(0.5, None) and is_new_best(0.5, 0.5) and not is_new_best(0.4, 0.5)
    # validation layouts are neither demo layouts (seed + i) nor evaluation layouts
    assert validation_seed(3) == 3 + VALIDATION_SEED_OFFSET
    assert VALIDATION_SEED_OFFSET - EVAL_SEED_OFFSET >= 10_000


def test_best_checkpoint_is_the_best_validation_step(dataset, tmp_path, monkeypatch):
    scripted = iter([0.2, 0.6, 0.4, 0.6, 0.1])
    seeds = []

    def fake_evaluate(policy, runner, episodes, seed=None, **kwargs):
        seeds.append(seed)
        return {"success_rate": next(scripted)}

    monkeypatch.setattr(pretrain_module, "evaluate_policy", fake_evaluate)
    cfg = tiny_pretrain_config(dataset, tmp_path, num_epochs=100, max_train_steps=10,
                               select_every_steps=2, select_episodes=4, seed=7)
    summary = run_pretraining(cfg, env_runner_factory=_dummy_runner, progress=False)
    assert [r["step"] for r in summary["selection"]] == [2, 4, 6, 8, 10]
    assert seeds == [7 + VALIDATION_SEED_OFFSET] * 5
    best = load_checkpoint_file(summary["best_checkpoint"], expected_kind="pretrain")
    assert best["global_step"] == 8                      # 0.6 at step 4 and 8: the later one
    assert summary["validation_best5_mean"] == pytest.approx((0.2 + 0.6 + 0.4 + 0.6 + 0.1) / 5)
    latest = load_checkpoint_file(tmp_path / "checkpoints" / "latest.pt")
    assert latest["global_step"] == 10 and len(latest["selection"]) == 5


def test_selection_rollouts_do_not_change_training(dataset, tmp_path):
    weights = []
    for every in (0, 3):
        cfg = tiny_pretrain_config(dataset, tmp_path / f"s{every}", num_epochs=3,
                                   select_every_steps=every, select_episodes=2)
        summary = run_pretraining(cfg, env_runner_factory=_dummy_runner, progress=False)
        weights.append(torch.load(summary["checkpoint"], weights_only=False)["ema_state_dict"])
        assert bool(summary["selection"]) == bool(every)
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)


def test_selection_needs_an_env(dataset, tmp_path):
    with pytest.raises(ValueError, match="select_every_steps"):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path, select_every_steps=5),
                        progress=False)
