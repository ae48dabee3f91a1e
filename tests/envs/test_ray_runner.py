"""``env.backend=ray``: Ray actors step the same envs as the multiprocessing workers (same
seeds, same observations), a killed worker is restarted with its episodes truncated, and a
wrong Ray address fails at once. Skipped when Ray or MetaWorld is not installed."""

import os
import subprocess
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from maniflow_rl.envs.vector.ray_workers import (address_host_port,  # noqa: E402
                                                    check_reachable, forwarded_env_vars)

GEO = dict(point_cloud_source="geometry", num_points=64, max_episode_steps=3)


def test_address_parsing_and_env_vars():
    assert address_host_port(None) is None and address_host_port("auto") is None
    assert address_host_port("10.0.0.2:6379") == ("10.0.0.2", 6379)
    assert address_host_port("ray://head:10001") == ("head", 10001)
    with pytest.raises(ValueError, match="env.ray_address must be"):
        address_host_port("head")
    env = forwarded_env_vars({"MUJOCO_GL": "egl", "OMP_NUM_THREADS": "2", "HOME": "/root"})
    # actors run one thread whatever the driver's OMP_NUM_THREADS (utils/threads.py)
    assert env == {"MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
                   "VECLIB_MAXIMUM_THREADS": "1"}


def test_unreachable_address_fails_fast():
    start = time.time()
    with pytest.raises(ConnectionError, match="no Ray cluster reachable"):
        check_reachable("127.0.0.1:1")
    assert time.time() - start < 5


def test_ray_address_auto_without_cluster_fails_fast():
    pytest.importorskip("ray")
    code = ("from maniflow_rl.envs.vector.ray_workers import connect\n"
            "connect('auto', 1)")
    start = time.time()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode != 0 and "no Ray cluster reachable" in done.stderr
    assert time.time() - start < 30


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("metaworld")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": forwarded_env_vars()})
    yield ray
    ray.shutdown()


def _runner(backend, **kwargs):
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner

    return MetaWorldEnvRunner("reach-v3", num_envs=2, seed=5, num_workers=2, backend=backend,
                              **GEO, **kwargs)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_ray_backend_matches_multiprocessing(local_ray):
    """Same seeds -> same first observations, steps, auto-resets and final_obs."""
    rng = np.random.default_rng(0)
    with _runner("ray") as ray_runner, _runner("multiprocessing") as mp_runner:
        _assert_same(ray_runner.reset(), mp_runner.reset())
        for _ in range(4):   # crosses the 3-step time limit: auto-reset + final_obs
            actions = rng.uniform(-1, 1, size=(2, 4)).astype(np.float32)
            a, b = ray_runner.step(actions), mp_runner.step(actions)
            _assert_same(a["obs"], b["obs"])
            for key in ("rewards", "dones", "truncated", "success"):
                np.testing.assert_array_equal(a[key], b[key])
            if a["dones"].any():
                _assert_same(a["final_obs"], b["final_obs"])
        chunk = rng.uniform(-1, 1, size=(2, 4, 4)).astype(np.float32)   # one request per chunk
        for a, b in zip(ray_runner.step_chunk(chunk), mp_runner.step_chunk(chunk)):
            _assert_same(a["obs"], b["obs"])
            for key in ("rewards", "dones", "truncated", "success"):
                np.testing.assert_array_equal(a[key], b[key])
        assert a is not None and ray_runner.shape_meta == mp_runner.shape_meta
        for runner in (ray_runner, mp_runner):   # one torch thread per worker (issue 14)
            assert [r["torch_threads"] for r in runner.worker_thread_reports()] == [1, 1]


def _kill_and_wait(ray, actor, timeout: float = 30.0) -> None:
    """``ray.kill`` returns before the actor is dead: a call submitted right after can still
    run on it. Wait until a call fails, so the runner's next request meets a dead worker."""
    ray.kill(actor)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            ray.get(actor.shape_meta.remote(), timeout=timeout)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed Ray actor still answers")


def test_dead_worker_is_restarted_and_its_episode_truncated(local_ray):
    from maniflow_rl.envs.metaworld.env import MetaWorldPointCloudEnv

    actions = np.zeros((2, 4), np.float32)
    with _runner("ray") as runner:
        runner.reset()
        before = runner.step(actions)["obs"]
        _kill_and_wait(local_ray, runner._workers.actors[1])
        out = runner.step(actions)
        assert out["truncated"].tolist() == [False, True] and out["dones"].tolist() == [False, True]
        assert out["rewards"][1] == 0 and runner._workers.restarts == 1
        for key in before:   # the ended episode's last frame; env 1 is on its next layout
            np.testing.assert_array_equal(out["final_obs"][key][1], before[key][1])
        ref = MetaWorldPointCloudEnv("reach-v3", **GEO)
        ref_obs, _ = ref.reset(seed=int(runner.current_episode_seeds[1]))
        _assert_same({k: v[1] for k, v in out["obs"].items()}, ref_obs)
        after = runner.step(actions)   # the new worker keeps stepping its new episode
        assert not after["dones"][1] and runner._workers.restarts == 1
        last = after["obs"]
        _kill_and_wait(local_ray, runner._workers.actors[0])   # dead before a chunk: truncated
        chunk = runner.step_chunk(np.zeros((2, 3, 4), np.float32))   # at its first sub-step, held
        assert [c["truncated"][0] for c in chunk] == [True, False, False]
        assert runner._workers.restarts == 2   # env 1 lives on: its 3-step limit, then held
        assert [c["dones"][1] for c in chunk] == [False, True, False]
        for key in last:
            np.testing.assert_array_equal(chunk[0]["final_obs"][key][0], last[key][0])
            np.testing.assert_array_equal(chunk[2]["obs"][key][0], chunk[0]["obs"][key][0])


def test_env_config_backend_checks():
    from maniflow_rl.config.sections import EnvConfig

    with pytest.raises(ValueError, match="env.backend must be one of"):
        EnvConfig(backend="dask").validate()
    with pytest.raises(ValueError, match="env.backend=ray needs env.num_workers >= 1"):
        EnvConfig(backend="ray", num_workers=0).validate()
    assert EnvConfig(backend="ray", ray_address="auto").runner_kwargs() == \
        {"backend": "ray", "ray_address": "auto"}
