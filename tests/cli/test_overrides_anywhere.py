"""``key=value`` overrides anywhere among the options, and on every command, ``dummy``
included (issue 12, item 8)."""

from __future__ import annotations

import pytest
import torch

from maniflow_rl.cli.main import main as cli_main
from maniflow_rl.cli.main import parse_command_line
from maniflow_rl.cli.run_cmd import build_run_config


def test_overrides_mixed_with_options():
    args = parse_command_line(["run", "ppo.num_envs=2", "--task", "metaworld/reach-v3",
                               "ppo.batch_size=8", "--out", "runs/x", "env.num_points=64"])
    assert args.task == "metaworld/reach-v3" and args.out == "runs/x"
    assert args.overrides == ["ppo.num_envs=2", "ppo.batch_size=8", "env.num_points=64"]
    cfg = build_run_config(args)
    assert (cfg.ppo.num_envs, cfg.ppo.batch_size, cfg.env.num_points) == (2, 8, 64)


@pytest.mark.parametrize("argv", [
    ["finetune", "--checkpoint", "c.pt", "ppo.seed=3", "--out", "o", "env.num_points=64"],
    ["pretrain", "--dataset", "d.zarr", "lr=1e-3", "--out", "o", "policy.horizon=8"],
    ["eval", "--checkpoint", "c.pt", "env.num_points=64", "--episodes", "3",
     "env.camera=corner"],
    ["dummy", "ppo.seed=3", "--iterations", "2", "policy.horizon=8"]])
def test_every_command_takes_trailing_and_leading_overrides(argv):
    args = parse_command_line(argv)
    assert args.overrides == [a for a in argv if "=" in a]


def test_unknown_options_are_still_errors(capsys):
    with pytest.raises(SystemExit) as info:
        parse_command_line(["run", "--task", "metaworld/reach-v3", "--bogus", "ppo.seed=1"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_dummy_applies_overrides(tmp_path):
    out = tmp_path / "d"
    assert cli_main(["dummy", "ppo.num_envs=2", "--out", str(out), "--iterations", "1",
                     "ppo.num_steps_per_rollout=4", "ppo.batch_size=8", "ppo.save_interval=1",
                     "policy.num_inference_steps=2", "--no-progress"]) == 0
    payload = torch.load(out / "latest.pt", weights_only=False)
    assert payload["ppo_config"]["num_envs"] == 2
    assert payload["ppo_config"]["num_steps_per_rollout"] == 4
    assert payload["policy_config"]["num_inference_steps"] == 2
    assert payload["policy_config"]["noise_method"] == "flow_noise"   # --noise-method default
