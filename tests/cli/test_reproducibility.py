"""Same seed, same run (issue 12, item 4): ``maniflow-rl dummy``, the trainer factory and
fine-tuning from a checkpoint seed every RNG before the policy (and its fresh heads) is built,
so two runs give identical metrics even when the process's RNG was used in between."""

from __future__ import annotations

import pytest
import torch
from cli_testlib import TINY_FINETUNE, TINY_POLICY, metaworld_checkpoint, metrics_rows

from maniflow_rl import create_maniflow_ppo_trainer
from maniflow_rl.cli.main import main as cli_main

DUMMY = ["--iterations", "3", "--no-progress", "ppo.num_envs=2", "ppo.batch_size=8",
         "ppo.num_steps_per_rollout=4", "ppo.log_interval=100", "policy.n_emb=32",
         "policy.n_layer=1", "policy.n_head=2", "policy.num_inference_steps=2",
         "runtime.torch_threads=1"]
# bit-identical runs need a fixed thread count: with ``auto`` the count follows other
# processes' load, and sums reduced over other threads differ in the last bits


def test_dummy_twice_with_the_same_seed_gives_identical_metrics(tmp_path):
    assert cli_main(["dummy", "--out", str(tmp_path / "a"), *DUMMY]) == 0
    torch.rand(1000)   # the process RNG moved on, as it does between two commands
    assert cli_main(["dummy", "--out", str(tmp_path / "b"), *DUMMY]) == 0
    first, second = metrics_rows(tmp_path / "a"), metrics_rows(tmp_path / "b")
    assert len(first) == 3 and first == second
    assert cli_main(["dummy", "--out", str(tmp_path / "c"), *DUMMY, "ppo.seed=1"]) == 0
    assert metrics_rows(tmp_path / "c") != first   # the seed does matter


def test_factory_trainer_is_reproducible_in_one_process(tmp_path):
    shape_meta = {"obs": {"point_cloud": {"shape": [32, 3], "type": "point_cloud"},
                          "agent_pos": {"shape": [3]}}, "action": {"shape": [2]}}
    policy = {k: v for k, v in TINY_POLICY.items() if k != "pointnet_hidden_dims"}
    histories = []
    for name in ("a", "b"):
        torch.rand(123)
        trainer = create_maniflow_ppo_trainer(
            shape_meta, ppo_config=dict(num_envs=2, num_steps_per_rollout=4, batch_size=4,
                                        update_epochs=1, save_path=str(tmp_path / name),
                                        log_interval=100, eval_episodes=0, seed=7),
            policy_config=policy)
        history = trainer.train(num_iterations=2, progress=False)
        trainer.close()
        histories.append([{k: v for k, v in row.items() if not k.startswith("perf/")}
                          for row in history])
    assert histories[0] == histories[1]


def test_finetune_from_a_checkpoint_is_reproducible(tmp_path):
    pytest.importorskip("metaworld")
    from maniflow_rl.config import RunConfig, load_config
    from maniflow_rl.pipeline.finetune import build_finetune_trainer, close_trainer_envs

    checkpoint = metaworld_checkpoint(tmp_path / "imitation.pt")
    for name in ("a", "b"):
        torch.rand(321)
        cfg = load_config(RunConfig, None,
                          [*TINY_FINETUNE, "runtime.torch_threads=1"]).finetune_config()
        cfg.env.task, cfg.demos = "metaworld/reach-v3", None
        trainer = build_finetune_trainer(cfg, checkpoint, tmp_path / name)
        try:
            trainer.train(num_iterations=2, progress=False)
        finally:
            close_trainer_envs(trainer)
    first, second = metrics_rows(tmp_path / "a"), metrics_rows(tmp_path / "b")
    assert len(first) == 2 and first == second
