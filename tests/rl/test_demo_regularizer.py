"""The demo-augmented PPO update: DemoRegularizer and its wiring into ppo_update / the trainer."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from maniflow_rl import ManiFlowPointcloudRLPolicy, PPOConfig
from maniflow_rl.data.dataset import PointCloudSequenceDataset
from maniflow_rl.rl.ppo.demo_regularizer import DemoRegularizer
from maniflow_rl.rl.ppo.update import ppo_update

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from pretrain_testlib import TINY_POLICY, write_synthetic_dataset  # noqa: E402

from test_trainer import _dummy_trainer  # noqa: E402


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = write_synthetic_dataset(tmp_path_factory.mktemp("demos") / "demos.zarr")
    dataset = PointCloudSequenceDataset(str(path), TINY_POLICY["horizon"],
                                        TINY_POLICY["n_obs_steps"], TINY_POLICY["n_action_steps"],
                                        obs_keys=["point_cloud", "agent_pos"],
                                        point_cloud_channels=3)
    torch.manual_seed(0)
    policy = ManiFlowPointcloudRLPolicy(dataset.shape_meta, **TINY_POLICY)
    policy.normalizer.fit(dataset.get_normalizer_data())
    return dataset, policy


def _mean_bc_loss(regularizer, policy, draws=6):
    torch.manual_seed(123)  # the same flow times and noises for every policy compared
    with torch.no_grad():
        return sum(float(regularizer.loss(policy)) for _ in range(draws)) / draws


def test_teacher_is_a_frozen_copy_and_gradients_reach_only_the_policy(demos):
    dataset, policy = demos
    reference = copy.deepcopy(policy)
    regularizer = DemoRegularizer(dataset, reference, batch_size=8)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(1.0)   # moving the reference afterwards must not move the anchor
    assert all(not p.requires_grad for p in regularizer.teacher.parameters())
    assert not torch.equal(next(regularizer.teacher.parameters()), next(reference.parameters()))
    student = copy.deepcopy(policy)
    regularizer.loss(student).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in regularizer.teacher.parameters())


def test_minimizing_the_demo_term_lowers_it_for_a_drifted_policy(demos):
    dataset, policy = demos
    regularizer = DemoRegularizer(dataset, policy, batch_size=16, seed=1)
    drifted = copy.deepcopy(policy)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in drifted.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = _mean_bc_loss(regularizer, drifted)
    optimizer = torch.optim.Adam(drifted.parameters(), lr=3e-3)
    for _ in range(40):
        optimizer.zero_grad()
        regularizer.loss(drifted).backward()
        optimizer.step()
    assert _mean_bc_loss(regularizer, drifted) < 0.8 * before


def test_batches_cycle_through_the_whole_dataset(demos):
    dataset, policy = demos
    regularizer = DemoRegularizer(dataset, policy, batch_size=len(dataset) // 2)
    sizes = [regularizer.next_batch()["action"].shape[0] for _ in range(5)]
    assert sizes == [len(dataset) // 2] * 5   # endless: a new epoch starts when one runs out


def test_ppo_update_adds_bc_coef_times_the_demo_term_to_actor_minibatches(tmp_path):
    trainer = _dummy_trainer(tmp_path, max_grad_norm=1e6, update_epochs=1)
    batch, _ = trainer.collector.collect(trainer.config.num_steps_per_rollout)
    batch = trainer.advantage_calculator.calculate(batch)
    batch.advantages = torch.zeros_like(batch.advantages)   # no policy-gradient signal at all
    weight = trainer.actor_params[0]
    start = weight.detach().clone()
    config = PPOConfig(**{**trainer.config.__dict__, "bc_coef": 2.0, "learning_rate": 1e-2})
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e-2 if group.get("name") == "actor" else 0.0

    def pull_to_zero():
        return weight.square().sum()

    metrics = ppo_update(trainer.policy, trainer.optimizer, batch, config,
                         bc_loss_fn=pull_to_zero)
    end = float(weight.detach().square().sum())
    assert end < 0.9 * float(start.square().sum())        # only the demo term moved it
    # the logged term is the mean over minibatches of a shrinking ||w||^2
    assert end < metrics["bc_loss"] < float(start.square().sum())
    warmup_start = weight.detach().clone()
    metrics = ppo_update(trainer.policy, trainer.optimizer, batch, config, critic_only=True,
                         critic_params=trainer.critic_params, bc_loss_fn=pull_to_zero)
    assert "bc_loss" not in metrics and torch.equal(weight.detach(), warmup_start)


def test_bc_coef_needs_demos_and_must_be_non_negative(tmp_path):
    with pytest.raises(ValueError, match="bc_coef"):
        PPOConfig(bc_coef=-1.0).validate()
    with pytest.raises(ValueError, match="demo_dataset"):
        _dummy_trainer(tmp_path, bc_coef=1.0)


def test_finetune_demo_dataset_checks_path_and_shapes(demos, tmp_path):
    from maniflow_rl.pipeline.finetune import demo_dataset_for

    dataset, policy = demos
    with pytest.raises(ValueError, match="--demos"):
        demo_dataset_for(policy, None)
    with pytest.raises(ValueError, match="--demos"):
        demo_dataset_for(policy, str(tmp_path / "missing.zarr"))
    path = write_synthetic_dataset(tmp_path / "same.zarr")   # the fixture's layout
    windows = demo_dataset_for(policy, str(path))
    assert len(windows) == len(dataset) and windows.shape_meta == dataset.shape_meta
    other = write_synthetic_dataset(tmp_path / "wide.zarr", num_points=48)
    with pytest.raises(ValueError, match="point_cloud"):
        demo_dataset_for(policy, str(other))
