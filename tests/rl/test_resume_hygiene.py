"""A killed and resumed PPO run (issue 12, item 3): metrics.jsonl and TensorBoard hold each step
once, temp files of interrupted saves are removed on start, and the envs do not replay the
run's first layouts."""

from __future__ import annotations

import json

import pytest
import torch

from maniflow_rl import create_maniflow_ppo_trainer

SHAPE_META = {"obs": {"point_cloud": {"shape": [64, 3], "type": "point_cloud"},
                      "agent_pos": {"shape": [4]}},
              "action": {"shape": [2]}}
TINY_POLICY = {"horizon": 4, "n_action_steps": 2, "n_obs_steps": 1, "num_inference_steps": 2,
               "n_emb": 32, "n_layer": 1, "n_head": 2, "noise_method": "flow_noise"}


def _trainer(tmp_path, **ppo):
    cfg = dict(total_timesteps=10_000, num_envs=4, num_steps_per_rollout=8, batch_size=16,
               update_epochs=1, save_interval=1000, log_interval=1000, eval_interval=1000,
               eval_episodes=0, save_path=str(tmp_path / "ckpt"), seed=0)
    cfg.update(ppo)
    return create_maniflow_ppo_trainer(shape_meta=SHAPE_META, ppo_config=cfg,
                                       policy_config=TINY_POLICY)


def _rows(tmp_path):
    text = (tmp_path / "ckpt" / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_resume_truncates_metrics_and_tensorboard_to_the_checkpoint(tmp_path):
    first = _trainer(tmp_path, save_interval=2)
    first.train(num_iterations=3, progress=False)    # checkpoint at 2, "killed" after 3
    first.close()
    steps = [row["global_step"] for row in _rows(tmp_path)]
    assert [row["iteration"] for row in _rows(tmp_path)] == [1, 2, 3]
    with open(tmp_path / "ckpt" / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 4, "global_st')          # a torn last line

    resumed = _trainer(tmp_path, save_interval=2)
    resumed.load_checkpoint(tmp_path / "ckpt" / "latest.pt")
    assert resumed.iteration == 2
    resumed.train(num_iterations=1, progress=False)
    resumed.close()
    rows = _rows(tmp_path)
    assert [row["iteration"] for row in rows] == [1, 2, 3]
    assert [row["global_step"] for row in rows] == steps
    assert rows[-1] == json.loads(json.dumps(resumed.history[-1]))   # the resumed run's row

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / "ckpt" / "tb"))
    accumulator.Reload()
    events = accumulator.Scalars("rollout/reward_per_decision")
    assert [e.step for e in events] == steps
    assert events[-1].value == pytest.approx(resumed.history[-1]["rollout/reward_per_decision"])


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    stale = [".latest.pt.abcd1234.tmp", ".checkpoint_6.pt.q_w2e3r4.tmp"]
    users = ["notes.tmp", ".latest.pt.tmp", "mine.pt"]
    for name in stale + users:
        (ckpt / name).write_bytes(b"0" * 100)
    trainer = _trainer(tmp_path, save_interval=1)
    trainer.train(num_iterations=1, progress=False)
    names = {p.name for p in ckpt.iterdir()}
    assert not names & set(stale)
    assert set(users) | {"latest.pt", "checkpoint_1.pt", "metrics.jsonl", "tb"} == names


def test_resumed_run_does_not_replay_its_first_layouts(tmp_path):
    first = _trainer(tmp_path)
    first_obs = first.collector.observation()["agent_pos"].clone()   # the run's first layouts
    first.train(num_iterations=2, progress=False)
    path = first.save_checkpoint(tmp_path / "mid.pt")

    resumed = _trainer(tmp_path)
    resumed.load_checkpoint(path)
    resumed_obs = resumed.collector.observation()["agent_pos"]
    assert not torch.allclose(resumed_obs, first_obs, atol=0.1)
    assert resumed.collector.vector_steps == first.global_step // 4

    again = _trainer(tmp_path)          # resuming is reproducible: same layouts again
    again.load_checkpoint(path)
    torch.testing.assert_close(again.collector.observation()["agent_pos"], resumed_obs)
