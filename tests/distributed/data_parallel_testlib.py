"""Helpers of the data-parallel tests: start N gloo ranks on this machine with
``torch.multiprocessing.spawn`` (torchrun's environment variables, so the code under test joins
the job exactly as under ``torchrun``), and the per-rank bodies the tests run.

A uniquely named module (not conftest) so it never collides with other test folders."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

SHAPE_META = {"obs": {"point_cloud": {"shape": [32, 3], "type": "point_cloud"},
                      "agent_pos": {"shape": [4]}}, "action": {"shape": [4]}}
TINY_POLICY = dict(horizon=4, n_action_steps=2, n_obs_steps=1, num_inference_steps=2,
                   n_emb=32, n_layer=1, n_head=2, pointnet_hidden_dims=[16],
                   value_hidden_dims=[16], num_point_tokens=8, point_sampling="stride",
                   noise_method="flow_sde")
GLOBAL_ENVS = 4


def tiny_ppo(save_path: Path, **changes) -> dict:
    """PPO settings of a few-second run on ``GLOBAL_ENVS`` dummy envs."""
    return {"num_envs": GLOBAL_ENVS, "num_steps_per_rollout": 4, "batch_size": 8,
            "update_epochs": 2, "learning_rate": 1e-3, "critic_learning_rate": 1e-3,
            "total_timesteps": 10**6, "save_interval": 1, "log_interval": 100,
            "eval_interval": 10**6, "eval_episodes": 0, "save_path": str(save_path), **changes}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_ranks(target, world_size: int, *args) -> None:
    """Run ``target(rank, *args)`` in ``world_size`` spawned processes joined as one gloo job."""
    torch.multiprocessing.spawn(_rank_entry, args=(world_size, free_port(), target, args),
                                nprocs=world_size, join=True)


def _rank_entry(rank: int, world_size: int, port: int, target, args) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        target(rank, *args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train_ranks(rank: int, out: Path, iterations: int, resume: bool) -> None:
    """Train (or resume and continue) the tiny PPO; save what the test compares to
    ``out/rank<r>_<phase>.pt``. Rank 1 may not write checkpoints: its writes are counted."""
    import maniflow_rl.rl.ppo.trainer as ppo_trainer
    from maniflow_rl.rl.ppo.factory import create_maniflow_ppo_trainer

    writes = []
    real_save = ppo_trainer.save_checkpoint_atomic
    ppo_trainer.save_checkpoint_atomic = lambda payload, path: (writes.append(str(path)),
                                                                real_save(payload, path))[1]
    trainer = create_maniflow_ppo_trainer(SHAPE_META, ppo_config=tiny_ppo(out),
                                          policy_config=TINY_POLICY)
    loaded_rng = None
    if resume:
        trainer.load_checkpoint(out / "latest.pt")
        loaded_rng = torch.get_rng_state()
    trainer.train(num_iterations=iterations, progress=False)
    end_rng = torch.get_rng_state()
    trainer.close()
    first_obs = trainer.env_runner.reset()["agent_pos"]
    torch.save({"state": trainer.policy.state_dict(), "writes": writes,
                "iteration": trainer.iteration, "global_step": trainer.global_step,
                "num_envs": trainer.env_runner.num_envs, "end_rng": end_rng,
                "loaded_rng": loaded_rng, "obs": first_obs},
               out / f"rank{rank}_{'resume' if resume else 'train'}.pt")


def update_ranks(rank: int, world_size: int, data_path: Path, out: Path) -> None:
    """Advantages + one PPO update on this rank's envs of the saved batch (data-parallel)."""
    from maniflow_rl.utils import distributed as dp

    dp.init_distributed("cpu")
    data = torch.load(data_path, weights_only=False)
    envs = dp.rank_env_slice(data["batch"].num_envs, rank, world_size)
    state = run_update(data, select_envs(data["batch"], envs), dp.all_reduce_sum,
                       dp.data_parallel_sync(torch.device("cpu")))
    torch.save(state, out / f"update_rank{rank}.pt")


def run_update(data: dict, batch, all_reduce=None, sync=None) -> dict:
    """The policy of ``data`` after advantages (GAE, normalised) and one ``ppo_update``."""
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
    from maniflow_rl.rl.advantages import AdvantageConfig, ManiFlowAdvantageCalculator
    from maniflow_rl.rl.ppo.config import PPOConfig
    from maniflow_rl.rl.ppo.helpers import make_optimizer, split_actor_critic_parameters
    from maniflow_rl.rl.ppo.update import ppo_update

    policy = ManiFlowPointcloudRLPolicy(SHAPE_META, **TINY_POLICY)
    policy.load_state_dict(data["state"])
    config = PPOConfig(**data["ppo"])
    batch = ManiFlowAdvantageCalculator(AdvantageConfig(), all_reduce=all_reduce).calculate(batch)
    actor, critic = split_actor_critic_parameters(policy)
    optimizer = make_optimizer(actor, critic, config)
    ppo_update(policy, optimizer, batch, config, generator=torch.Generator().manual_seed(0),
               actor_params=actor, critic_params=critic, sync=sync)
    return policy.state_dict()


def select_envs(batch, envs: slice):
    """The RolloutBatch of the envs ``envs`` (columns of every [T, N] field, rows of [N])."""
    import dataclasses

    from maniflow_rl.rl.batch import PER_STEP_FIELDS

    changes = {name: getattr(batch, name)[:, envs] for name in PER_STEP_FIELDS
               if getattr(batch, name) is not None}
    changes["obs"] = {key: value[:, envs] for key, value in batch.obs.items()}
    changes["last_values"] = batch.last_values[envs]
    changes["group_ids"] = None if batch.group_ids is None else batch.group_ids[envs]
    return dataclasses.replace(batch, **changes)
