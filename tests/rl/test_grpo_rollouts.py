"""GRPO rollouts (issue 8, defect 1): every rollout is one fresh episode per env, the envs of
a group attempt the same layout, finished envs idle (masked), resume continues the seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maniflow_rl import ManiFlowDummyEnvRunner, ManiFlowPPOTrainer, ManiFlowPointcloudRLPolicy
from maniflow_rl.rl.advantages import AdvantageConfig
from maniflow_rl.rl.rollout_collector import ManiFlowRolloutCollector, group_layout_seeds

SHAPE_META = {"obs": {"agent_pos": {"shape": [4]}}, "action": {"shape": [2]}}
TINY_POLICY = dict(horizon=4, n_action_steps=2, n_obs_steps=1, num_inference_steps=2, n_emb=32,
                   n_layer=1, n_head=2)


def _policy():
    torch.manual_seed(0)
    return ManiFlowPointcloudRLPolicy(SHAPE_META, **TINY_POLICY)


class RecordingRunner(ManiFlowDummyEnvRunner):
    """The dummy runner, recording every seed() call and the goals drawn by each reset()."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed_calls, self.reset_goals = [], []

    def seed(self, seeds):
        self.seed_calls.append(list(seeds))
        super().seed(seeds)

    def reset(self, seed=None):
        obs = super().reset(seed)
        self.reset_goals.append(self._goals.copy())
        return obs


class ScriptedEndsRunner:
    """Env i's episode ends (terminates) after ``ends[i]`` steps with reward ``i % 2``; the
    runner auto-resets as the interface requires."""

    max_episode_steps = 8

    def __init__(self, ends):
        self.ends, self.num_envs = np.asarray(ends), len(ends)
        self.elapsed = np.zeros(self.num_envs, int)

    def seed(self, seeds):
        pass

    def reset(self):
        self.elapsed[:] = 0
        return {"agent_pos": np.zeros((self.num_envs, 4), np.float32)}

    def step(self, actions):
        self.elapsed += 1
        dones = self.elapsed == self.ends
        rewards = np.where(dones, np.arange(self.num_envs) % 2, 0).astype(np.float32)
        self.elapsed[dones] = 0
        obs = {"agent_pos": np.zeros((self.num_envs, 4), np.float32)}
        return {"obs": obs, "rewards": rewards, "dones": dones, "success": rewards > 0}


def _grpo_trainer(tmp_path, runner, **ppo):
    config = dict(total_timesteps=10_000, num_envs=runner.num_envs, num_steps_per_rollout=4,
                  batch_size=4, update_epochs=1, eval_episodes=0, save_interval=1000,
                  log_interval=1000, eval_interval=1000, save_path=str(tmp_path / "ckpt"), seed=7)
    config.update(ppo)
    return ManiFlowPPOTrainer(_policy(), runner, config,
                              AdvantageConfig(advantage_type="grpo", group_size=2))


def test_group_layout_seeds_equal_in_groups_new_per_rollout():
    a, b = group_layout_seeds(3, 0, 6, 2), group_layout_seeds(3, 1, 6, 2)
    assert a[0] == a[1] and a[2] == a[3] and a[4] == a[5]
    assert len({a[0], a[2], a[4]}) == 3 and not set(a) & set(b)
    assert group_layout_seeds(3, 0, 6, 2) == a                     # a pure function
    with pytest.raises(ValueError, match="multiple"):
        group_layout_seeds(3, 0, 5, 2)


def test_every_grpo_rollout_reseeds_and_groups_share_their_layout(tmp_path):
    runner = RecordingRunner(SHAPE_META, num_envs=4, max_episode_steps=8)
    trainer = _grpo_trainer(tmp_path, runner)
    trainer.train(num_iterations=3, progress=False)
    assert len(runner.seed_calls) == 3 and len(runner.reset_goals) == 3   # one each per rollout
    for it, (seeds, goals) in enumerate(zip(runner.seed_calls, runner.reset_goals)):
        assert seeds == group_layout_seeds(7, it, 4, 2)
        np.testing.assert_array_equal(goals[0], goals[1])
        np.testing.assert_array_equal(goals[2], goals[3])
        assert not np.array_equal(goals[1], goals[2])
    assert not np.array_equal(runner.reset_goals[0], runner.reset_goals[1])
    # every rollout counted exactly one episode per env: its full 8-step attempt
    assert trainer.history[-1]["rollout/num_episodes"] == 4
    assert trainer.history[-1]["rollout/episode_length"] == 8


def test_finished_envs_idle_until_the_rollout_ends():
    runner = ScriptedEndsRunner(ends=[2, 4, 6, 8])       # chunks of 2 steps: done at t = 0..3
    collector = ManiFlowRolloutCollector(_policy(), runner, group_size=2)
    batch, stats = collector.collect(4, fresh_episodes=True)
    expected_mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])
    np.testing.assert_array_equal(batch.mask.numpy(), expected_mask)
    np.testing.assert_array_equal(batch.dones.numpy(), np.eye(4))   # one done per env
    # env 0 ended at t=0 and restarted; its second episode (also 2 steps) is not counted
    np.testing.assert_array_equal(batch.rewards.numpy(), np.diag([0, 1, 0, 1]))
    assert sorted(stats["episode_lengths"]) == [2, 4, 6, 8] and stats["num_episodes"] == 4
    assert stats["active_env_steps"] == 2 + 4 + 6 + 8 and stats["env_steps"] == 32
    # GRPO on it: groups {0, 1} and {2, 3} each hold one success and one failure
    from maniflow_rl.rl.advantages import ManiFlowAdvantageCalculator

    for complete_only in (True, False):
        out = ManiFlowAdvantageCalculator(AdvantageConfig(
            advantage_type="grpo", group_size=2, normalize_advantages=False,
            grpo_complete_episodes_only=complete_only)).calculate(
            collector.collect(4, fresh_episodes=True)[0])
        np.testing.assert_array_equal(out.mask.numpy(), expected_mask)
        adv = out.advantages.numpy()
        assert np.allclose(adv[expected_mask == 1],
                           np.where(np.nonzero(expected_mask)[1] % 2, 1.0, -1.0), atol=1e-4)


def test_resume_continues_the_layout_sequence(tmp_path):
    runner = RecordingRunner(SHAPE_META, num_envs=4, max_episode_steps=8)
    trainer = _grpo_trainer(tmp_path, runner)
    trainer.train(num_iterations=2, progress=False)
    path = trainer.save_checkpoint()
    resumed_runner = RecordingRunner(SHAPE_META, num_envs=4, max_episode_steps=8)
    resumed = _grpo_trainer(tmp_path, resumed_runner)
    resumed.load_checkpoint(path)
    resumed.train(num_iterations=1, progress=False)
    assert resumed_runner.seed_calls == [group_layout_seeds(7, 2, 4, 2)]
    assert resumed_runner.seed_calls[0] not in runner.seed_calls


def test_grpo_setup_errors_are_clear(tmp_path):
    class NoSeed(ScriptedEndsRunner):
        seed = None

    with pytest.raises(ValueError, match="seed"):
        _grpo_trainer(tmp_path, NoSeed([8, 8, 8, 8]))
    with pytest.raises(ValueError, match="num_steps_per_rollout=4"):
        _grpo_trainer(tmp_path, ScriptedEndsRunner([8, 8, 8, 8]), num_steps_per_rollout=8,
                      batch_size=8)


def test_metaworld_groups_seeded_alike_start_on_the_same_layout():
    pytest.importorskip("metaworld")
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner

    with MetaWorldEnvRunner("pick-place", num_envs=4, seed=0, num_workers=0,
                            point_cloud_source="geometry", num_points=64) as runner:
        runner.seed(group_layout_seeds(0, 5, 4, 2))
        cloud = runner.reset()["point_cloud"]
    np.testing.assert_array_equal(cloud[0], cloud[1])
    np.testing.assert_array_equal(cloud[2], cloud[3])
    assert not np.array_equal(cloud[1], cloud[2])
