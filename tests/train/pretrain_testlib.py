"""Helpers of the pretraining tests: a small synthetic DP3-layout dataset and a tiny config.

A uniquely named module (not conftest) so it never collides with other test folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maniflow_rl.data import ReplayBuffer
from maniflow_rl.train import PretrainConfig

NUM_POINTS = 32
TINY_POLICY = dict(horizon=8, n_action_steps=4, n_obs_steps=2, num_inference_steps=2, n_emb=32,
                   n_layer=1, n_head=2, mlp_ratio=2.0, pointnet_hidden_dims=[16],
                   cnn_channels=[8, 16], value_hidden_dims=[16], num_point_tokens=8,
                   point_sampling="stride")


def write_synthetic_dataset(path: Path, n_episodes: int = 4, length: int = 24, seed: int = 0,
                            num_points: int = NUM_POINTS, with_image: bool = False) -> Path:
    """Episodes where the action is a smooth function of a per-episode goal visible in the
    observations (so imitation can lower the loss); DP3 keys: point_cloud, state, action."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer.create_empty()
    for _ in range(n_episodes):
        goal = rng.uniform(-1, 1, size=3)
        t = np.linspace(0, 1, length)[:, None]
        pos = t * goal[None]                                          # moves towards the goal
        cloud = goal[None, None] + 0.05 * rng.standard_normal((length, num_points, 3))
        state = np.concatenate([pos, np.repeat(goal[None], length, 0), np.sin(3 * pos)], 1)
        action = np.concatenate([goal[None] - pos, np.cos(np.pi * t)], 1)
        episode = {"point_cloud": cloud.astype(np.float32), "state": state.astype(np.float32),
                   "action": action.astype(np.float32)}
        if with_image:
            episode["img"] = rng.integers(0, 255, size=(length, 12, 12, 3), dtype=np.uint8)
        buffer.add_episode(episode)
    return buffer.save_to_path(path)


def tiny_pretrain_config(dataset: Path, out: Path, **overrides) -> PretrainConfig:
    base = dict(dataset_path=str(dataset), output_dir=str(out), num_epochs=4, batch_size=32,
                lr=1e-3, warmup_steps=2, ema_decay=0.9, seed=0, device="cpu",
                checkpoint_every_epochs=1, policy_config=dict(TINY_POLICY))
    return PretrainConfig(**{**base, **overrides})
