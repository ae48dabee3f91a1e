"""MetaWorldPointCloudEnv semantics and the task registry."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pickle  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from maniflow_rl.envs.metaworld import tasks  # noqa: E402

pytest.importorskip("metaworld")
mujoco = pytest.importorskip("mujoco")

from maniflow_rl.envs.metaworld.env import (  # noqa: E402
    MetaWorldPointCloudEnv,
    RenderingUnavailableError,
)


# ---------------------------------------------------------------- task registry
def test_registry_matches_installed_metaworld():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    assert set(tasks.METAWORLD_V3_TASKS) == set(ALL_V3_ENVIRONMENTS) == set(ENV_POLICY_MAP)
    sizes = {g: len(ts) for g, ts in tasks.TASKS_BY_DIFFICULTY.items()}
    assert sizes == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    assert len(tasks.list_tasks()) == 50 and tasks.list_tasks("hard")[0].startswith("metaworld/")


@pytest.mark.parametrize("name", ["metaworld/pick-place-v3", "pick-place-v3", "pick-place",
                                  "Pick_Place", "metaworld/pick-place"])
def test_task_spellings(name):
    assert tasks.resolve_task(name) == "pick-place-v3"
    assert tasks.registry_name(name) == "metaworld/pick-place-v3"
    assert tasks.task_difficulty(name) == "hard"


def test_unknown_task_suggests_close_names():
    with pytest.raises(ValueError, match=r"Did you mean: .*metaworld/pick-place-v3"):
        tasks.resolve_task("metaworld/pick-plce-v3")
    with pytest.raises(ValueError, match="Unknown MetaWorld task"):
        MetaWorldPointCloudEnv("fly-to-the-moon")


# ---------------------------------------------------------------- observations
def test_camera_obs_shapes_dtypes_and_rgb():
    env = MetaWorldPointCloudEnv("reach", use_rgb_points=True, use_image=True, num_points=128,
                                 camera_size=64)
    obs, _ = env.reset(seed=0)
    assert obs["point_cloud"].shape == (128, 6) and obs["point_cloud"].dtype == np.float32
    assert obs["agent_pos"].shape == (9,) and obs["agent_pos"].dtype == np.float32
    assert obs["image"].shape == (3, 64, 64) and obs["image"].dtype == np.uint8
    assert env.observation_space.contains(obs)
    colors = obs["point_cloud"][:, 3:]
    assert colors.min() >= 0 and colors.max() <= 1 and colors.std() > 0.01
    np.testing.assert_allclose(obs["agent_pos"][:3], env.raw_obs[:3], atol=1e-6)  # hand xyz
    assert env.shape_meta == {"obs": {"point_cloud": {"shape": [128, 6], "type": "point_cloud"},
                                      "agent_pos": {"shape": [9], "type": "low_dim"},
                                      "image": {"shape": [3, 64, 64], "type": "rgb"}},
                              "action": {"shape": [4]}}
    frame = env.render_rgb(80, 60)
    assert frame.shape == (60, 80, 3) and frame.dtype == np.uint8 and frame.std() > 5
    assert env.raw_obs.shape == (39,)
    action = env.expert_action()
    assert action.shape == (4,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
    env.close()


def test_hand_gripper_agent_pos_and_bad_args():
    env = MetaWorldPointCloudEnv("reach", point_cloud_source="geometry", agent_pos="hand_gripper")
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs["agent_pos"], env.raw_obs[:4].astype(np.float32))
    with pytest.raises(ValueError, match="unknown camera"):
        MetaWorldPointCloudEnv("reach", camera="nope")
    with pytest.raises(ValueError, match="point_cloud_source"):
        MetaWorldPointCloudEnv("reach", point_cloud_source="lidar")


# ---------------------------------------------------------------- seeding
def test_seeded_reset_is_reproducible_and_covers_variations():
    a = MetaWorldPointCloudEnv("pick-place", point_cloud_source="geometry", num_points=64)
    b = MetaWorldPointCloudEnv("pick-place", point_cloud_source="geometry", num_points=64)
    obs_a, _ = a.reset(seed=11)
    obs_b, _ = b.reset(seed=11)
    np.testing.assert_array_equal(a.raw_obs, b.raw_obs)
    np.testing.assert_array_equal(obs_a["point_cloud"], obs_b["point_cloud"])
    a.step(np.ones(4))
    a.reset(seed=11)  # same seed again after stepping: same layout
    np.testing.assert_array_equal(a.raw_obs, b.raw_obs)
    layouts = []
    for seed in range(6):
        a.reset(seed=seed)
        layouts.append(np.concatenate([a.raw_obs[4:7], a.raw_obs[-3:]]))  # object + goal
    layouts = np.array(layouts)
    assert len(np.unique(layouts.round(6), axis=0)) == 6
    low, high = a._mw._random_reset_space.low, a._mw._random_reset_space.high
    assert np.all(layouts[:, :2] >= low[:2] - 1e-6) and np.all(layouts[:, :2] <= high[:2] + 1e-6)


# ---------------------------------------------------------------- rewards and episode ends
def test_success_terminates_with_sparse_reward():
    env = MetaWorldPointCloudEnv("reach", point_cloud_source="geometry", num_points=64)
    env.reset(seed=1)
    rewards = []
    for _ in range(200):
        _, reward, terminated, truncated, info = env.step(env.expert_action())
        rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated and not truncated and info["success"]
    assert rewards[-1] == 1.0 and set(rewards[:-1]) <= {0.0}


def test_no_termination_and_dense_reward():
    env = MetaWorldPointCloudEnv("reach", point_cloud_source="geometry", num_points=64,
                                 reward_type="dense", terminate_on_success=False,
                                 max_episode_steps=60)
    env.reset(seed=1)
    successes, rewards = [], []
    for _ in range(60):
        _, reward, terminated, truncated, info = env.step(env.expert_action())
        assert not terminated
        successes.append(info["success"])
        rewards.append(reward)
        assert reward == info["dense_reward"]
    assert truncated and sum(successes) >= 2  # success persists, the episode goes on
    assert 0 <= min(rewards) and max(rewards) <= 10 and len(set(np.round(rewards, 6))) > 10


def test_shaped_reward_is_success_plus_potential_difference():
    """``shaped`` against a ``dense`` env replaying the same seed and actions (independent
    reference): r_t = 1[success] + (dense_t - dense_{t-1}) / 10, dense_{-1} from MetaWorld's
    own compute_reward at the reset state; the rewards telescope to 1 + Phi(s_T) - Phi(s_0)."""
    kwargs = dict(point_cloud_source="geometry", num_points=64)
    shaped = MetaWorldPointCloudEnv("push", reward_type="shaped", **kwargs)
    dense = MetaWorldPointCloudEnv("push", reward_type="dense", **kwargs)
    shaped.reset(seed=4)
    dense.reset(seed=4)
    previous = dense._mw.compute_reward(np.zeros(4), dense.raw_obs)[0] / 10.0
    phi_0 = shaped.potential
    assert phi_0 == pytest.approx(previous)
    rewards = []
    for _ in range(200):
        action = shaped.expert_action()
        _, reward, terminated, truncated, info = shaped.step(action)
        _, dense_reward, *_ = dense.step(action)
        expected = float(info["success"]) + dense_reward / 10.0 - previous
        assert reward == pytest.approx(expected, abs=1e-9)
        previous = dense_reward / 10.0
        rewards.append(reward)
        if terminated or truncated:
            break
    assert terminated and info["success"]
    assert sum(rewards) == pytest.approx(1.0 + shaped.potential - phi_0, abs=1e-9)
    assert len({round(r, 6) for r in rewards[:-1]}) > 5   # informative before the success
    with pytest.raises(ValueError, match="reward_type"):
        MetaWorldPointCloudEnv("push", reward_type="shaping", **kwargs)


def test_truncation_at_max_episode_steps():
    env = MetaWorldPointCloudEnv("pick-place", point_cloud_source="geometry", num_points=64,
                                 max_episode_steps=5)
    env.reset(seed=0)
    for t in range(5):
        _, reward, terminated, truncated, _ = env.step(np.zeros(4))
        assert not terminated and reward == 0.0
        assert truncated == (t == 4)
    assert env.elapsed_steps == 5
    env.reset()
    env.step(np.zeros(4))  # a new episode starts after truncation


def test_pickle_keeps_configuration():
    env = MetaWorldPointCloudEnv("reach", num_points=32, camera_size=48)
    obs, _ = env.reset(seed=4)  # creates a renderer
    clone = pickle.loads(pickle.dumps(env))
    obs2, _ = clone.reset(seed=4)
    np.testing.assert_array_equal(obs["point_cloud"], obs2["point_cloud"])
    env.close()
    clone.close()


# ---------------------------------------------------------------- missing GL
def test_missing_gl_gives_clear_error(monkeypatch):
    """Simulate a machine without EGL/OSMesa: creating the GL context fails."""
    from maniflow_rl.envs.metaworld import rendering

    def broken_context(*args, **kwargs):
        raise mujoco.FatalError("gladLoadGL error")

    monkeypatch.setattr(rendering, "_SHARED", {})  # no context cached by earlier tests
    monkeypatch.setattr(mujoco.gl_context, "GLContext", broken_context)
    env = MetaWorldPointCloudEnv("reach", num_points=32)
    with pytest.raises(RenderingUnavailableError) as info:
        env.reset(seed=0)
    message = str(info.value)
    for hint in ("libegl1", "libgl1-mesa-dri", "libosmesa6", "MUJOCO_GL=egl", "MUJOCO_GL=osmesa",
                 "gladLoadGL error"):
        assert hint in message
    # the geometry source needs no rendering
    geo = MetaWorldPointCloudEnv("reach", num_points=32, point_cloud_source="geometry")
    assert geo.reset(seed=0)[0]["point_cloud"].shape == (32, 3)
