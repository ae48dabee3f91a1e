"""The whole ``maniflow-rl run`` pipeline on a tiny budget, and resuming a stopped run."""

from __future__ import annotations

import json
from pathlib import Path

from maniflow_rl.cli.main import main as cli_main

TINY = [
    "env.task=metaworld/button-press-topdown-v3", "env.point_cloud_source=geometry", "env.num_points=64",
    "env.max_episode_steps=80", "env.num_workers=0",
    "demos.episodes=2",
    "policy.horizon=8", "policy.n_obs_steps=2", "policy.n_action_steps=4",
    "policy.num_inference_steps=2", "policy.n_emb=32", "policy.n_layer=1", "policy.n_head=2",
    "pretrain.num_epochs=2", "pretrain.batch_size=16", "pretrain.warmup_steps=1",
    "pretrain.checkpoint_every_epochs=1",
    "ppo.total_timesteps=64", "ppo.num_envs=2", "ppo.num_steps_per_rollout=4",
    "ppo.batch_size=4", "ppo.update_epochs=1", "ppo.eval_interval=1", "ppo.eval_episodes=2",
    "ppo.save_interval=1", "ppo.critic_warmup_iterations=1",
    "eval.episodes=2", "eval.num_envs=1", "eval.video_episodes=1",
]


def _run(run_dir, *extra):
    """Options first; ``key=value`` overrides in ``extra`` come after TINY's, so they win."""
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    options = [a for a in extra if a not in overrides]
    return cli_main(["run", "--out", str(run_dir), "--no-progress", *options, *TINY, *overrides])


def test_run_pipeline_tiny_budget_writes_complete_report(tmp_path):
    run_dir = tmp_path / "run"
    assert _run(run_dir) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["task"] == "metaworld/button-press-topdown-v3" and report["eval_episodes"] == 2
    for key in ("success_before", "success_after"):
        assert 0.0 <= report[key] <= 1.0
        low, high = report[f"{key}_ci"]
        assert low <= report[key] <= high
    assert report["finetune_env_steps"] >= 64
    assert set(report["stages"]) == {"demos", "pretrain", "eval_pretrain", "finetune",
                                     "eval_finetune"}
    assert all(row["wall_s"] > 0 for row in report["stages"].values())
    assert report["stages"]["eval_pretrain"]["env_steps"] > 0
    markdown = (run_dir / "report.md").read_text()
    assert "success rate" in markdown and report["command"] in markdown
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    assert (run_dir / report["video"]).stat().st_size > 0
    assert (run_dir / "finetune" / "latest.pt").is_file()
    # the policy kept: the best of the start and the evaluations during RL (finetune.select)
    selection = json.loads((run_dir / "finetune" / "selection.json").read_text())
    candidates = selection["candidates"]
    assert len(candidates) == 1 + len(report["eval_success_during_rl"])
    assert selection["success_rate"] == max(c["success_rate"] for c in candidates)
    after = json.loads((run_dir / "eval_finetune.json").read_text())
    assert run_dir / after["checkpoint"] == Path(selection["checkpoint"])
    last = run_dir / "eval_finetune_last.json"
    assert last.is_file() != selection["is_last"]
    expected_last = json.loads(last.read_text()) if last.is_file() else after
    assert report["success_after_last"] == expected_last["success_rate"]
    assert "Kept:" in markdown


def test_rerun_after_stop_reuses_finished_stages(tmp_path):
    run_dir = tmp_path / "run"
    assert _run(run_dir, "--stop-after", "eval_pretrain") == 0
    stages = json.loads((run_dir / "stages.json").read_text())
    assert set(stages) == {"demos", "pretrain", "eval_pretrain"}
    demos_mtime = (run_dir / "demos.zarr").stat().st_mtime_ns
    checkpoint = run_dir / "pretrain" / "checkpoints" / "latest.pt"
    pretrain_mtime = checkpoint.stat().st_mtime_ns
    baseline = (run_dir / "eval_pretrain.json").read_text()

    # the resumed run fine-tunes as the task presets do: GRPO groups and the demo term; a GRPO
    # rollout is one 80-step episode (20 chunks); uniform groups kept so that the tiny policy's
    # all-failing group still gives an update
    assert _run(run_dir, "ppo.bc_coef=1.0", "advantage.advantage_type=grpo",
                "advantage.group_size=2", "ppo.num_steps_per_rollout=20",
                "advantage.drop_uniform_groups=false", "ppo.critic_warmup_iterations=0") == 0
    metrics = [json.loads(line) for line in
               (run_dir / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("train/bc_loss", 0) > 0 for m in metrics)
    assert (run_dir / "demos.zarr").stat().st_mtime_ns == demos_mtime
    assert checkpoint.stat().st_mtime_ns == pretrain_mtime
    assert (run_dir / "eval_pretrain.json").read_text() == baseline
    after = json.loads((run_dir / "stages.json").read_text())
    assert after["demos"] == stages["demos"] and after["pretrain"] == stages["pretrain"]
    assert after["finetune"]["done"] and (run_dir / "report.md").is_file()


def test_bad_task_and_bad_override_fail_before_work(tmp_path, capsys):
    assert cli_main(["run", "--out", str(tmp_path / "r"), "--task", "metaworld/pick-plaice"]) == 1
    assert "pick-place" in capsys.readouterr().err
    assert cli_main(["run", "--out", str(tmp_path / "r"), "ppo.learning_rat=1"]) == 1
    assert "learning_rat" in capsys.readouterr().err
    assert not (tmp_path / "r" / "demos.zarr").exists()


def test_run_evaluates_the_checkpoint_selected_on_validation_seeds(tmp_path):
    run_dir = tmp_path / "run"
    assert _run(run_dir, "--stop-after", "eval_pretrain", "pretrain.num_epochs=3",
                "pretrain.select_every_steps=2", "pretrain.select_episodes=1") == 0
    best = run_dir / "pretrain" / "checkpoints" / "best.pt"
    assert best.is_file()
    assert json.loads((run_dir / "eval_pretrain.json").read_text())["checkpoint"] == \
        "pretrain/checkpoints/best.pt"
    stage = json.loads((run_dir / "stages.json").read_text())["pretrain"]
    assert stage["env_steps"] > 0                      # the validation rollouts are counted
    steps = [r["step"] for r in stage["summary"]["selection"]]
    assert len(steps) >= 2 and all(b // 2 > a // 2 for a, b in zip(steps, steps[1:]))


def test_state_baseline_observes_full_state_only(tmp_path, capsys):
    """``policy.obs=state``: pretraining, evaluations and PPO read MetaWorld's 39-d state."""
    import torch

    run_dir = tmp_path / "run"
    assert _run(run_dir, "policy.obs=state") == 0
    payload = torch.load(run_dir / "pretrain" / "checkpoints" / "latest.pt",
                         map_location="cpu", weights_only=False)
    assert payload["shape_meta"]["obs"] == {"full_state": {"shape": [39], "type": "low_dim"}}
    report = json.loads((run_dir / "report.json").read_text())
    assert report["finetune_env_steps"] >= 64 and 0.0 <= report["success_after"] <= 1.0
    assert _run(tmp_path / "bad", "policy.obs=depth") != 0
    assert "policy.obs" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "demos.zarr").exists()
