"""Pretraining on a small synthetic zarr dataset with the real (tiny) ManiFlow policy."""

import json

import numpy as np
import pytest
import torch
from pretrain_testlib import TINY_POLICY, tiny_pretrain_config, write_synthetic_dataset

from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
from maniflow_rl.evaluation import load_policy_from_checkpoint
from maniflow_rl.train import run_pretraining
from maniflow_rl.train import pretrain as pretrain_module
from maniflow_rl.utils.checkpoint import CheckpointError, load_checkpoint_file


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "demos.zarr",
                                   n_episodes=6)


def test_pretraining_lowers_loss_and_writes_outputs(dataset, tmp_path):
    summary = run_pretraining(tiny_pretrain_config(dataset, tmp_path, num_epochs=16,
                                                   val_ratio=0.2, checkpoint_every_epochs=8),
                              progress=False)
    losses = [h["train_loss"] for h in summary["history"]]
    val_losses = [h["val_loss"] for h in summary["history"]]
    assert summary["epochs"] == 16 and len(losses) == 16
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    assert val_losses[-1] < 0.8 * val_losses[0]
    assert (tmp_path / "checkpoints" / "latest.pt").exists()
    assert (tmp_path / "checkpoints" / "epoch_0008.pt").exists()
    assert (tmp_path / "checkpoints" / "epoch_0016.pt").exists()
    assert list((tmp_path / "tb").iterdir())
    payload = load_checkpoint_file(summary["checkpoint"], expected_kind="pretrain")
    for key in ("shape_meta", "policy_config", "policy_state_dict", "ema_state_dict",
                "optimizer", "lr_scheduler", "epoch", "global_step", "rng", "train_config",
                "dataset_path"):
        assert key in payload
    assert payload["shape_meta"]["obs"]["point_cloud"]["shape"] == [32, 3]
    policy, _ = load_policy_from_checkpoint(summary["checkpoint"], use_ema=True)
    for k, v in policy.state_dict().items():
        assert torch.equal(v, payload["ema_state_dict"][k])
    assert policy.normalizer.is_fitted


def test_resume_continues_exactly(dataset, tmp_path, monkeypatch):
    straight = run_pretraining(tiny_pretrain_config(dataset, tmp_path / "a"), progress=False)

    class Crash(Exception):
        pass

    original_save = pretrain_module._Run.save

    def save_then_crash(self):
        path = original_save(self)
        if self.epoch == 2:
            raise Crash()
        return path

    monkeypatch.setattr(pretrain_module._Run, "save", save_then_crash)
    with pytest.raises(Crash):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path / "b"), progress=False)
    monkeypatch.setattr(pretrain_module._Run, "save", original_save)
    stale = tmp_path / "b" / "checkpoints" / ".latest.pt.k3j4h5g6.tmp"   # a killed save's temp
    stale.write_bytes(b"partial")
    (tmp_path / "b" / "checkpoints" / "notes.tmp").write_text("mine")
    resumed = run_pretraining(tiny_pretrain_config(dataset, tmp_path / "b"), progress=False)
    assert not stale.exists() and (tmp_path / "b" / "checkpoints" / "notes.tmp").exists()

    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs"] == 4
    assert resumed["global_step"] == straight["global_step"]
    assert [h["train_loss"] for h in resumed["history"]] == \
        [h["train_loss"] for h in straight["history"]]
    a = load_checkpoint_file(straight["checkpoint"])
    b = load_checkpoint_file(resumed["checkpoint"])
    for key in ("policy_state_dict", "ema_state_dict"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)
    # a finished run resumes to "nothing left to do"
    again = run_pretraining(tiny_pretrain_config(dataset, tmp_path / "b"), progress=False)
    assert again["global_step"] == straight["global_step"]


def test_corrupt_checkpoint_is_a_clear_error(dataset, tmp_path):
    ckpt = tmp_path / "checkpoints" / "latest.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x80\x04 truncated pickle")
    with pytest.raises(CheckpointError, match="unreadable"):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path), progress=False)
    with pytest.raises(CheckpointError):
        load_policy_from_checkpoint(ckpt)


def test_bad_configs_fail_before_training(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        run_pretraining(tiny_pretrain_config(tmp_path / "nope.zarr", tmp_path), progress=False)
    bad_chunk = {**TINY_POLICY, "n_action_steps": 8}
    with pytest.raises(ValueError, match="n_action_steps"):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path, policy_config=bad_chunk),
                        progress=False)
    with pytest.raises(ValueError, match="unknown"):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path,
                                             policy_config={"not_a_field": 1}), progress=False)
    with pytest.raises(ValueError, match="need a task"):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path, eval_every_epochs=1),
                        progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path, batch_size=0), progress=False)

    def env_with_other_cloud():
        meta = {"obs": {"point_cloud": {"shape": [64, 3], "type": "point_cloud"},
                        "agent_pos": {"shape": [9], "type": "low_dim"}},
                "action": {"shape": [4]}}
        return ManiFlowDummyEnvRunner(meta, num_envs=1)

    with pytest.raises(ValueError, match="shape mismatch.*point_cloud"):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path, eval_every_epochs=1),
                        env_runner_factory=env_with_other_cloud, progress=False)
    assert not (tmp_path / "checkpoints").exists()              # nothing was trained


def test_policy_config_change_refuses_to_resume(dataset, tmp_path):
    run_pretraining(tiny_pretrain_config(dataset, tmp_path, num_epochs=1), progress=False)
    other = {**TINY_POLICY, "n_emb": 16}
    with pytest.raises(ValueError, match="different policy config"):
        run_pretraining(tiny_pretrain_config(dataset, tmp_path, num_epochs=2,
                                             policy_config=other), progress=False)


def test_periodic_evaluation_with_ema_policy(dataset, tmp_path):
    runners = []

    def factory():
        meta = {"obs": {"point_cloud": {"shape": [32, 3], "type": "point_cloud"},
                        "agent_pos": {"shape": [9], "type": "low_dim"}},
                "action": {"shape": [4]}}
        runners.append(ManiFlowDummyEnvRunner(meta, num_envs=2, max_episode_steps=8))
        return runners[-1]

    summary = run_pretraining(tiny_pretrain_config(dataset, tmp_path, num_epochs=2,
                                                   eval_every_epochs=1, eval_episodes=3),
                              env_runner_factory=factory, progress=False)
    assert len(runners) == 1
    assert summary["eval"]["num_episodes"] == 3
    assert 0.0 <= summary["eval"]["success_rate"] <= 1.0
    assert "success_rate" in summary["history"][0]
    saved = json.loads((tmp_path / "eval" / "epoch_0002.json").read_text())
    assert saved["num_episodes"] == 3 and len(saved["episodes"]) == 3
