"""`maniflow-rl pretrain` / `maniflow-rl eval` subcommands, driven through their parsers."""

import argparse
import json

import pytest
from pretrain_testlib import TINY_POLICY, write_synthetic_dataset

from maniflow_rl.cli.eval_cmd import add_eval_parser, run_eval
from maniflow_rl.cli.pretrain_cmd import (add_pretrain_parser, build_config, run_pretrain,
                                          split_overrides)


def _parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_pretrain_parser(sub)
    add_eval_parser(sub)
    return parser


def _policy_overrides():
    return [f"policy.{k}={v}".replace(" ", "") for k, v in TINY_POLICY.items()]


def test_split_overrides():
    groups = split_overrides(["policy.horizon=16", "policy.pointnet_hidden_dims=[8,16]",
                              "env.num_points=512", "lr=1e-4", "obs_keys=null"])
    assert groups == {"policy": {"horizon": 16, "pointnet_hidden_dims": [8, 16]},
                      "env": {"num_points": 512}, "top": {"lr": 1e-4, "obs_keys": None}}
    with pytest.raises(ValueError, match="key=value"):
        split_overrides(["horizon"])
    with pytest.raises(ValueError, match="group"):
        split_overrides(["ppo.lr=1"])


def test_build_config_metaworld_env_defaults(tmp_path):
    dataset = write_synthetic_dataset(tmp_path / "d.zarr", n_episodes=2, length=12)
    args = _parser().parse_args(["pretrain", "--dataset", str(dataset), "--out",
                                 str(tmp_path / "o"), "--task", "metaworld/reach",
                                 "--epochs", "3", "policy.horizon=8", "ema_decay=0.99",
                                 "env.camera=corner"])
    cfg = build_config(args)
    assert cfg.num_epochs == 3 and cfg.ema_decay == 0.99
    assert cfg.policy_config == {"horizon": 8}
    assert cfg.env_kwargs["num_points"] == 32             # taken from the dataset
    assert cfg.env_kwargs["camera"] == "corner"
    bad = _parser().parse_args(["pretrain", "--dataset", str(dataset), "--out", "x",
                                "no_such_field=1"])
    with pytest.raises(ValueError, match="unknown pretrain option"):
        build_config(bad)


def test_pretrain_then_eval_cli(tmp_path, capsys):
    dataset = write_synthetic_dataset(tmp_path / "d.zarr", n_episodes=3, length=16)
    out = tmp_path / "run"
    args = _parser().parse_args(["pretrain", "--dataset", str(dataset), "--out", str(out),
                                 "--epochs", "2", "--batch-size", "16", "--device", "cpu",
                                 "--no-progress", "--task", "dummy", *_policy_overrides()])
    assert run_pretrain(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2
    ckpt = out / "checkpoints" / "latest.pt"

    args = _parser().parse_args(["eval", "--checkpoint", str(ckpt), "--episodes", "3",
                                 "--num-envs", "2", "--no-progress",
                                 "env.max_episode_steps=6", "--output",
                                 str(tmp_path / "eval.json")])
    assert run_eval(args) == 0
    printed = capsys.readouterr().out
    assert "success rate" in printed and "dummy" in printed and "EMA" in printed
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_episodes"] == 3 and result["task"] == "dummy"
    assert len(result["episodes"]) == 3
