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
                                                    best_record, is_new_best, validation_due,
                                                    validation_seed)
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


def _scripted_evaluate(monkeypatch, successes, seeds=None, policies=None):
    scripted = iter(successes)

    def fake_evaluate(policy, runner, episodes, seed=None, **kwargs):
        if seeds is not None:
            seeds.append(seed)
        if policies is not None:
            policies.append(policy)
        return {"success_rate": next(scripted), "num_env_steps": 10}

    monkeypatch.setattr(pretrain_module, "evaluate_policy", fake_evaluate)


def test_validation_due_at_epoch_ends_after_each_multiple():
    assert not validation_due([], 2, every=0, finished=True)
    assert not validation_due([], 2, every=3, finished=False)
    assert validation_due([], 3, every=3, finished=False)
    assert validation_due([{"step": 3}], 7, every=3, finished=False)       # crossed 6
    assert not validation_due([{"step": 7}], 8, every=3, finished=False)
    assert validation_due([{"step": 7}], 8, every=3, finished=True)         # the last step
    assert not validation_due([{"step": 8}], 8, every=3, finished=True)
    assert best_record([{"step": 1, "success_rate": 0.5}, {"step": 2, "success_rate": 0.5},
                        {"step": 3, "success_rate": 0.2}])["step"] == 2


def test_best_checkpoint_is_the_best_validation_step(dataset, tmp_path, monkeypatch):
    seeds, policies = [], []
    _scripted_evaluate(monkeypatch, [0.2, 0.6, 0.4, 0.6, 0.1, 0.0, 0.0], seeds, policies)
    cfg = tiny_pretrain_config(dataset, tmp_path, num_epochs=100, max_train_steps=10,
                               select_every_steps=2, select_episodes=4, seed=7,
                               select_policy_overrides={"num_inference_steps": 1})
    summary = run_pretraining(cfg, env_runner_factory=_dummy_runner, progress=False)
    steps = [r["step"] for r in summary["selection"]]
    assert steps == sorted(steps) and steps[-1] == 10
    assert all(b // 2 > a // 2 for a, b in zip(steps, steps[1:]))      # one per crossed multiple
    assert seeds == [7 + VALIDATION_SEED_OFFSET] * len(steps)
    # the rollouts sample as the evaluation does (the overrides), with the EMA weights
    assert all(p.num_inference_steps == 1 for p in policies)
    best = load_checkpoint_file(summary["best_checkpoint"], expected_kind="pretrain")
    expected = best_record(summary["selection"])
    assert best["global_step"] == expected["step"] and expected["success_rate"] == 0.6
    assert expected["step"] == steps[3]                                  # tie: the later one
    assert summary["validation_best5_mean"] == pytest.approx(
        best_k_mean([r["success_rate"] for r in summary["selection"]]))
    latest = load_checkpoint_file(tmp_path / "checkpoints" / "latest.pt")
    assert latest["global_step"] == 10 and latest["selection"] == summary["selection"]


def test_resume_repairs_or_sets_aside_best_checkpoint(dataset, tmp_path, monkeypatch):
    """A kill between latest.pt and best.pt, and a best.pt from steps the resumed run redoes."""
    _scripted_evaluate(monkeypatch, [0.2, 0.9, 0.1, 0.1, 0.1, 0.1])
    cfg = tiny_pretrain_config(dataset, tmp_path, num_epochs=100, max_train_steps=12,
                               select_every_steps=3, select_episodes=2)
    first = run_pretraining(cfg, env_runner_factory=_dummy_runner, progress=False)
    ckpt = tmp_path / "checkpoints"
    best_step = load_checkpoint_file(ckpt / "best.pt")["global_step"]
    assert best_step == first["selection"][1]["step"]
    # 1) best.pt lost after latest.pt recorded its validation: the resume rewrites it
    (ckpt / "best.pt").unlink()
    latest = load_checkpoint_file(ckpt / "latest.pt")
    torch.save({**latest, "selection": latest["selection"][:2], "global_step": best_step},
               ckpt / "latest.pt")
    run = pretrain_module._Run(cfg, _dummy_runner, None)
    run.close()
    assert load_checkpoint_file(ckpt / "best.pt")["global_step"] == best_step
    # 2) latest.pt from before that validation: that best.pt is set aside (not deleted) and
    #    best.pt becomes the best of the validations the resumed run has (here: its own step)
    first_step = latest["selection"][0]["step"]
    torch.save({**latest, "selection": latest["selection"][:1], "global_step": first_step},
               ckpt / "latest.pt")
    run = pretrain_module._Run(cfg, _dummy_runner, None)
    run.close()
    assert load_checkpoint_file(ckpt / "best.pt")["global_step"] == first_step
    assert load_checkpoint_file(ckpt / f"best.superseded_step{best_step}.pt")[
        "global_step"] == best_step


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
