"""ManiFlowDSRLTrainer on the synthetic env: it learns (both variants), evaluates with the
actor's mean noise, pre-fills demos, and resumes exactly from its checkpoint + replay file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maniflow_rl import DSRLConfig, ManiFlowDSRLTrainer, ManiFlowDummyEnvRunner
from maniflow_rl.evaluation.evaluate import evaluate_policy
from maniflow_rl.policy import ManiFlowPointcloudRLPolicy

SHAPE_META = {"obs": {"agent_pos": {"shape": [4]}}, "action": {"shape": [2]}}
TINY = dict(horizon=4, n_action_steps=2, n_obs_steps=1, num_inference_steps=2, n_emb=32,
            n_layer=1, n_head=2)


def _trainer(tmp_path, variant="sac", **overrides):
    torch.manual_seed(0)
    policy = ManiFlowPointcloudRLPolicy(SHAPE_META, **TINY)
    runner = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=4, max_episode_steps=10, seed=0)
    config = dict(variant=variant, num_envs=4, total_timesteps=3000, warmup_steps=200,
                  batch_size=64, hidden_dims=(64, 64), utd_ratio=1.0, log_interval=25, alpha=0.3,
                  eval_interval=10**6, save_interval=10**6, eval_episodes=0,
                  save_path=str(tmp_path / variant), seed=0)
    config.update(overrides)
    return ManiFlowDSRLTrainer(policy, runner, DSRLConfig(**config))


def _eval_return(policy_like, episodes=8):
    runner = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=2, max_episode_steps=10, seed=5)
    return evaluate_policy(policy_like, runner, episodes, seed=123, progress=False)


@pytest.mark.parametrize("variant", ["sac", "na"])
def test_dsrl_steering_beats_the_frozen_policy_on_the_dummy_env(tmp_path, variant):
    trainer = _trainer(tmp_path, variant)
    frozen = _eval_return(trainer.policy)
    trainer.train(progress=False)
    steered = _eval_return(trainer.steered)
    first, last = trainer.history[0], trainer.history[-1]
    # the frozen policy's chunks are far from the goal-dependent target; the steered ones
    # must gain a margin no noise draw of the frozen policy reaches
    assert last["rollout/return_mean"] > first["rollout/return_mean"] + 1.5
    assert steered["mean_return"] > frozen["mean_return"] + 1.5
    assert all(p.grad is None for p in trainer.policy.parameters())   # the policy is frozen
    assert 0 < last["actor/mean_noise_norm"] <= 1.5 * 8 ** 0.5   # |w_i| <= bound, Dw = 8


def test_deterministic_action_is_the_actor_mean_noise_through_the_policy(tmp_path):
    trainer = _trainer(tmp_path)
    obs = {"agent_pos": torch.rand(3, 1, 4)}
    context, features = trainer.steered.features(obs)
    noise = 1.5 * torch.tanh(trainer.actor.distribution(features)[0])
    expected = trainer.policy.actions_from_noise(context, noise.view(3, 4, 2))["action"]
    assert torch.allclose(trainer.predict_action(obs)["action"], expected)
    assert torch.equal(trainer.predict_action(obs)["action"], trainer.predict_action(obs)["action"])


def test_checkpoint_restores_learner_replay_and_counters(tmp_path):
    trainer = _trainer(tmp_path, "na", total_timesteps=800, warmup_steps=80)
    trainer.train(progress=False)
    path = trainer.save_checkpoint()
    resumed = _trainer(tmp_path, "na", total_timesteps=800, warmup_steps=80)
    resumed.load_checkpoint(path)
    assert (resumed.global_step, resumed.vector_steps, resumed.gradient_steps) == (
        trainer.global_step, trainer.vector_steps, trainer.gradient_steps)
    for name, module in trainer._modules().items():
        for a, b in zip(module.state_dict().values(), resumed._modules()[name].state_dict().values()):
            assert torch.equal(a, b)
    assert resumed.replay.size == trainer.replay.size
    np.testing.assert_array_equal(resumed.replay.online["reward"][:resumed.replay.size],
                                  trainer.replay.online["reward"][:trainer.replay.size])
    # both continue from the same state: the next replay batch is the same
    a, b = trainer.replay.sample(8, 0.0), resumed.replay.sample(8, 0.0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    (tmp_path / "na" / "replay.npz").unlink()
    with pytest.raises(FileNotFoundError, match="replay"):
        _trainer(tmp_path, "na").load_checkpoint(path)


def test_bad_config_and_runner_mismatch_fail_before_work(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        DSRLConfig(variant="td3").validate()
    with pytest.raises(ValueError, match="demo_fraction"):
        DSRLConfig(demo_fraction=1.0).validate()
    with pytest.raises(ValueError, match="num_envs"):
        _trainer(tmp_path, num_envs=8)
