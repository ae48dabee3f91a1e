"""The pure helpers of ``maniflow_rl.utils.distributed`` and the fast failures of a
misconfigured data-parallel launch (no process is started)."""

from __future__ import annotations

import pytest
import torch

from maniflow_rl.utils import distributed as dp


def test_dist_info_from_env():
    assert dp.dist_info_from_env({}) == dp.DistInfo(0, 1, 0)
    info = dp.dist_info_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.enabled, info.is_main) == \
        (3, 4, 1, True, False)
    with pytest.raises(ValueError, match="invalid RANK=4"):
        dp.dist_info_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert info.local_world_size == 1   # torchrun sets LOCAL_WORLD_SIZE: ranks on this node
    assert dp.dist_info_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0",
                                  "LOCAL_WORLD_SIZE": "2"}).local_world_size == 2
    with pytest.raises(ValueError, match="invalid LOCAL_WORLD_SIZE=0"):
        dp.dist_info_from_env({"LOCAL_WORLD_SIZE": "0"})


def test_local_num_envs_and_slices():
    assert dp.local_num_envs(8, 2) == 4
    with pytest.raises(ValueError, match="ppo.num_envs=6 is not divisible by the world size 4"):
        dp.local_num_envs(6, 4)
    with pytest.raises(ValueError, match="a GRPO group must live on one rank"):
        dp.local_num_envs(8, 4, group_size=4)
    assert [dp.rank_env_slice(8, r, 2) for r in (0, 1)] == [slice(0, 4), slice(4, 8)]


def test_select_backend():
    assert dp.select_backend("cpu", cuda_available=False) == "gloo"
    assert dp.select_backend("cuda", cuda_available=True) == "nccl"
    assert dp.select_backend("cuda", "gloo", cuda_available=True) == "gloo"
    with pytest.raises(ValueError, match="nccl backend needs CUDA"):
        dp.select_backend("cpu", "nccl", cuda_available=False)
    with pytest.raises(ValueError, match="nccl backend needs CUDA"):
        dp.select_backend("cuda", None, cuda_available=False)
    with pytest.raises(ValueError, match="must be one of"):
        dp.select_backend("cpu", "mpi")


def test_rank_seed_and_device():
    assert dp.rank_seed(7, 0) == 7
    assert len({dp.rank_seed(7, r) for r in range(4)}) == 4
    info = dp.DistInfo(1, 2, 1)
    assert dp.rank_device("cuda", info) == torch.device("cuda", 1)
    assert dp.rank_device("cuda:0", info) == torch.device("cuda", 0)
    assert dp.rank_device("cpu", info) == torch.device("cpu")


def test_minibatch_chunks():
    order = torch.arange(10)
    assert [len(c) for c in dp.minibatch_chunks(order, 4)] == [4, 4, 2]   # one process
    # data-parallel: ceil(all ranks' 30 samples / 8) = 4 chunks on every rank, even if empty
    assert [len(c) for c in dp.minibatch_chunks(order, 8, total_samples=30)] == [3, 3, 2, 2]
    assert [len(c) for c in dp.minibatch_chunks(order[:2], 8, 30)] == [1, 1, 0, 0]
    assert torch.equal(torch.cat(dp.minibatch_chunks(order, 8, 30)), order)


def test_reduce_metric_dicts():
    out = dp.reduce_metric_dicts([
        {"rollout/return_mean": 1.0, "rollout/num_episodes": 1.0, "train/loss": 2.0,
         "perf/update_seconds": 3.0, "train/active_samples": 5.0},
        {"rollout/return_mean": 4.0, "rollout/num_episodes": 3.0, "train/loss": 4.0,
         "perf/update_seconds": 1.0, "train/active_samples": 7.0, "train/only_here": 9.0}])
    assert out == {"rollout/return_mean": 3.25, "rollout/num_episodes": 4.0, "train/loss": 3.0,
                   "perf/update_seconds": 3.0, "train/active_samples": 12.0,
                   "train/only_here": 9.0}


def test_pack_unpack_gradients_keeps_none():
    a, b, c = (torch.nn.Parameter(torch.zeros(2, 2)) for _ in range(3))
    a.grad, b.grad = torch.ones(2, 2), None
    c.grad = torch.full((2, 2), 2.0)
    flat = dp.pack_gradients([a, b, c], nonfinite=False)
    summed = flat + dp.pack_gradients([a, b, c], nonfinite=True)   # a second rank
    assert dp.unpack_gradients([a, b, c], summed) is True
    assert torch.equal(a.grad, torch.full((2, 2), 2.0)) and b.grad is None
    assert torch.equal(c.grad, torch.full((2, 2), 4.0))


def test_single_process_collectives_are_identity():
    t = torch.tensor([1.0, 2.0])
    assert dp.all_reduce_sum(t) is t and torch.equal(t, torch.tensor([1.0, 2.0]))
    assert dp.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert dp.broadcast_object(3) == 3
    assert dp.data_parallel_sync(torch.device("cpu")) is None


def test_trainer_fails_fast_when_envs_do_not_divide(monkeypatch):
    """Checked from torchrun's variables before joining the job: no rendezvous is attempted."""
    from maniflow_rl.rl.ppo.factory import create_maniflow_ppo_trainer

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    shape_meta = {"obs": {"agent_pos": {"shape": [4]}}, "action": {"shape": [2]}}
    with pytest.raises(ValueError, match="ppo.num_envs=4 is not divisible by the world size 3"):
        create_maniflow_ppo_trainer(shape_meta, ppo_config={"num_envs": 4, "batch_size": 8})


def test_dsrl_refuses_torchrun(monkeypatch):
    from maniflow_rl.config import RunConfig
    from maniflow_rl.pipeline.finetune import check_data_parallel

    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = RunConfig().finetune_config()
    cfg.ppo.num_envs = 4
    assert check_data_parallel(cfg) == 2
    cfg.finetune.algorithm = "dsrl"
    with pytest.raises(ValueError, match="dsrl runs in one process"):
        check_data_parallel(cfg)
