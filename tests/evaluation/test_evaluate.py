"""evaluate_policy with a scripted env runner and a fake policy; Wilson intervals; videos."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from maniflow_rl.evaluation import evaluate_policy, save_video, wilson_interval
from maniflow_rl.evaluation.video import PointCloudPanel

OBS_META = {"obs": {"agent_pos": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}


class ScriptedEnvRunner:
    """Env i's episodes draw (length, success) from a per-env RNG seeded by ``seed``.

    Observation ``agent_pos = [env, episode, t]``. Every step logs ``(env, episode, planned
    episode)`` where the policy writes the episode it planned for into ``action[:, 0]``.
    """

    def __init__(self, num_envs, max_len=6, max_episode_steps=None, with_render=False):
        self.num_envs, self.max_len = num_envs, max_len
        if max_episode_steps is not None:
            self.max_episode_steps = max_episode_steps
        self.with_render = with_render
        self.seed([0] * num_envs)

    def seed(self, seeds):
        self.rngs = [np.random.default_rng(s) for s in seeds]

    def _new_episode(self, i):
        self.t[i] = 0
        self.length[i] = self.rngs[i].integers(1, self.max_len + 1)
        self.will_succeed[i] = self.rngs[i].random() < 0.5

    def _obs(self):
        return {"agent_pos": np.stack([np.arange(self.num_envs), self.episode, self.t],
                                      1).astype(np.float32)}

    def reset(self):
        self.episode = np.zeros(self.num_envs, dtype=np.int64)
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self.length = np.zeros(self.num_envs, dtype=np.int64)
        self.will_succeed = np.zeros(self.num_envs, dtype=bool)
        self.finished, self.step_log = [], []
        for i in range(self.num_envs):
            self._new_episode(i)
        return self._obs()

    def step(self, actions):
        assert actions.shape == (self.num_envs, 2)
        for i in range(self.num_envs):
            self.step_log.append((i, int(self.episode[i]), int(round(actions[i, 0]))))
        self.t += 1
        dones = self.t >= self.length
        success = dones & self.will_succeed
        final_obs = self._obs()
        for i in np.flatnonzero(dones):
            self.finished.append({"env": i, "episode": int(self.episode[i]),
                                  "success": bool(success[i]), "length": int(self.t[i])})
            self.episode[i] += 1
            self._new_episode(i)
        return {"obs": self._obs(), "rewards": success.astype(np.float32), "dones": dones,
                "success": success, "final_obs": final_obs}

    def render_rgb(self):
        return np.full((12, 16, 3), 10 * int(self.t[0]) % 255, dtype=np.uint8)


class FakePolicy(nn.Module):
    """Plans ``action[:, :, 0] = episode of the newest frame``; records every observation."""

    def __init__(self, n_obs_steps=2, n_action_steps=3):
        super().__init__()
        self.shape_meta = OBS_META
        self.n_obs_steps, self.n_action_steps, self.horizon = n_obs_steps, n_action_steps, 4
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen = []

    def predict_action(self, obs):
        pos = obs["agent_pos"]
        assert pos.shape[1:] == (self.n_obs_steps, 3)
        self.seen.append(pos.clone())
        action = torch.zeros(pos.shape[0], self.n_action_steps, 2)
        action[:, :, 0] = pos[:, -1, 1:2]
        action[:, :, 1] = torch.randn(pos.shape[0], 1)          # uses the torch RNG
        return {"action": action, "action_pred": action}


def test_counts_each_envs_first_episodes():
    env, policy = ScriptedEnvRunner(num_envs=3), FakePolicy()
    result = evaluate_policy(policy, env, num_episodes=8, seed=7, progress=False)
    quotas = [3, 3, 2]                                           # 8 episodes over 3 envs
    expected = []
    for i, quota in enumerate(quotas):
        expected += [r for r in env.finished if r["env"] == i][:quota]
    got = [{k: r[k] for k in ("env", "episode", "success", "length")}
           for r in result["episodes"]]
    assert got == expected
    assert result["num_episodes"] == 8
    n_success = sum(r["success"] for r in expected)
    assert result["num_successes"] == n_success
    assert result["success_rate"] == pytest.approx(n_success / 8)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(wilson_interval(n_success, 8))
    assert result["mean_length"] == pytest.approx(np.mean([r["length"] for r in expected]))
    assert result["mean_return"] == pytest.approx(n_success / 8)


def test_episode_boundaries_history_and_no_stale_actions():
    env, policy = ScriptedEnvRunner(num_envs=2), FakePolicy(n_obs_steps=2, n_action_steps=3)
    evaluate_policy(policy, env, num_episodes=10, seed=3, progress=False)
    for obs in policy.seen:                                      # [B, To, 3] = (env, ep, t)
        for row in obs.numpy():
            env_id, episode, t = row[-1]
            previous = [env_id, episode, max(t - 1, 0)]          # first frame repeated at t=0
            np.testing.assert_array_equal(row[0], previous)
    quotas = {0: 5, 1: 5}
    for env_id, episode, planned in env.step_log:                # counted episodes only run
        if episode < quotas[env_id]:                             # actions planned for them
            assert planned == episode


def test_reproducible_with_fixed_seed_and_leaves_rng_alone():
    results = []
    for _ in range(2):
        torch.manual_seed(123)
        before = torch.get_rng_state()
        env, policy = ScriptedEnvRunner(num_envs=2), FakePolicy()
        results.append((evaluate_policy(policy, env, 7, seed=11, progress=False), env.step_log,
                        torch.cat(policy.seen)))
        assert torch.equal(torch.get_rng_state(), before)
    (r1, log1, seen1), (r2, log2, seen2) = results
    assert r1["episodes"] == r2["episodes"] and log1 == log2 and torch.equal(seen1, seen2)
    other = evaluate_policy(FakePolicy(), ScriptedEnvRunner(num_envs=2), 7, seed=12,
                            progress=False)
    assert other["episodes"] != r1["episodes"]                   # the seed reaches the envs


def test_max_steps_cuts_episode_as_failure():
    env = ScriptedEnvRunner(num_envs=1, max_len=1)
    env._new_episode = lambda i: (env.t.__setitem__(i, 0), env.length.__setitem__(i, 5),
                                  env.will_succeed.__setitem__(i, True))
    result = evaluate_policy(FakePolicy(), env, num_episodes=2, max_steps=3, progress=False)
    assert [(r["success"], r["length"], r["truncated"]) for r in result["episodes"]] == \
        [(False, 3, True), (False, 3, True)]
    assert result["num_env_steps"] == 5 + 3                      # rest of episode 0 is skipped


def test_video_of_env0(tmp_path):
    env = ScriptedEnvRunner(num_envs=2, with_render=True)
    result = evaluate_policy(FakePolicy(), env, 4, seed=0, video_path=tmp_path / "ev.mp4",
                             num_video_episodes=2, progress=False)
    assert result["video_path"] is not None and (tmp_path / "ev.mp4").exists() or \
        (tmp_path / "ev.gif").exists()
    lengths = [r["length"] for r in result["episodes"] if r["env"] == 0][:2]
    import imageio.v2 as imageio
    frames = imageio.mimread(result["video_path"])
    assert len(frames) == sum(lengths)      # first frame of each episode + all but its last


def test_json_serializable_and_bad_args():
    result = evaluate_policy(FakePolicy(), ScriptedEnvRunner(num_envs=1), 2, progress=False)
    json.dumps(result)
    with pytest.raises(ValueError):
        evaluate_policy(FakePolicy(), ScriptedEnvRunner(num_envs=2), 0, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        evaluate_policy(FakePolicy(), ScriptedEnvRunner(num_envs=2), 2, seeds=[1],
                        progress=False)


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_save_video_gif_and_point_cloud_panel(tmp_path):
    panel = PointCloudPanel(size=64)
    image = panel(np.random.default_rng(0).standard_normal((50, 3)))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    path = save_video([image, np.zeros((3, 64, 64), np.float32)], tmp_path / "v.gif", fps=5)
    assert path.suffix == ".gif" and path.exists()


def test_single_env_runs_no_extra_steps():
    env = ScriptedEnvRunner(num_envs=1)
    result = evaluate_policy(FakePolicy(n_action_steps=4), env, 5, seed=1, progress=False)
    assert result["num_env_steps"] == sum(r["length"] for r in result["episodes"])
