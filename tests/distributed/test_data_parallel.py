"""Data-parallel PPO on 2 gloo ranks (CPU): identical weights on every rank, the update equal
to the one-process update on the same data, checkpoints written once by rank 0 and resumed on
every rank, and ``torchrun maniflow-rl dummy`` end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_parallel_testlib import (GLOBAL_ENVS, SHAPE_META, TINY_POLICY, run_update,
                                   spawn_ranks, train_ranks, update_ranks)


def _load(path):
    return torch.load(path, weights_only=False)


def test_two_ranks_stay_identical_write_once_and_resume(tmp_path):
    spawn_ranks(train_ranks, 2, tmp_path, 3, False)
    r0, r1 = _load(tmp_path / "rank0_train.pt"), _load(tmp_path / "rank1_train.pt")
    assert r0["num_envs"] == r1["num_envs"] == GLOBAL_ENVS // 2
    assert not (r0["obs"] == r1["obs"]).all()               # rank-distinct env seeds
    for key, value in r0["state"].items():                   # bit-identical weights
        assert torch.equal(value, r1["state"][key]), key
    assert r0["global_step"] == r1["global_step"] == 3 * GLOBAL_ENVS * 4 * 2  # all ranks' steps
    # rank 0 alone writes: checkpoint_<i>.pt + latest.pt per iteration; one metrics row each
    assert len(r0["writes"]) == 6 and r1["writes"] == []
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2, 3]
    payload = _load(tmp_path / "latest.pt")
    assert payload["world_size"] == 2 and len(payload["rank_states"]) == 2

    spawn_ranks(train_ranks, 2, tmp_path, 1, True)
    for rank, before in enumerate((r0, r1)):
        after = _load(tmp_path / f"rank{rank}_resume.pt")
        assert torch.equal(after["loaded_rng"], before["end_rng"])   # every rank's RNG back
        assert after["iteration"] == 4
    s0, s1 = (_load(tmp_path / f"rank{r}_resume.pt")["state"] for r in (0, 1))
    assert all(torch.equal(v, s1[k]) for k, v in s0.items())
    assert not all(torch.equal(v, r0["state"][k]) for k, v in s0.items())   # it trained on
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2, 3, 4]


def _rollout(num_envs: int):
    from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
    from maniflow_rl.rl.rollout_collector import CollectorConfig, ManiFlowRolloutCollector

    policy = ManiFlowPointcloudRLPolicy(SHAPE_META, **TINY_POLICY)
    runner = ManiFlowDummyEnvRunner(SHAPE_META, num_envs=num_envs, seed=0)
    collector = ManiFlowRolloutCollector(policy, runner, CollectorConfig(
        action_chunk_size=policy.n_action_steps, obs_chunk_size=policy.n_obs_steps))
    batch, _ = collector.collect(4)
    return policy, batch


def test_update_on_two_ranks_equals_one_process(tmp_path):
    """2 ranks x 2 envs == 1 rank x 4 envs: global advantage normalisation, sample-weighted
    gradient mean (rank 0 keeps fewer samples: masked), full-batch epochs."""
    policy, batch = _rollout(GLOBAL_ENVS)
    batch.mask[:3, 0] = 0.0
    data = {"state": policy.state_dict(), "batch": batch,
            "ppo": {"num_envs": GLOBAL_ENVS, "num_steps_per_rollout": 4, "batch_size": 16,
                    "update_epochs": 3, "learning_rate": 1e-3, "critic_learning_rate": 1e-3}}
    torch.save(data, tmp_path / "data.pt")
    single = run_update(data, batch)
    spawn_ranks(update_ranks, 2, 2, tmp_path / "data.pt", tmp_path)
    ranks = [_load(tmp_path / f"update_rank{r}.pt") for r in (0, 1)]
    moved = max(float((single[k] - v).abs().max()) for k, v in data["state"].items()
                if v.is_floating_point())
    assert moved > 1e-3                                     # the update did something
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], value, atol=2e-5, rtol=1e-4, msg=key)


def _console_script() -> str | None:
    """The ``maniflow-rl`` Python script pip installed beside this interpreter (a pyenv / conda
    shim on PATH is a shell script that torchrun cannot run)."""
    beside = Path(sys.executable).parent / "maniflow-rl"
    return str(beside) if beside.is_file() else shutil.which("maniflow-rl")


@pytest.mark.skipif(_console_script() is None, reason="console script not installed")
def test_torchrun_dummy_cli(tmp_path):
    """``torchrun --nproc_per_node=2 maniflow-rl dummy``: one report line, one metrics row per
    iteration, one checkpoint, and the envs split over the ranks."""
    out = tmp_path / "dummy"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", _console_script(), "dummy", "--iterations", "2",
               "--out", str(out), "--no-progress", "ppo.num_envs=4", "ppo.num_steps_per_rollout=2",
               "ppo.batch_size=8", "ppo.save_interval=2", "ppo.update_epochs=1",
               *[f"policy.{k}={json.dumps(v).replace(' ', '')}" for k, v in TINY_POLICY.items()
                 if k != "noise_method"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("reward per decision point") == 1
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["global_step"] for r in rows] == [4 * 2 * 2, 2 * 4 * 2 * 2]
    assert sorted(p.name for p in out.glob("*.pt")) == ["checkpoint_2.pt", "latest.pt"]
