"""ManiFlowDummyEnvRunner, the env-runner validation helpers and GymVectorEnvRunner."""

import gymnasium
import numpy as np
import pytest

from maniflow_rl.envs import (
    EnvRunner,
    GymVectorEnvRunner,
    ManiFlowDummyEnvRunner,
    normalize_step_output,
    validate_obs_dict,
    validate_step_output,
)

SHAPE_META = {"obs": {"point_cloud": {"shape": [64, 6], "type": "point_cloud"},
                      "image": {"shape": [3, 12, 10], "type": "rgb", "dtype": "uint8"},
                      "agent_pos": {"shape": [7]}},
              "action": {"shape": [4]}}


def rollout(env, actions_seq):
    outs = [env.reset()]
    for actions in actions_seq:
        outs.append(env.step(actions))
    return outs


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- dummy env
def test_dummy_obs_shapes_dtypes_and_interface():
    env = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=3)
    assert isinstance(env, EnvRunner)
    obs = env.reset()
    validate_obs_dict(obs, SHAPE_META, num_envs=3)
    assert obs["image"].dtype == np.uint8 and obs["point_cloud"].dtype == np.float32
    float_meta = {"obs": {"image": {"shape": [3, 8, 8], "type": "rgb"}}, "action": {"shape": [2]}}
    image = ManiFlowDummyEnvRunner(float_meta, num_envs=2).reset()["image"]
    assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
    out = env.step(np.zeros((3, 4)))
    validate_step_output(out, 3)
    assert out["rewards"].dtype == np.float32 and out["dones"].dtype == bool


def test_dummy_reproducible_with_seed():
    actions = [np.random.default_rng(1).uniform(-1, 1, (2, 4)) for _ in range(5)]
    first = rollout(ManiFlowDummyEnvRunner(SHAPE_META, num_envs=2, max_episode_steps=3, seed=7),
                    actions)
    second = rollout(ManiFlowDummyEnvRunner(SHAPE_META, num_envs=2, max_episode_steps=3, seed=7),
                     actions)
    assert_same(first, second)
    other = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=2, seed=8).reset()
    assert not np.array_equal(other["agent_pos"], first[0]["agent_pos"])
    env = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=2, seed=0)
    again = env.reset(seed=7)
    assert_same(again, first[0])


def test_dummy_truncation_auto_reset_and_final_obs():
    env = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=2, max_episode_steps=3, obs_noise=0.0)
    obs = env.reset()
    goals = obs["agent_pos"][:, :3].copy()
    for _ in range(2):
        out = env.step(np.zeros((2, 4)))
        assert not out["dones"].any()
    out = env.step(np.zeros((2, 4)))
    assert out["dones"].all() and out["truncated"].all()
    np.testing.assert_allclose(out["final_obs"]["agent_pos"][:, :3], goals)   # old episode
    assert not np.allclose(out["obs"]["agent_pos"][:, :3], goals)            # new episode
    assert not env.step(np.zeros((2, 4)))["dones"].any()


def test_dummy_holds_envs_outside_the_active_mask():
    env = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=2, max_episode_steps=3, obs_noise=0.01)
    obs = env.reset()
    for _ in range(4):   # env 1 held for longer than an episode: it neither moves nor ends
        out = env.step(env.expert_actions(), active=np.array([True, False]))
        for key in obs:
            np.testing.assert_array_equal(out["obs"][key][1], obs[key][1])
        assert out["rewards"][1] == 0 and not out["dones"][1] and not out["success"][1]
        assert out["rewards"][0] > 0.9
    assert env._elapsed[1] == 0
    dones = [env.step(np.zeros((2, 4)))["dones"][1] for _ in range(3)]
    assert dones == [False, False, True]   # its 3 real steps


def test_dummy_optimal_beats_random_and_termination_on_success():
    env = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=16, terminate_on_success=True)
    env.reset()
    rng = np.random.default_rng(0)
    random_reward = np.mean([env.step(rng.uniform(-1, 1, (16, 4)))["rewards"] for _ in range(5)])
    out = env.step(env.expert_actions())
    assert out["rewards"].min() > 0.999 and out["success"].all()
    assert out["dones"].all() and not out["truncated"].any()
    assert random_reward < 0.75


def test_dummy_target_is_visible_in_every_modality():
    env = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=4, obs_noise=0.0)
    obs = env.reset()
    goals = obs["agent_pos"][:, :3]
    np.testing.assert_allclose(obs["point_cloud"][:, :, :3].mean(1), goals, atol=0.05)
    np.testing.assert_allclose(obs["point_cloud"][:, 0, 3:], (goals + 1) / 2, atol=1e-6)
    np.testing.assert_allclose(env.expert_actions(), goals @ env.target_matrix.T, atol=1e-6)


def test_dummy_groups_share_goals_and_shape_meta_validation():
    env = ManiFlowDummyEnvRunner({"obs": {"s": {"shape": [3]}}, "action": {"shape": [2]}},
                                 num_envs=4, group_size=2, obs_noise=0.0)
    s = env.reset()["s"]
    np.testing.assert_array_equal(s[0], s[1])
    assert not np.array_equal(s[0], s[2])
    bad_metas = [
        {"obs": {"pc": {"shape": [64, 4], "type": "point_cloud"}}, "action": {"shape": [2]}},
        {"obs": {"img": {"shape": [8, 8, 3], "type": "rgb"}}, "action": {"shape": [2]}},
        {"obs": {"s": {"shape": [3]}}, "action": {"shape": [2, 2]}},
        {"obs": {}, "action": {"shape": [2]}},
    ]
    for meta in bad_metas:
        with pytest.raises(ValueError):
            ManiFlowDummyEnvRunner(meta)
    with pytest.raises(ValueError, match="actions must have shape"):
        ManiFlowDummyEnvRunner(SHAPE_META, num_envs=2).step(np.zeros((2, 3)))


# ---------------------------------------------------------------- validation helpers
def test_validation_helpers_give_clear_errors():
    obs = {"agent_pos": np.zeros((2, 7))}
    with pytest.raises(ValueError, match="missing key 'point_cloud'"):
        validate_obs_dict(obs, SHAPE_META, num_envs=2)
    meta = {"obs": {"agent_pos": {"shape": [7]}}, "action": {"shape": [1]}}
    with pytest.raises(ValueError, match=r"\['agent_pos'\] has shape \(2, 7\), expected \(3, 7\)"):
        validate_obs_dict(obs, meta, num_envs=3)
    validate_obs_dict({"agent_pos": np.zeros((2, 5, 7))}, meta, leading_dims=(2, None))
    good = {"obs": obs, "rewards": np.zeros(2), "dones": np.array([True, False])}
    with pytest.raises(ValueError, match="missing keys \\['dones'\\]"):
        validate_step_output({"obs": obs, "rewards": np.zeros(2)}, 2)
    with pytest.raises(ValueError, match="'rewards' has shape \\(3,\\)"):
        validate_step_output({**good, "rewards": np.zeros(3)}, 2)
    with pytest.raises(ValueError, match="truncated=True where dones=False"):
        validate_step_output({**good, "truncated": np.array([False, True])}, 2)
    step = normalize_step_output(good, 2)
    assert step.truncated.tolist() == [False, False] and step.success.tolist() == [False, False]
    assert step.final_obs["agent_pos"] is obs["agent_pos"] and step.rewards.dtype == np.float32


# ---------------------------------------------------------------- gymnasium adapter
class CounterEnv(gymnasium.Env):
    """obs = [step count, env id]; reward = step count; terminates after ``terminate_after``."""

    def __init__(self, env_id, terminate_after):
        self.env_id, self.terminate_after = env_id, terminate_after
        self.observation_space = gymnasium.spaces.Box(-100, 100, (2,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1, 1, (1,), np.float32)

    def _obs(self):
        return np.array([self.t, self.env_id], np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.t >= self.terminate_after
        return self._obs(), float(self.t), terminated, False, {"success": terminated}


def make_vector_env(mode=gymnasium.vector.AutoresetMode.SAME_STEP):
    fns = [lambda: CounterEnv(0, terminate_after=2),
           lambda: gymnasium.wrappers.TimeLimit(CounterEnv(1, terminate_after=99), 3)]
    return gymnasium.vector.SyncVectorEnv(fns, autoreset_mode=mode)


def test_gym_adapter_same_step_autoreset_and_final_obs():
    runner = GymVectorEnvRunner(make_vector_env())
    assert isinstance(runner, EnvRunner) and runner.num_envs == 2
    obs = runner.reset(seed=0)
    assert obs["obs"].tolist() == [[0, 0], [0, 1]]
    runner.step(np.zeros((2, 1)))
    out = runner.step(np.zeros((2, 1)))     # env 0 terminates (success) and resets now
    validate_step_output(out, 2)
    assert out["dones"].tolist() == [True, False] and out["truncated"].tolist() == [False, False]
    assert out["success"].tolist() == [True, False]
    assert out["obs"]["obs"].tolist() == [[0, 0], [2, 1]]
    assert out["final_obs"]["obs"][0].tolist() == [2, 0]
    assert out["rewards"].tolist() == [2.0, 2.0]
    out = runner.step(np.zeros((2, 1)))     # env 1 hits its time limit
    assert out["dones"].tolist() == [False, True] and out["truncated"].tolist() == [False, True]
    assert out["obs"]["obs"].tolist() == [[1, 0], [0, 1]]
    assert out["final_obs"]["obs"][1].tolist() == [3, 1]
    runner.close()


def test_gym_adapter_rejects_next_step_mode_and_maps_dict_keys():
    with pytest.raises(ValueError, match="SAME_STEP"):
        GymVectorEnvRunner(make_vector_env(gymnasium.vector.AutoresetMode.NEXT_STEP))
    renamed = GymVectorEnvRunner(make_vector_env(), obs_key_map={"obs": "agent_pos"})
    assert set(renamed.reset()) == {"agent_pos"}

    class DictEnv(CounterEnv):
        def __init__(self):
            super().__init__(0, terminate_after=1)
            self.observation_space = gymnasium.spaces.Dict(
                {"pos": gymnasium.spaces.Box(-100, 100, (2,), np.float32)})

        def _obs(self):
            return {"pos": super()._obs()}

    vec = gymnasium.vector.SyncVectorEnv([DictEnv, DictEnv],
                                         autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    runner = GymVectorEnvRunner(vec, obs_key_map={"pos": "agent_pos"})
    assert runner.reset()["agent_pos"].shape == (2, 2)
    out = runner.step(np.zeros((2, 1)))
    assert out["dones"].all() and out["final_obs"]["agent_pos"][:, 0].tolist() == [1, 1]
    assert out["obs"]["agent_pos"][:, 0].tolist() == [0, 0]
