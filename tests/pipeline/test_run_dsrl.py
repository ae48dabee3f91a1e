"""``maniflow-rl run finetune.algorithm=dsrl``: the whole pipeline with latent steering on a
tiny budget (real MetaWorld, geometry point clouds), its report and the DSRL evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_run_pipeline import _run

pytest.importorskip("metaworld")

DSRL = ["finetune.algorithm=dsrl", "dsrl.variant=na", "dsrl.num_envs=2",
        "dsrl.total_timesteps=160", "dsrl.warmup_steps=40", "dsrl.batch_size=16",
        "dsrl.hidden_dims=[32,32]", "dsrl.utd_ratio=1.0", "dsrl.eval_interval=5",
        "dsrl.eval_episodes=1", "dsrl.save_interval=5", "dsrl.log_interval=5",
        "dsrl.buffer_size=1000", "dsrl.critic_obs_keys=[full_state]"]


def test_run_with_dsrl_writes_report_and_resumable_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    assert _run(run_dir, *DSRL, "env.reward_type=shaped") == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["finetune_env_steps"] >= 160 and 0.0 <= report["success_after"] <= 1.0
    stages = json.loads((run_dir / "stages.json").read_text())
    assert stages["finetune"]["algorithm"] == "dsrl"
    metrics = [json.loads(line) for line in
               (run_dir / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/success_rate" in m for m in metrics)
    # the imitation policy on the same evaluation episodes, before the first update
    reference = json.loads((run_dir / "finetune" / "eval_reference.json").read_text())
    assert reference["num_episodes"] == 1 and reference["global_step"] == 0
    assert report["eval_reference_success"] == reference["success_rate"]
    # the frozen policy's steering authority on the run's demos, measured before DSRL starts
    authority = report["steering_authority"]
    assert authority["states"] > 1 and authority["between"] > 0
    assert authority["ratio"] == pytest.approx(authority["within"] / authority["between"],
                                               rel=0.01)
    assert len(report["eval_success_during_rl"]) == sum("eval/success_rate" in m for m in metrics)
    assert any(m.get("replay/demos", 0) > 0 for m in metrics)   # NA pre-fills the run's demos
    assert any(m.get("train/gradient_steps", 0) > 0 for m in metrics)
    replay = np.load(run_dir / "finetune" / "replay.npz")
    # the demos' chunks are rewarded as the shaped env pays: success plus a potential change
    demo_reward, demo_done = replay["demo_reward"], replay["demo_terminated"].astype(bool)
    assert len(demo_reward) > 0 and np.all(demo_reward[demo_done] > 1.0)
    assert np.any((demo_reward[~demo_done] != 0.0) & (np.abs(demo_reward[~demo_done]) < 1.0))
    from maniflow_rl.evaluation.evaluate import load_policy_from_checkpoint

    steered, payload = load_policy_from_checkpoint(run_dir / "finetune" / "latest.pt")
    assert payload["kind"] == "dsrl" and hasattr(steered, "actor")
    # the critics read MetaWorld's 39-d state besides the actor's features; the actor does not
    actor_in = steered.actor.net[0].in_features
    critic_in = payload["modules"]["action_critic"]["members.0.0.weight"].shape[1]
    assert critic_in == actor_in + 39 + steered.n_action_steps * steered.action_dim
