"""``maniflow-rl run --task robosuite/lift``: the specification's Quick Start ``shape_meta``
(eye-in-hand RGB, xyz + rgb point cloud, eef pose, gripper; 10-D actions) through the whole
pipeline on a real robosuite task, on a tiny budget."""

from __future__ import annotations

import json

import pytest

from maniflow_rl.cli.main import main as cli_main

pytest.importorskip("robosuite")

TINY = ["env.num_points=128", "env.max_episode_steps=50", "env.num_workers=0",
        "demos.episodes=2", "policy.horizon=8", "policy.n_obs_steps=2",
        "policy.n_action_steps=4", "policy.num_inference_steps=2", "policy.n_emb=32",
        "policy.n_layer=1", "policy.n_head=2", "pretrain.num_epochs=2", "pretrain.batch_size=16",
        "pretrain.warmup_steps=1", "pretrain.checkpoint_every_epochs=1",
        "pretrain.select_every_steps=0", "ppo.total_timesteps=32", "ppo.num_envs=2",
        "ppo.num_steps_per_rollout=4", "ppo.batch_size=4", "ppo.update_epochs=1",
        "ppo.eval_interval=100", "ppo.save_interval=1", "ppo.critic_warmup_iterations=1",
        "eval.episodes=1", "eval.num_envs=1", "eval.video_episodes=0"]


DSRL = ["finetune.algorithm=dsrl", "dsrl.variant=na", "dsrl.num_envs=2", "dsrl.total_timesteps=32",
        "dsrl.warmup_steps=16", "dsrl.batch_size=8", "dsrl.hidden_dims=[16]",
        "dsrl.eval_episodes=0", "dsrl.save_interval=2", "dsrl.log_interval=2",
        "dsrl.buffer_size=500", "dsrl.critic_obs_keys=[full_state]"]


@pytest.mark.parametrize("algorithm", ["ppo", "dsrl"])
def test_run_on_robosuite_lift_with_the_specification_shape_meta(tmp_path, algorithm):
    from maniflow_rl.utils.checkpoint import load_checkpoint_file

    run_dir = tmp_path / "run"
    extra = DSRL if algorithm == "dsrl" else []
    assert cli_main(["run", "--task", "robosuite/lift", "--out", str(run_dir), "--no-progress",
                     *TINY, *extra]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["task"] == "robosuite/lift" and report["finetune_env_steps"] >= 32
    payload = load_checkpoint_file(run_dir / "finetune" / "latest.pt", expected_kind=algorithm)
    if algorithm == "dsrl":   # the demos (with their robosuite keys) were pre-filled in replay
        rows = [json.loads(line) for line in
                (run_dir / "finetune" / "metrics.jsonl").read_text().splitlines()]
        assert rows and all(row["replay/demos"] > 0 for row in rows)
        # the steering check read the demos' wrist images and coloured clouds too
        assert report["steering_authority"]["states"] > 1
    obs = payload["shape_meta"]["obs"]
    assert obs == {"robot0_eye_in_hand_image": {"shape": [3, 84, 84], "type": "rgb"},
                   "point_cloud": {"shape": [128, 6], "type": "point_cloud"},
                   "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
                   "robot0_eef_quat": {"shape": [4], "type": "low_dim"},
                   "robot0_gripper_qpos": {"shape": [2], "type": "low_dim"}}
    assert payload["shape_meta"]["action"]["shape"] == [10]
    config = (run_dir / "config.yaml").read_text()
    assert "action_mode: absolute" in config and "num_points: 128" in config
