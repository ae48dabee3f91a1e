"""ppo_update's engine details (issue 8): separate actor / critic gradient clipping, the KL
early stop decided before the optimizer steps, and masked samples left out of minibatches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from maniflow_rl import PPOConfig, create_maniflow_ppo_trainer
from maniflow_rl.rl.ppo.update import ppo_update

SMALL_SHAPE_META = {
    "obs": {"point_cloud": {"shape": [64, 3], "type": "point_cloud"},
            "agent_pos": {"shape": [4]}},
    "action": {"shape": [2]},
}
TINY_POLICY = {"horizon": 4, "n_action_steps": 2, "n_obs_steps": 1, "num_inference_steps": 2,
               "n_emb": 32, "n_layer": 1, "n_head": 2, "noise_method": "flow_noise"}


def _trainer(tmp_path, **ppo):
    cfg = dict(total_timesteps=10_000, num_envs=4, num_steps_per_rollout=8, batch_size=32,
               learning_rate=1e-3, critic_learning_rate=1e-3, update_epochs=1,
               save_interval=1000, log_interval=1000, eval_interval=1000, eval_episodes=0,
               save_path=str(tmp_path / "ckpt"), seed=0)
    cfg.update(ppo)
    return create_maniflow_ppo_trainer(shape_meta=SMALL_SHAPE_META, device="cpu", ppo_config=cfg,
                                       advantage_config={"gamma": 0.9},
                                       policy_config=TINY_POLICY)


def _rollout(trainer):
    batch, _ = trainer.collector.collect(trainer.config.num_steps_per_rollout)
    return trainer.advantage_calculator.calculate(batch)


def _critic_gradient(trainer, batch):
    """The critic's gradient of c_v * L_v on the whole batch, computed on its own."""
    from maniflow_rl.rl.losses import value_loss

    data = batch.flatten()
    trainer.policy.zero_grad(set_to_none=True)
    values = trainer.policy.get_value(data["obs"])
    loss = trainer.config.value_coef * value_loss(values, data["values"], data["returns"],
                                                  mask=data["mask"])
    loss.backward()
    grads = [p.grad.detach().clone() for p in trainer.critic_params]
    trainer.policy.zero_grad(set_to_none=True)
    return grads


def test_actor_and_critic_gradient_norms_are_clipped_separately(tmp_path):
    """One minibatch (the whole batch), plain SGD: the critic's step is exactly
    -lr * clip(g_critic, critic_max_grad_norm), whatever the size of the actor's gradient."""
    trainer = _trainer(tmp_path, max_grad_norm=1e-3, critic_max_grad_norm=1e-2)
    batch = _rollout(trainer)
    batch.advantages = batch.advantages * 1e4           # a huge actor gradient
    lr = 10.0   # steps far above float32 rounding of weights near 1
    optimizer = torch.optim.SGD([{"params": trainer.actor_params, "name": "actor"},
                                 {"params": trainer.critic_params, "name": "critic"}], lr=lr)
    g_critic = _critic_gradient(trainer, batch)
    norm = torch.sqrt(sum(g.square().sum() for g in g_critic))
    assert norm > 1e-2                                   # so the critic clip is active
    expected_step = [-lr * g * (1e-2 / norm) for g in g_critic]
    before = [p.detach().clone() for p in trainer.critic_params]
    config = dataclasses.replace(trainer.config, batch_size=batch.num_samples)
    metrics = ppo_update(trainer.policy, optimizer, batch, config,
                         actor_params=trainer.actor_params, critic_params=trainer.critic_params)
    assert metrics["grad_norm"] > 1e-3 and metrics["critic_grad_norm"] == pytest.approx(
        float(norm), rel=1e-4)
    for p, b, e in zip(trainer.critic_params, before, expected_step):
        assert torch.allclose(p.detach() - b, e, rtol=1e-2, atol=2e-6)


class CountingSGD(torch.optim.SGD):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_steps = 0

    def step(self, closure=None):
        self.num_steps += 1
        return super().step(closure)


def test_kl_early_stop_happens_before_stepping_on_the_minibatch_that_exceeded_it(tmp_path):
    trainer = _trainer(tmp_path, batch_size=8, update_epochs=2, target_kl=1e-7,
                       max_grad_norm=1e6)
    batch = _rollout(trainer)
    optimizer = CountingSGD([{"params": trainer.actor_params, "name": "actor"},
                             {"params": trainer.critic_params, "name": "critic"}], lr=0.5)
    metrics = ppo_update(trainer.policy, optimizer, batch, trainer.config,
                         generator=torch.Generator().manual_seed(0))
    # minibatch 1: unchanged weights, KL 0 -> step; minibatch 2: KL > limit -> stop, no step
    assert metrics["kl_early_stop"] == 1.0
    assert optimizer.num_steps == 1
    assert metrics["num_minibatches"] == 1.0


def test_masked_samples_are_not_in_any_minibatch(tmp_path):
    trainer = _trainer(tmp_path, batch_size=8, update_epochs=1)
    batch = _rollout(trainer)
    batch.mask = torch.zeros_like(batch.mask)
    batch.mask[:, 0] = 1.0                                # 8 of 32 samples carry signal
    optimizer = CountingSGD(trainer.policy.parameters(), lr=0.0)
    metrics = ppo_update(trainer.policy, optimizer, batch, trainer.config)
    assert metrics["active_samples"] == 8.0 and optimizer.num_steps == 1
    batch.mask = torch.zeros_like(batch.mask)
    metrics = ppo_update(trainer.policy, optimizer, batch, trainer.config)
    assert metrics["num_minibatches"] == 0.0 and optimizer.num_steps == 1


def test_grad_norm_limits_must_be_positive():
    with pytest.raises(ValueError, match="critic_max_grad_norm"):
        PPOConfig(critic_max_grad_norm=0.0).validate()


def test_denoising_step_diagnostics_by_hand():
    from maniflow_rl.rl.ppo.trainer import denoising_step_diagnostics

    chains = torch.zeros(1, 2, 3, 4, 1)       # [T=1, N=2, K+1=3, H=4, Da=1]
    chains[0, 0, 1] = 1.0                      # chain 0: step 0 moves by 1, step 1 back by 1
    chains[0, 1, 2] = 3.0                      # chain 1: step 1 moves by 3
    inds = torch.tensor([[[0, 0], [1, 1]]])    # stochastic step 0 for chain 0, 1 for chain 1
    out = denoising_step_diagnostics(chains, inds, slice(1, 3))
    assert out["rollout/step_change_k0"] == pytest.approx(0.5)
    assert out["rollout/step_change_k1"] == pytest.approx(2.0)
    assert out["rollout/noisy_step_change_k0"] == pytest.approx(1.0)
    assert out["rollout/noisy_step_change_k1"] == pytest.approx(3.0)
    assert out["rollout/sde_step_mean"] == pytest.approx(0.5)
