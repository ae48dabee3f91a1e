"""ManiFlowDSRLTrainer on the synthetic env: it learns (both variants), evaluates with the
actor's mean noise, pre-fills demos, and resumes exactly from its checkpoint + replay file."""

from __future__ import annotations

import json

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
    assert (resumed.global_step, resumed.vector_steps, resumed.gradient_steps,
            resumed.executed_env_steps) == (trainer.global_step, trainer.vector_steps,
                                            trainer.gradient_steps, trainer.executed_env_steps)
    assert 0 < trainer.executed_env_steps <= trainer.global_step
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


def test_alias_noises_split_between_the_actor_and_the_prior(tmp_path):
    trainer = _trainer(tmp_path, "na", num_alias_noises=4, actor_alias_fraction=0.5)
    with torch.no_grad():   # a near-deterministic actor at u = 3: w = 1.5 tanh(3) everywhere
        last = trainer.actor.net[-1]
        last.weight.zero_()
        last.bias[:trainer.actor.noise_dim] = 3.0
        last.bias[trainer.actor.noise_dim:] = -5.0
    obs = {"agent_pos": torch.rand(64, 1, 4)}
    context, features = trainer.steered.features(obs)
    features.requires_grad_(True)   # the demo pre-fill path: no autograd graph may leak out
    noise, action = trainer._aliases(context, features, 64)
    assert noise.shape == (64, 4, 8) and action.shape == (64, 4, 4) and not noise.requires_grad
    actor_part, prior_part = noise[:, :2], noise[:, 2:]
    assert torch.allclose(actor_part, torch.full_like(actor_part, 1.5 * np.tanh(3.0)), atol=0.02)
    assert prior_part.abs().max() <= 1.5   # N(0, I) clipped to the bound
    assert abs(prior_part.mean().item()) < 0.1 and 0.7 < prior_part.std().item() < 1.0
    # each stored action is the frozen policy's chunk for its own noise
    expected = trainer.steered.actions(context.repeat_interleave(4, 0), noise.flatten(0, 1))
    assert torch.allclose(action.flatten(0, 1), trainer.steered.normalized_chunk(expected))


class _PrivilegedRunner:
    """The dummy runner plus a privileged ``full_state`` key (its goal, which the critic may
    read and the actor may not)."""

    def __init__(self, runner):
        self.runner, self.num_envs, self.shape_meta = runner, runner.num_envs, runner.shape_meta

    def _add(self, obs):
        return dict(obs, full_state=np.asarray(self.runner._goals, dtype=np.float32) * 10.0)

    def reset(self, *args, **kwargs):
        return self._add(self.runner.reset(*args, **kwargs))

    def step(self, actions):
        out = dict(self.runner.step(actions))
        out["obs"] = self._add(out["obs"])
        if out.get("final_obs") is not None:
            out["final_obs"] = self._add(out["final_obs"])
        return out

    def __getattr__(self, name):
        return getattr(self.runner, name)


def test_privileged_critic_inputs_reach_the_critics_and_never_the_actor(tmp_path):
    torch.manual_seed(0)
    policy = ManiFlowPointcloudRLPolicy(SHAPE_META, **TINY)
    runner = _PrivilegedRunner(ManiFlowDummyEnvRunner(SHAPE_META, num_envs=4,
                                                      max_episode_steps=10, seed=0))
    trainer = ManiFlowDSRLTrainer(policy, runner, DSRLConfig(
        variant="na", num_envs=4, total_timesteps=160, warmup_steps=40, batch_size=16,
        hidden_dims=(32,), critic_obs_keys=["full_state"], eval_episodes=0,
        save_path=str(tmp_path / "p"), log_interval=5))
    goal_dim = np.asarray(runner.runner._goals).shape[1]
    assert trainer.noise_critic.members[0][0].in_features == trainer.actor_dim + goal_dim + 8
    assert trainer.actor.net[0].in_features == trainer.actor_dim
    trainer.train(progress=False)
    stored = trainer.replay.online["features"][:trainer.replay.size]
    assert stored.shape[1] == trainer.actor_dim + goal_dim
    assert np.abs(stored[:, trainer.actor_dim:]).max() > 0   # the privileged part was recorded
    features = torch.as_tensor(stored[:8])
    changed = features.clone()
    changed[:, trainer.actor_dim:] += 5.0
    with torch.no_grad():   # the actor ignores the privileged part, the critic does not
        assert torch.equal(trainer.actor.mean_noise(trainer.actor_input(features)),
                           trainer.actor.mean_noise(trainer.actor_input(changed)))
        w = torch.zeros(8, 8)
        assert not torch.allclose(trainer.noise_critic(features, w),
                                  trainer.noise_critic(changed, w))


def test_non_finite_losses_skip_the_step_and_repeated_skips_stop_the_run(tmp_path, monkeypatch):
    from maniflow_rl.rl.dsrl import losses
    from maniflow_rl.rl.nonfinite import NonFiniteTrainingError

    trainer = _trainer(tmp_path, "na", total_timesteps=400, warmup_steps=40,
                       max_consecutive_skipped_updates=3)
    trainer.train(num_vector_steps=6, progress=False)   # past warm-up: real updates ran
    before = {k: v.clone() for k, v in trainer.action_critic.state_dict().items()}
    adam_steps = trainer.optimizers["action_critic"].state_dict()["state"][0]["step"].clone()
    real = losses.ensemble_regression_loss
    monkeypatch.setattr(losses, "ensemble_regression_loss",
                        lambda p, t: real(p, t) * float("nan"))
    with pytest.raises(NonFiniteTrainingError, match="3 optimizer steps in a row"):
        trainer.train(num_vector_steps=5, progress=False)
    assert trainer.skipped_updates >= 3
    after = trainer.action_critic.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)   # no step was taken
    assert torch.equal(adam_steps,
                       trainer.optimizers["action_critic"].state_dict()["state"][0]["step"])


def test_a_non_finite_learner_is_never_checkpointed(tmp_path):
    from maniflow_rl.utils.checkpoint import NonFiniteStateError

    trainer = _trainer(tmp_path, "sac", total_timesteps=200, warmup_steps=40)
    trainer.train(progress=False)
    good = trainer.save_checkpoint()
    good_bytes, replay_bytes = good.read_bytes(), (good.parent / "replay.npz").read_bytes()
    with torch.no_grad():
        trainer.actor.net[0].weight[0, 0] = float("nan")
    trainer.vector_steps += 1
    with pytest.raises(NonFiniteStateError, match="actor"):
        trainer.save_checkpoint()
    assert (good.parent / "latest.pt").read_bytes() == good_bytes   # the good files stay
    assert (good.parent / "replay.npz").read_bytes() == replay_bytes
    assert not (good.parent / f"dsrl_{trainer.vector_steps}.pt").exists()


def test_resume_truncates_metrics_written_after_the_checkpoint(tmp_path):
    import json

    trainer = _trainer(tmp_path, "sac", total_timesteps=10**6, warmup_steps=40, log_interval=5)
    trainer.train(num_vector_steps=10, progress=False)
    path = trainer.save_checkpoint()
    saved_step = trainer.global_step
    trainer.train(num_vector_steps=10, progress=False)   # rows the resumed run will redo
    metrics = tmp_path / "sac" / "metrics.jsonl"
    steps = [json.loads(line)["global_step"] for line in metrics.read_text().splitlines()]
    assert max(steps) > saved_step
    resumed = _trainer(tmp_path, "sac", total_timesteps=10**6, warmup_steps=40, log_interval=5)
    resumed.load_checkpoint(path)
    resumed.train(num_vector_steps=5, progress=False)
    steps = [json.loads(line)["global_step"] for line in metrics.read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))   # no step twice


def test_sampled_evaluation_draws_from_the_actor_and_predict_action_stays_deterministic(tmp_path):
    trainer = _trainer(tmp_path, eval_noise="sample")
    obs = {"agent_pos": torch.rand(3, 1, 4)}
    context, features = trainer.steered.features(obs)
    draw = trainer.actor.sample(features, torch.Generator().manual_seed(7))[0]
    expected = trainer.policy.actions_from_noise(context, draw.view(3, 4, 2))["action"]
    got = trainer.steered.predict_action(obs, torch.Generator().manual_seed(7))["action"]
    assert torch.allclose(got, expected)
    other = trainer.steered.predict_action(obs, torch.Generator().manual_seed(8))["action"]
    assert not torch.allclose(got, other)
    # the trainer's predict_action is the mean noise whatever the evaluation mode
    mean = trainer.policy.actions_from_noise(
        context, trainer.actor.mean_noise(features).view(3, 4, 2))["action"]
    assert torch.allclose(trainer.predict_action(obs)["action"], mean)
    with pytest.raises(ValueError, match="eval_noise"):
        DSRLConfig(eval_noise="median").validate()
    with pytest.raises(ValueError, match="auto_alpha"):
        DSRLConfig(actor_regularizer="prior_kl", auto_alpha=True).validate()


def test_residual_latent_adds_a_bounded_residual_to_the_executed_chunk(tmp_path):
    trainer = _trainer(tmp_path, "na", residual_bound=0.2)
    steered = trainer.steered
    assert (steered.noise_dim, steered.residual_dim, steered.latent_dim) == (8, 4, 12)
    shapes = trainer.replay.shapes
    assert shapes["noise"] == (12,) and shapes["alias_noise"] == (4, 12)
    obs = {"agent_pos": torch.rand(256, 1, 4)}
    context, features = steered.features(obs)
    latent, _ = trainer.actor.sample(features, torch.Generator().manual_seed(0))
    assert latent[:, :8].abs().max() <= 1.5 and latent[:, 8:].abs().max() <= 0.2
    assert latent[:, 8:].abs().max() > 0.1          # the residual dims are used, each bounded
    # a(s, z) = unnormalize(normalize(f(s, w)) + r), by hand from the frozen policy's chunk
    frozen = trainer.policy.actions_from_noise(context, latent[:, :8].view(-1, 4, 2))["action"]
    normalizer = trainer.policy.normalizer
    expected = normalizer.unnormalize("action", normalizer.normalize("action", frozen)
                                      + latent[:, 8:].view(-1, 2, 2))
    chunks = steered.chunks(context, latent)
    assert torch.allclose(chunks["action"], expected, atol=1e-6)
    assert torch.allclose(chunks["action_pred"][:, trainer.policy.executed_slice], expected,
                          atol=1e-6)
    # the imitation policy's latents: N(0, I) noise, no residual
    prior = steered.prior_latent(512, torch.Generator().manual_seed(1))
    assert torch.equal(prior[:, 8:], torch.zeros(512, 4)) and 0.8 < prior[:, :8].std() < 1.0
    assert torch.allclose(steered.actions(context[:1].expand(2, -1, -1), prior[:2]),
                          trainer.policy.actions_from_noise(
                              context[:1].expand(2, -1, -1), prior[:2, :8].view(2, 4, 2))["action"])
    # a sampled evaluation draws the noise and takes the residual's mean
    trainer.steered.eval_noise = "sample"
    mean = trainer.actor.mean_noise(features[:3])
    draw = trainer.actor.sample(features[:3], torch.Generator().manual_seed(7))[0]
    got = trainer.steered.predict_action({"agent_pos": obs["agent_pos"][:3]},
                                         torch.Generator().manual_seed(7))["action"]
    expected = steered.actions(context[:3], torch.cat([draw[:, :8], mean[:, 8:]], 1))
    assert torch.allclose(got, expected)
    trainer.steered.eval_noise = "mean"
    # the evaluated policy rebuilt from a checkpoint keeps the residual
    from maniflow_rl.rl.dsrl.steered_policy import steered_policy_from_checkpoint
    payload = torch.load(trainer.save_checkpoint(), weights_only=False)
    rebuilt = steered_policy_from_checkpoint(payload)
    assert rebuilt.residual_bound == 0.2
    assert torch.allclose(rebuilt.predict_action(obs)["action"],
                          trainer.predict_action(obs)["action"])


def test_residual_steering_learns_on_the_dummy_env(tmp_path):
    trainer = _trainer(tmp_path, "na", residual_bound=0.5)
    frozen = _eval_return(trainer.policy)
    trainer.train(progress=False)
    steered = _eval_return(trainer.steered)
    assert steered["mean_return"] > frozen["mean_return"] + 1.5
    assert 0 < trainer.history[-1]["actor/mean_residual_abs"] <= 0.5


def test_residual_config_error():
    with pytest.raises(ValueError, match="residual_bound"):
        DSRLConfig(residual_bound=-0.1).validate()


def test_every_evaluation_gets_a_metrics_row_even_off_the_log_interval(tmp_path):
    # evaluations at vector steps 3 and 6, log rows every 10: the run ends at 7, before the
    # next log row, and neither evaluation may be lost (the last one used to be)
    trainer = _trainer(tmp_path, eval_interval=3, eval_episodes=2, log_interval=10)
    trainer.train(num_vector_steps=7, progress=False)
    rows = [json.loads(line) for line in
            (tmp_path / "sac" / "metrics.jsonl").read_text().splitlines()]
    assert [r["vector_step"] for r in rows if "eval/success_rate" in r] == [3, 6]
