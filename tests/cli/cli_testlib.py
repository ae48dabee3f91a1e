"""Helpers of the command-line tests: run ``maniflow-rl`` in-process, read metrics rows, and a
tiny pretraining checkpoint for MetaWorld (geometry point clouds, no rendering).

A uniquely named module (not conftest) so it never collides with other test folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NUM_POINTS = 64
TASK = "metaworld/reach-v3"
TINY_POLICY = dict(horizon=4, n_action_steps=2, n_obs_steps=1, num_inference_steps=2,
                   n_emb=32, n_layer=1, n_head=2, pointnet_hidden_dims=[16],
                   value_hidden_dims=[16], num_point_tokens=8, point_sampling="stride")
# a tiny fine-tuning budget for `finetune` / build_finetune_trainer on the checkpoint below
TINY_FINETUNE = ["env.point_cloud_source=geometry", f"env.num_points={NUM_POINTS}",
                 "env.max_episode_steps=20", "env.num_workers=0", "ppo.num_envs=2",
                 "ppo.num_steps_per_rollout=4", "ppo.batch_size=4", "ppo.update_epochs=1",
                 "ppo.total_timesteps=32", "ppo.eval_episodes=0", "ppo.save_interval=100",
                 "ppo.log_interval=100", "eval.num_envs=1"]


def metrics_rows(folder: Path, drop_prefix: str = "perf/") -> list[dict]:
    """``metrics.jsonl`` rows without the wall-clock (``perf/*``) columns."""
    rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith(drop_prefix)} for row in rows]


def metaworld_checkpoint(path: Path, point_cloud_source: str = "geometry",
                         camera: str = "corner2") -> Path:
    """A pretraining-kind checkpoint of a tiny policy for ``TASK`` (``reach-v3``), recorded as
    trained on ``point_cloud_source``; the value head is left out (fresh at fine-tune time)."""
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
    from maniflow_rl.utils.checkpoint import save_checkpoint_atomic

    with MetaWorldEnvRunner(TASK, num_envs=1, num_workers=0, point_cloud_source="geometry",
                            num_points=NUM_POINTS, max_episode_steps=20) as runner:
        shape_meta = runner.shape_meta
        obs = runner.reset()
    policy = ManiFlowPointcloudRLPolicy(shape_meta, **TINY_POLICY)
    rng = np.random.default_rng(0)
    data = {key: np.concatenate([value, value + rng.normal(0, 0.1, value.shape)])
            for key, value in obs.items() if key in policy.normalizer.keys}
    data["action"] = rng.uniform(-1, 1, (8, 4))
    policy.normalizer.fit(data)
    state = {k: v.clone() for k, v in policy.state_dict().items() if "value" not in k}
    env_kwargs = {"point_cloud_source": point_cloud_source, "num_points": NUM_POINTS,
                  "camera": camera, "max_episode_steps": 20}
    return save_checkpoint_atomic({"kind": "pretrain", "shape_meta": shape_meta,
                                   "policy_config": policy.get_config(),
                                   "policy_state_dict": state, "ema_state_dict": state,
                                   "train_config": {"task": TASK, "env_kwargs": env_kwargs}},
                                  path)
