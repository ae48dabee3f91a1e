"""robosuite envs: the specification's observation keys and shapes, world-frame point clouds,
both action modes, seeded layouts and scripted experts that succeed."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("robosuite")

from maniflow_rl.envs.robosuite.env import RobosuitePointCloudEnv  # noqa: E402
from maniflow_rl.envs.robosuite.tasks import resolve_robosuite_task  # noqa: E402

SPEC_SHAPE_META = {   # the specification's Quick Start example
    "obs": {"robot0_eye_in_hand_image": {"shape": [3, 84, 84], "type": "rgb"},
            "point_cloud": {"shape": [1024, 6], "type": "point_cloud"},
            "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
            "robot0_eef_quat": {"shape": [4], "type": "low_dim"},
            "robot0_gripper_qpos": {"shape": [2], "type": "low_dim"}},
    "action": {"shape": [10]}}
SMALL = dict(num_points=128, camera_size=48, image_size=32)


@pytest.fixture(scope="module")
def lift():
    env = RobosuitePointCloudEnv("robosuite/lift", **SMALL)
    yield env
    env.close()


def test_spec_shape_meta_and_observation_dtypes():
    env = RobosuitePointCloudEnv("robosuite/lift")
    try:
        assert env.shape_meta == SPEC_SHAPE_META
        obs, _ = env.reset(seed=0)
        for key, spec in SPEC_SHAPE_META["obs"].items():
            assert list(obs[key].shape) == spec["shape"], key
        assert obs["robot0_eye_in_hand_image"].dtype == np.uint8
        assert obs["robot0_eye_in_hand_image"].std() > 5          # an image, not a blank frame
        cloud = obs["point_cloud"]
        assert cloud.dtype == np.float32 and np.all((cloud[:, 3:] >= 0) & (cloud[:, 3:] <= 1))
        assert np.unique(cloud[:, :3], axis=0).shape[0] > 900    # FPS of many distinct points
    finally:
        env.close()


def test_point_cloud_is_in_the_world_frame_on_the_cube(lift):
    obs, _ = lift.reset(seed=3)
    cube = lift._rs.sim.data.body_xpos[lift._rs.cube_body_id]
    cloud = obs["point_cloud"][:, :3]
    lo, hi = resolve_robosuite_task("lift").workspace_bounds
    assert np.all(cloud >= np.asarray(lo) - 1e-5) and np.all(cloud <= np.asarray(hi) + 1e-5)
    # the cube is a ~4 cm box resting on the table: points within its half-size + 1 cm
    on_cube = np.all(np.abs(cloud - cube) < 0.031, axis=1)
    assert on_cube.sum() >= 3
    # and some point sits on its top face, 2 cm above the centre (the camera sees it)
    top = on_cube & (np.abs(cloud[:, 2] - (cube[2] + 0.02)) < 0.006)
    assert top.any()


def test_seeded_reset_reproduces_the_layout_and_keeps_the_global_rng(lift):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    layouts = []
    for seed in (5, 6, 5):
        lift.reset(seed=seed)
        layouts.append(np.array(lift._rs.sim.data.body_xpos[lift._rs.cube_body_id]))
    np.testing.assert_array_equal(layouts[0], layouts[2])
    assert np.linalg.norm(layouts[0][:2] - layouts[1][:2]) > 1e-4
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("mode", ["absolute", "delta"])
def test_lift_expert_succeeds_in_both_action_modes(mode):
    env = RobosuitePointCloudEnv("robosuite/lift", action_mode=mode, reward_type="shaped",
                                 **SMALL)
    try:
        assert env.action_space.shape == ({"absolute": 10, "delta": 7}[mode],)
        for seed in (0, 1):
            env.reset(seed=seed)
            rewards, phi_0 = [], env.potential
            for _ in range(env.max_episode_steps):
                _, reward, terminated, truncated, info = env.step(env.expert_action())
                rewards.append(reward)
                if terminated or truncated:
                    break
            assert terminated and info["success"], (mode, seed)
            # shaped: success plus the change of robosuite's staged reward, telescoping
            assert sum(rewards) == pytest.approx(1.0 + env.potential - phi_0, abs=1e-9)
    finally:
        env.close()


def test_the_can_is_seen_by_the_point_tokens():
    """Regression: with both bins in the crop the can got 4-6 of 1,024 points and none of 64
    farthest-point tokens (the encoder's), so imitation never found it. The can's bin crop
    gives it a share of the tokens on every layout tried."""
    from maniflow_rl.envs.metaworld.point_cloud import farthest_point_sample

    env = RobosuitePointCloudEnv("robosuite/can")   # the preset's 1,024 points, 128^2 depth
    try:
        for seed in (0, 1, 2):
            obs, _ = env.reset(seed=seed)
            can = env._rs.sim.data.body_xpos[env._rs.obj_body_id["Can"]]
            tokens = farthest_point_sample(obs["point_cloud"], 64)
            on_can = np.linalg.norm(tokens[:, :2] - can[:2], axis=1) < 0.05
            assert on_can.sum() >= 4, (seed, int(on_can.sum()))
    finally:
        env.close()


@pytest.mark.parametrize("task", ["robosuite/can", "robosuite/square"])
def test_can_and_square_experts_succeed(task):
    env = RobosuitePointCloudEnv(task, num_points=32, camera_size=24, image_size=16)
    try:
        env.reset(seed=1)
        for _ in range(env.max_episode_steps):
            _, reward, terminated, truncated, info = env.step(env.expert_action())
            if terminated or truncated:
                break
        assert terminated and info["success"] and reward == 1.0
    finally:
        env.close()


def test_absolute_action_is_the_commanded_world_pose(lift):
    """An absolute action holding the current grip-site pose keeps the arm still; one 3 cm
    higher moves it up by about that much."""
    from maniflow_rl.envs.robosuite.rotation import matrix_to_rotation_6d

    lift.reset(seed=0)
    pos, matrix = lift.eef_pose()
    hold = np.concatenate([pos, matrix_to_rotation_6d(matrix), [-1.0]])
    for _ in range(5):
        lift.step(hold)
    np.testing.assert_allclose(lift.eef_pose()[0], pos, atol=0.01)
    up = hold.copy()
    up[2] += 0.03
    for _ in range(15):
        lift.step(up)
    assert lift.eef_pose()[0][2] - pos[2] == pytest.approx(0.03, abs=0.01)


def test_bad_arguments_fail_before_work(lift):
    with pytest.raises(ValueError, match="did you mean robosuite/lift"):
        RobosuitePointCloudEnv("robosuite/lfit")
    with pytest.raises(ValueError, match="action_mode"):
        RobosuitePointCloudEnv("robosuite/lift", action_mode="joint")
    with pytest.raises(ValueError, match="shape"):
        lift.step(np.zeros(7))


def test_the_vector_runner_hosts_robosuite_envs_in_worker_processes():
    from maniflow_rl.envs.robosuite import RobosuiteEnvRunner

    with RobosuiteEnvRunner("robosuite/lift", num_envs=2, seed=0, num_workers=1,
                            action_mode="delta", max_episode_steps=3, **SMALL) as runner:
        assert runner.action_dim == 7 and runner.max_episode_steps == 3
        assert set(runner.shape_meta["obs"]) == set(SPEC_SHAPE_META["obs"])
        obs = runner.reset()
        assert obs["point_cloud"].shape == (2, 128, 6)
        first_seeds = runner.current_episode_seeds.copy()
        for step in range(3):
            out = runner.step(np.zeros((2, 7), np.float32))
        assert out["truncated"].all() and not out["terminated"].any()
        # auto-reset: the next episode's first frame, the ended one's last in final_obs
        assert not np.array_equal(runner.current_episode_seeds, first_seeds)
        assert not np.allclose(out["obs"]["point_cloud"], out["final_obs"]["point_cloud"])
        with pytest.raises(ValueError, match="shape"):
            runner.step(np.zeros((2, 10), np.float32))


def test_one_render_gives_the_same_rgb_and_depth_as_two(lift):
    lift.reset(seed=2)
    renderer = lift._renderer(48, 48)
    cam = lift._camera_ids["agentview"]
    rgb, depth = renderer.rgbd(lift.data, cam)
    np.testing.assert_array_equal(rgb, renderer.rgb(lift.data, cam))
    # the flat-colour depth pass differs at a few silhouette pixels (<1 %); the rest is equal
    same = np.isclose(depth, renderer.depth(lift.data, cam), rtol=1e-6)
    assert same.mean() > 0.98
    assert 0.3 < float(np.median(depth)) < 5.0   # metres to the table / arm, not the far plane
