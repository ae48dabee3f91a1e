"""MetaWorld env workers (training and evaluation runners) start with one torch thread and
one-thread BLAS / OpenMP variables, whatever the parent process uses (issue 14)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("metaworld")

from maniflow_rl.envs.metaworld import MetaWorldEnvRunner  # noqa: E402

GEO = dict(point_cloud_source="geometry", num_points=16, max_episode_steps=3)


def test_env_workers_start_with_one_torch_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")   # the parent's (a user's) settings
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    with MetaWorldEnvRunner("reach-v3", num_envs=2, seed=0, num_workers=2, **GEO) as runner:
        reports = runner.worker_thread_reports()
    assert [r["torch_threads"] for r in reports] == [1, 1]
    assert all(r["OMP_NUM_THREADS"] == "1" and r["MKL_NUM_THREADS"] == "1" for r in reports)
    assert os.environ["OMP_NUM_THREADS"] == "2"   # the parent's environment is untouched


def test_the_probe_reports_the_hosting_process():
    """In-process envs report the main process's count (here 2), so the check above can
    fail: it reads the workers' own torch."""
    torch.set_num_threads(2)
    try:
        with MetaWorldEnvRunner("reach-v3", num_envs=1, seed=0, num_workers=0, **GEO) as runner:
            assert runner.worker_thread_reports()[0]["torch_threads"] == 2
    finally:
        torch.set_num_threads(1)
