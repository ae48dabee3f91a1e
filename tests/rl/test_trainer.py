"""End-to-end tests of the PPO trainer on the synthetic env: learning, checkpoints, resume,
the seed's Quick Start snippets, and errors raised before any work starts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from maniflow_rl import (
    AdvantageConfig,
    ManiFlowDummyEnvRunner,
    ManiFlowPPOTrainer,
    ManiFlowPointcloudRLPolicy,
    PPOConfig,
    create_maniflow_ppo_trainer,
)
from maniflow_rl.envs.dummy import SEED_SHAPE_META
from maniflow_rl.utils.checkpoint import CheckpointError

SMALL_SHAPE_META = {
    "obs": {
        "point_cloud": {"shape": [64, 3], "type": "point_cloud"},
        "agent_pos": {"shape": [4]},
    },
    "action": {"shape": [2]},
}
TINY_POLICY = {"horizon": 4, "n_action_steps": 2, "n_obs_steps": 1, "num_inference_steps": 2,
               "n_emb": 32, "n_layer": 1, "n_head": 2}


def _tiny_ppo(tmp_path, **overrides):
    cfg = dict(total_timesteps=10_000, num_envs=4, num_steps_per_rollout=8, batch_size=16,
               learning_rate=1e-3, critic_learning_rate=3e-3, update_epochs=2, save_interval=1000,
               log_interval=1000, eval_interval=1000, eval_episodes=0,
               save_path=str(tmp_path / "ckpt"), seed=0)
    cfg.update(overrides)
    return cfg


def _dummy_trainer(tmp_path, noise_method="flow_noise", **ppo_overrides):
    return create_maniflow_ppo_trainer(
        shape_meta=SMALL_SHAPE_META, device="cpu",
        ppo_config=_tiny_ppo(tmp_path, **ppo_overrides),
        advantage_config={"gamma": 0.9, "gae_lambda": 0.9},
        policy_config={**TINY_POLICY, "noise_method": noise_method},
    )


def _mean_return(trainer, iterations=3):
    """Mean reward per decision point of a few rollouts with the current policy (no update)."""
    rewards = []
    with torch.no_grad():
        for _ in range(iterations):
            batch, _ = trainer.collector.collect(trainer.config.num_steps_per_rollout)
            rewards.append(float(batch.rewards.mean()))
    return float(np.mean(rewards))


@pytest.mark.parametrize("noise_method", ["flow_noise", "flow_sde"])
def test_ppo_improves_dummy_env_return(tmp_path, noise_method):
    torch.manual_seed(0)
    trainer = _dummy_trainer(tmp_path, noise_method=noise_method)
    before = _mean_return(trainer)
    trainer.train(num_iterations=25, progress=False)
    after = _mean_return(trainer)
    rewards_first = np.mean([h["rollout/reward_per_decision"] for h in trainer.history[:3]])
    rewards_last = np.mean([h["rollout/reward_per_decision"] for h in trainer.history[-3:]])
    # a clear margin: the reward per decision point rises by > 0.15 (rewards lie in [-1, 1])
    assert after - before > 0.15, (before, after)
    assert rewards_last > rewards_first
    for key in ("train/approx_kl", "train/clipfrac", "train/explained_variance", "perf/sps"):
        assert key in trainer.history[-1]


def test_checkpoint_resume_continues_identically(tmp_path):
    trainer = _dummy_trainer(tmp_path)
    trainer.train(num_iterations=2, progress=False)
    path = trainer.save_checkpoint(tmp_path / "mid.pt")
    saved_state = {k: v.clone() for k, v in trainer.policy.state_dict().items()}

    resumed = _dummy_trainer(tmp_path)
    resumed.load_checkpoint(path)
    assert resumed.iteration == 2 and resumed.global_step == trainer.global_step
    assert resumed.executed_env_steps == trainer.executed_env_steps
    assert 0 < trainer.executed_env_steps <= trainer.global_step
    assert trainer.history[-1]["executed_env_steps"] == trainer.executed_env_steps
    for key, value in resumed.policy.state_dict().items():
        torch.testing.assert_close(value, saved_state[key], rtol=0, atol=0)
    opt_a, opt_b = trainer.optimizer.state_dict(), resumed.optimizer.state_dict()
    for pid, state in opt_a["state"].items():
        for name, tensor in state.items():
            torch.testing.assert_close(opt_b["state"][pid][name], tensor, rtol=0, atol=0)
    resumed.train(num_iterations=1, progress=False)
    assert resumed.iteration == 3
    assert resumed.history[-1]["global_step"] == resumed.global_step


def test_checkpoint_written_atomically_at_save_interval(tmp_path):
    trainer = _dummy_trainer(tmp_path, save_interval=1)
    trainer.train(num_iterations=2, progress=False)
    ckpt_dir = tmp_path / "ckpt"
    assert (ckpt_dir / "checkpoint_1.pt").is_file() and (ckpt_dir / "latest.pt").is_file()
    assert not list(ckpt_dir.glob("*.tmp")), "temporary files must be renamed away"


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    trainer = _dummy_trainer(tmp_path)
    path = trainer.save_checkpoint(tmp_path / "good.pt")
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        trainer.load_checkpoint(tmp_path / "truncated.pt")
    with pytest.raises(CheckpointError, match="not found"):
        trainer.load_checkpoint(tmp_path / "missing.pt")


def test_batch_size_not_fitting_rollout_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        _dummy_trainer(tmp_path, batch_size=33)
    with pytest.raises(ValueError, match="batch_size"):
        _dummy_trainer(tmp_path, batch_size=64)


def test_unknown_advantage_type_and_config_fields_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="advantage_type"):
        create_maniflow_ppo_trainer(SMALL_SHAPE_META, ppo_config=_tiny_ppo(tmp_path),
                                    advantage_config={"advantage_type": "td-lambda"},
                                    policy_config=TINY_POLICY)
    with pytest.raises(ValueError, match="bogus"):
        create_maniflow_ppo_trainer(SMALL_SHAPE_META, ppo_config={"bogus": 1},
                                    policy_config=TINY_POLICY)


def test_critic_warmup_freezes_actor(tmp_path):
    trainer = _dummy_trainer(tmp_path, critic_warmup_iterations=1)
    actor_before = [p.detach().clone() for p in trainer.actor_params]
    critic_before = [p.detach().clone() for p in trainer.critic_params]
    trainer.train(num_iterations=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(actor_before, trainer.actor_params))
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, trainer.critic_params))




def test_quick_start_basic(tmp_path, monkeypatch):
    """The seed's 'Basic Training' snippet (device='cuda' falls back to CPU), tiny budget."""
    monkeypatch.chdir(tmp_path)
    trainer = create_maniflow_ppo_trainer(shape_meta=SEED_SHAPE_META, device="cuda",
                                          ppo_config={"total_timesteps": 64, "num_envs": 2,
                                                      "num_steps_per_rollout": 2, "batch_size": 4},
                                          policy_config={"num_inference_steps": 2})
    assert isinstance(trainer.env_runner, ManiFlowDummyEnvRunner)
    history = trainer.train(progress=False)
    assert trainer.global_step >= 64 and len(history) == trainer.num_iterations
    assert (tmp_path / "checkpoints" / "maniflow_ppo" / "latest.pt").is_file()


def test_quick_start_custom_configuration(tmp_path):
    """The seed's 'Custom Configuration' snippet: configs passed as ``__dict__``."""
    ppo_config = PPOConfig(total_timesteps=1000000, num_envs=16, num_steps_per_rollout=256,
                           batch_size=1024, learning_rate=3e-4, clip_range=0.2, entropy_coef=0.01,
                           wandb_project=None, save_path=str(tmp_path / "ck"))
    advantage_config = AdvantageConfig(gamma=0.99, gae_lambda=0.95, advantage_type="gae",
                                       normalize_advantages=True)
    small = dataclasses.replace(ppo_config, num_envs=2, num_steps_per_rollout=2, batch_size=4,
                                total_timesteps=32)
    trainer = create_maniflow_ppo_trainer(shape_meta=SMALL_SHAPE_META,
                                          ppo_config=small.__dict__,
                                          advantage_config=advantage_config.__dict__,
                                          policy_config=TINY_POLICY, device="cpu")
    assert trainer.config.entropy_coef == 0.01 and trainer.advantage_config.gae_lambda == 0.95
    trainer.train(progress=False)
    assert trainer.iteration == trainer.num_iterations
    # 'With Real Environments': the trainer built directly from a policy and an env runner
    policy = ManiFlowPointcloudRLPolicy(SMALL_SHAPE_META, **TINY_POLICY)
    env_runner = ManiFlowDummyEnvRunner(SMALL_SHAPE_META, num_envs=2)
    direct = ManiFlowPPOTrainer(policy=policy, env_runner=env_runner, config=small,
                                advantage_config=advantage_config)
    direct.train(num_iterations=1, progress=False)
    assert direct.iteration == 1


def test_scheduled_evaluation_is_deterministic_and_logged(tmp_path):
    trainer = _dummy_trainer(tmp_path, eval_interval=1, eval_episodes=4)
    trainer.train(num_iterations=1, progress=False)
    first = trainer.history[-1]
    assert first["eval/num_episodes"] == 4 and 0.0 <= first["eval/success_rate"] <= 1.0
    again = trainer.evaluate(4)
    # same seeds, no sampling noise, unchanged weights -> the same episodes
    assert again["mean_return"] == pytest.approx(first["eval/mean_return"], abs=1e-6)


def test_flow_sde_update_logs_per_denoising_step_kl_and_sigma(tmp_path):
    trainer = _dummy_trainer(tmp_path, noise_method="flow_sde")
    trainer.train(num_iterations=1, progress=False)
    metrics = trainer.history[-1]
    per_step = [k for k in metrics if k.startswith("train/approx_kl_step")]
    assert per_step and all(metrics[k] >= 0 for k in per_step)
    assert {int(k.rsplit("step", 1)[1]) for k in per_step} <= {0, 1}  # K = 2 steps
    noise_trainer = _dummy_trainer(tmp_path, noise_method="flow_noise")
    noise_trainer.train(num_iterations=1, progress=False)
    sigma = noise_trainer.history[-1]["train/sigma_geometric_mean"]
    assert 0.08 <= sigma <= 0.16  # flow_noise keeps every sigma in [sigma_min, sigma_max]
    assert not any(k.startswith("train/approx_kl_step") for k in noise_trainer.history[-1])
