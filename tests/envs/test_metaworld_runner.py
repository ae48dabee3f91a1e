"""MetaWorldEnvRunner: env-runner interface, auto-reset / final_obs semantics, workers."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("metaworld")

from maniflow_rl.envs.metaworld.env import MetaWorldPointCloudEnv  # noqa: E402
from maniflow_rl.envs.metaworld import MetaWorldEnvRunner  # noqa: E402

GEO = dict(point_cloud_source="geometry", num_points=64)


def _actions(rng, n):
    return rng.uniform(-1, 1, size=(n, 4)).astype(np.float32)


def test_in_process_auto_reset_and_final_obs():
    runner = MetaWorldEnvRunner("pick-place", num_envs=3, seed=7, num_workers=0,
                                max_episode_steps=4, **GEO)
    assert runner.num_envs == 3 and runner.action_dim == 4 and runner.max_episode_steps == 4
    assert runner.shape_meta["obs"]["point_cloud"]["shape"] == [64, 3]
    obs = runner.reset()
    assert obs["point_cloud"].shape == (3, 64, 3) and obs["agent_pos"].shape == (3, 9)
    seeds0 = runner.current_episode_seeds
    assert len(set(seeds0.tolist())) == 3

    # replay env 1 stand-alone with the same seed and actions
    ref = MetaWorldPointCloudEnv("pick-place", max_episode_steps=4, **GEO)
    ref_obs, _ = ref.reset(seed=int(seeds0[1]))
    np.testing.assert_array_equal(ref_obs["point_cloud"], obs["point_cloud"][1])
    rng = np.random.default_rng(0)
    for t in range(4):
        actions = _actions(rng, 3)
        out = runner.step(actions)
        ref_obs, ref_r, ref_term, ref_trunc, _ = ref.step(actions[1])
        assert out["rewards"].dtype == np.float32 and out["dones"].dtype == bool
        assert out["rewards"][1] == ref_r
        if t < 3:
            assert not out["dones"].any()
            np.testing.assert_array_equal(out["obs"]["agent_pos"][1], ref_obs["agent_pos"])
    assert out["dones"].all() and out["truncated"].all() and not out["success"].any()
    # final_obs = the last obs of the ended episode; obs = the first obs of the new one
    for key in ("point_cloud", "agent_pos"):
        np.testing.assert_array_equal(out["final_obs"][key][1], ref_obs[key])
    seeds1 = runner.current_episode_seeds
    assert not np.any(seeds1 == seeds0)
    fresh, _ = ref.reset(seed=int(seeds1[1]))
    for key in ("point_cloud", "agent_pos"):
        np.testing.assert_array_equal(out["obs"][key][1], fresh[key])
    with pytest.raises(ValueError, match="actions must have shape"):
        runner.step(np.zeros((2, 4)))
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.reset()


def test_mixed_episode_ends_match_stand_alone_replays():
    """Envs finish at different steps (expert on reach, terminate on success): every row of
    obs / final_obs matches a stand-alone env replaying that env's seeds and actions."""
    runner = MetaWorldEnvRunner("reach", num_envs=3, seed=0, num_workers=0, **GEO)
    refs = [MetaWorldPointCloudEnv("reach", **GEO) for _ in range(3)]
    runner.reset()
    for ref, seed in zip(refs, runner.current_episode_seeds):
        ref.reset(seed=int(seed))
    ends, mixed = np.zeros(3, int), False
    for _ in range(150):
        actions = np.stack([ref.expert_action() for ref in refs])
        out = runner.step(actions)
        mixed |= 0 < out["dones"].sum() < 3
        seeds = runner.current_episode_seeds
        for i, ref in enumerate(refs):
            obs, reward, terminated, truncated, _ = ref.step(actions[i])
            assert out["dones"][i] == (terminated or truncated) and out["rewards"][i] == reward
            if out["dones"][i]:
                assert out["success"][i] and not out["truncated"][i]
                final = out["final_obs"]["point_cloud"][i]
                np.testing.assert_array_equal(final, obs["point_cloud"])
                obs, _ = ref.reset(seed=int(seeds[i]))
                ends[i] += 1
            np.testing.assert_array_equal(out["obs"]["agent_pos"][i], obs["agent_pos"])
        if ends.min() >= 2 and mixed:
            break
    assert ends.min() >= 2 and mixed
    runner.close()


def test_seeding_groups_and_reset_continuation():
    def first_obs(num_envs, seed, group_size=1):
        with MetaWorldEnvRunner("pick-place", num_envs=num_envs, seed=seed, num_workers=0,
                                group_size=group_size, **GEO) as r:
            return r.reset()["point_cloud"], r

    a, _ = first_obs(2, seed=3)
    b, _ = first_obs(3, seed=3)
    np.testing.assert_array_equal(a, b[:2])  # env i's layouts depend on (seed, i) only
    c, _ = first_obs(2, seed=4)
    assert not np.array_equal(a, c)
    g, runner = first_obs(4, seed=3, group_size=2)
    np.testing.assert_array_equal(g[0], g[1])
    assert not np.array_equal(g[1], g[2])
    np.testing.assert_array_equal(runner.group_ids, [0, 0, 1, 1])

    with MetaWorldEnvRunner("pick-place", num_envs=2, seed=3, num_workers=0, **GEO) as r:
        first = r.reset()["point_cloud"]
        second = r.reset()["point_cloud"]  # continues: new layouts
        assert not np.array_equal(first, second)
        np.testing.assert_array_equal(r.reset(seed=3)["point_cloud"], first)
        r.seed([101, 202])
        np.testing.assert_array_equal(r.current_episode_seeds + 0, [101, 202])  # before reset
        explicit = r.reset()["point_cloud"]
        ref = MetaWorldPointCloudEnv("pick-place", **GEO)
        np.testing.assert_array_equal(explicit[1], ref.reset(seed=202)[0]["point_cloud"])


def test_held_envs_are_not_stepped():
    """``step(actions, active=mask)``: a held env keeps its observation, gets reward 0 and no
    done, and continues later exactly as an env that was never given the held steps."""
    runner = MetaWorldEnvRunner("pick-place", num_envs=2, seed=3, num_workers=0,
                                max_episode_steps=4, **GEO)
    assert runner.accepts_active_mask
    obs = runner.reset()
    ref = MetaWorldPointCloudEnv("pick-place", max_episode_steps=4, **GEO)
    ref.reset(seed=int(runner.current_episode_seeds[1]))
    rng = np.random.default_rng(2)
    for t in range(6):
        actions = _actions(rng, 2)
        hold = t in (1, 2)
        out = runner.step(actions, active=np.array([True, not hold]))
        if hold:
            np.testing.assert_array_equal(out["obs"]["point_cloud"][1], obs["point_cloud"][1])
            assert out["rewards"][1] == 0 and not out["dones"][1] and not out["success"][1]
        else:
            ref_obs, _, _, ref_trunc, _ = ref.step(actions[1])
            assert bool(out["dones"][1]) == ref_trunc   # 4 real steps: ends at t = 5
            if not ref_trunc:
                np.testing.assert_array_equal(out["obs"]["agent_pos"][1], ref_obs["agent_pos"])
        assert out["dones"][0] == (t == 3)
        obs = out["obs"]
    with pytest.raises(ValueError, match="active must be a bool mask"):
        runner.step(_actions(rng, 2), active=[True])
    runner.close()


def test_spawn_workers_match_in_process():
    """Two spawn workers with camera clouds (renderers created inside the workers)."""
    kwargs = dict(num_points=64, camera_size=64, max_episode_steps=3)
    with MetaWorldEnvRunner("reach", num_envs=3, seed=1, num_workers=0, **kwargs) as local:
        expected = [local.reset()]
        rng = np.random.default_rng(1)
        actions = [_actions(rng, 3) for _ in range(5)]
        masks = [None] * 4 + [np.array([True, False, True])]   # the last step holds env 1
        expected += [local.step(a, active=m) for a, m in zip(actions, masks)]
    runner = MetaWorldEnvRunner("reach", num_envs=3, seed=1, num_workers=2, **kwargs)
    procs = list(runner._workers.procs)
    assert len(procs) == 2 and all(p.is_alive() for p in procs)
    got = [runner.reset()] + [runner.step(a, active=m) for a, m in zip(actions, masks)]
    np.testing.assert_array_equal(got[5]["obs"]["agent_pos"][1], got[4]["obs"]["agent_pos"][1])
    assert not np.allclose(got[5]["obs"]["agent_pos"][0], got[4]["obs"]["agent_pos"][0])
    for key in ("point_cloud", "agent_pos"):
        np.testing.assert_allclose(got[0][key], expected[0][key], atol=1e-6)
        for g, e in zip(got[1:], expected[1:]):
            np.testing.assert_allclose(g["obs"][key], e["obs"][key], atol=1e-6)
            np.testing.assert_allclose(g["final_obs"][key], e["final_obs"][key], atol=1e-6)
    assert got[3]["dones"].all() and got[3]["truncated"].all()
    frame = runner.render_rgb(48, 32, env_index=2)
    assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8
    runner.close()
    for p in procs:
        p.join(timeout=10)
        assert not p.is_alive() and p.exitcode == 0


def test_worker_errors_are_reported():
    with pytest.raises(RuntimeError, match="worker 0 failed:(.|\n)*unknown camera"):
        MetaWorldEnvRunner("reach", num_envs=1, num_workers=1, camera="no-such-camera")


def _per_step_reference(runner, chunk, active):
    """What step_chunk must equal: step() sub-step by sub-step, holding an env from the
    sub-step after its episode ends (the collector's execute-and-hold)."""
    stepping, outputs = np.array(active, bool), []
    for sub_step in range(chunk.shape[1]):
        out = runner.step(chunk[:, sub_step], active=stepping.copy())
        stepping &= ~out["dones"]
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("num_workers", [0, 2])
def test_step_chunk_equals_holding_sub_steps(num_workers):
    """One request per chunk gives the same observations, rewards, dones, final_obs and layout
    sequence as Ca step() calls with the hold rule; an env ends once per chunk at most."""
    kwargs = dict(num_envs=3, seed=2, max_episode_steps=5, **GEO)
    rng = np.random.default_rng(4)
    chunks = [rng.uniform(-1, 1, size=(3, 4, 4)).astype(np.float32) for _ in range(4)]
    actives = [np.ones(3, bool)] * 3 + [np.array([True, False, True])]   # env 1 idle in the last
    with MetaWorldEnvRunner("reach", num_workers=0, **kwargs) as ref, \
            MetaWorldEnvRunner("reach", num_workers=num_workers, **kwargs) as runner:
        np.testing.assert_array_equal(ref.reset()["agent_pos"], runner.reset()["agent_pos"])
        ended = 0
        for chunk, active in zip(chunks, actives):
            expected = _per_step_reference(ref, chunk, active)
            got = runner.step_chunk(chunk, active=active)
            assert len(got) == 4
            for e, g in zip(expected, got):
                for key in ("rewards", "dones", "truncated", "success"):
                    np.testing.assert_array_equal(g[key], e[key], err_msg=key)
                for key in e["obs"]:
                    np.testing.assert_allclose(g["obs"][key], e["obs"][key], atol=1e-6)
                    np.testing.assert_allclose(g["final_obs"][key][e["dones"]],
                                               e["final_obs"][key][e["dones"]], atol=1e-6)
            assert (np.sum([g["dones"] for g in got], axis=0) <= 1).all()
            ended += int(np.sum([g["dones"] for g in got]))
        assert ended >= 3   # 16 sub-steps, 5-step limit: every stepped env ended (and reset)
        np.testing.assert_array_equal(runner.current_episode_seeds, ref.current_episode_seeds)
        assert (got[0]["rewards"][1], got[-1]["rewards"][1]) == (0.0, 0.0)   # idle env 1
        with pytest.raises(ValueError, match="actions must have shape"):
            runner.step_chunk(chunks[0][:, 0])
