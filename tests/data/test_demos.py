"""Scripted MetaWorld demos -> DP3/ManiFlow zarr."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("metaworld")
zarr = pytest.importorskip("zarr")

from maniflow_rl.data.demos import generate_demos, run_expert_episode  # noqa: E402
from maniflow_rl.envs.metaworld.env import MetaWorldPointCloudEnv  # noqa: E402

GEO = dict(point_cloud_source="geometry", num_points=64)


@pytest.mark.parametrize("task", ["button-press-topdown", "drawer-open", "reach"])
def test_scripted_expert_succeeds_on_easy_tasks(task):
    env = MetaWorldPointCloudEnv(task, max_episode_steps=200, **GEO)
    for seed in (0, 1):
        steps, success = run_expert_episode(env, seed)
        assert success, f"{task} seed {seed}"
        n = len(steps["action"])
        assert n <= 200 and all(len(v) == n for v in steps.values())


def test_generate_demos_zarr_round_trip(tmp_path):
    out = tmp_path / "reach.zarr"
    env_kwargs = dict(num_points=64, camera_size=48, use_image=True)
    summary = generate_demos("metaworld/reach-v3", 2, out, seed=5, env_kwargs=env_kwargs,
                             progress=False)
    assert summary["episodes"] == 2 and summary["complete"] and summary["attempts"] >= 2
    assert summary["task"] == "metaworld/reach-v3" and 0 < summary["success_rate"] <= 1
    assert (out / ".zgroup").exists() and not (out / "zarr.json").exists()  # zarr format 2

    root = zarr.open_group(str(out), mode="r")
    data, ends = root["data"], root["meta/episode_ends"][:]
    assert set(data.keys()) == {"point_cloud", "state", "action", "full_state", "img",
                                "potential", "next_potential"}
    total = summary["total_steps"]
    assert ends.dtype == np.int64 and ends.shape == (2,) and ends[-1] == total and ends[0] < total
    expected = {"point_cloud": ((total, 64, 3), np.float32), "state": ((total, 9), np.float32),
                "action": ((total, 4), np.float32), "full_state": ((total, 39), np.float32),
                "img": ((total, 48, 48, 3), np.uint8), "potential": ((total, 1), np.float32),
                "next_potential": ((total, 1), np.float32)}
    for key, (shape, dtype) in expected.items():
        assert data[key].shape == shape and data[key].dtype == dtype, key
        assert data[key].chunks[1:] == shape[1:]  # chunked along time only
    actions = data["action"][:]
    assert np.all(np.abs(actions) <= 1) and np.abs(actions).sum() > 0
    potential, next_potential = data["potential"][:, 0], data["next_potential"][:, 0]
    inside = np.setdiff1d(np.arange(total - 1), ends - 1)   # steps followed by one of theirs
    np.testing.assert_array_equal(next_potential[inside], potential[inside + 1])
    assert np.all((potential >= 0) & (potential <= 1)) and np.ptp(potential) > 0

    # the first stored step is the first observation of attempt 0 (seed derived from 5)
    from maniflow_rl.envs.vector.runner import derive_episode_seed

    env = MetaWorldPointCloudEnv("reach", **env_kwargs)
    obs, _ = env.reset(seed=derive_episode_seed(5, 0))
    np.testing.assert_array_equal(data["point_cloud"][0], obs["point_cloud"])
    np.testing.assert_array_equal(data["img"][0], obs["image"].transpose(1, 2, 0))
    np.testing.assert_array_equal(data["state"][0], obs["agent_pos"])

    from maniflow_rl.data.replay_buffer import ReplayBuffer

    buffer = ReplayBuffer.copy_from_path(out)
    assert buffer.n_episodes == 2 and buffer.n_steps == total


def test_generate_demos_reproducible_and_failure(tmp_path):
    a = generate_demos("reach", 1, tmp_path / "a.zarr", seed=2, env_kwargs=GEO, progress=False)
    b = generate_demos("reach", 1, tmp_path / "b.zarr", seed=2, env_kwargs=GEO, progress=False)
    assert a["total_steps"] == b["total_steps"]
    for key in ("point_cloud", "action"):
        arrays = [zarr.open_group(str(tmp_path / name), mode="r")["data"][key][:]
                  for name in ("a.zarr", "b.zarr")]
        np.testing.assert_array_equal(*arrays)
    with pytest.raises(RuntimeError, match="never succeeded"):
        generate_demos("pick-place", 1, tmp_path / "c.zarr", max_episode_steps=3, env_kwargs=GEO,
                       progress=False, max_attempts=2)
    assert not (tmp_path / "c.zarr").exists()


def test_demos_cli(tmp_path, capsys):
    from maniflow_rl.cli.demos_cmd import add_demos_parser, run_demos

    parser = argparse.ArgumentParser()
    add_demos_parser(parser.add_subparsers())
    args = parser.parse_args(["demos", "--task", "reach", "--episodes", "1", "--out",
                              str(tmp_path / "d.zarr"), "--point-cloud-source", "geometry",
                              "--num-points", "32", "--no-progress"])
    assert run_demos(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 1 and summary["shapes"]["point_cloud"][1:] == [32, 3]


def test_demos_never_replace_what_they_did_not_write(tmp_path, capsys):
    """Issue 12, item 2: an existing folder that is not a demo dataset survives, with a clear
    error before any work; a demo dataset is replaced only with --overwrite."""
    from maniflow_rl.cli.main import main as cli_main

    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("precious")
    args = ["demos", "--task", "reach", "--episodes", "1", "--point-cloud-source", "geometry",
            "--num-points", "64", "--no-progress"]
    assert cli_main([*args, "--out", str(user_dir)]) == 1
    assert "not a maniflow-rl demo dataset" in capsys.readouterr().err
    assert (user_dir / "notes.txt").read_text() == "precious"
    for flag in ([], ["--overwrite"]):   # not even --overwrite replaces a user's folder
        assert cli_main([*args, "--out", str(user_dir), *flag]) == 1
    dataset = tmp_path / "d.zarr"
    assert cli_main([*args, "--out", str(dataset)]) == 0
    assert cli_main([*args, "--out", str(dataset)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main([*args, "--out", str(dataset), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr", "mine"]   # no temp leftovers


def test_noisy_demos_execute_and_record_expert_plus_gaussian_noise():
    """action_noise = sigma: the recorded actions are the executed ones (replaying them from
    the same reset reproduces the states), and recorded - expert(state) has std sigma."""
    sigma = 0.2
    env = MetaWorldPointCloudEnv("button-press-topdown", max_episode_steps=200, **GEO)
    clean, _ = run_expert_episode(env, seed=3)
    steps, success = run_expert_episode(env, seed=3, action_noise=sigma)
    assert success
    again, _ = run_expert_episode(env, seed=3, action_noise=sigma)
    np.testing.assert_array_equal(steps["action"], again["action"])       # seeded
    assert not np.array_equal(steps["action"][:10], clean["action"][:10])
    env.reset(seed=3)
    residuals = []
    for t, action in enumerate(steps["action"]):
        np.testing.assert_allclose(env.raw_obs, steps["full_state"][t], atol=1e-6)
        expert = env.expert_action()
        inside = np.abs(action) < 1.0                     # clipped entries are not Gaussian
        residuals.append((action - expert)[inside])
        env.step(action)
    residuals = np.concatenate(residuals)
    assert len(residuals) > 100
    assert abs(residuals.mean()) < 4 * sigma / np.sqrt(len(residuals))
    assert residuals.std() == pytest.approx(sigma, rel=0.2)
    with pytest.raises(ValueError, match="action_noise"):
        generate_demos("reach", 1, "unused.zarr", env_kwargs=GEO, action_noise=2.0)
