"""The whole config is checked before any work (issue 12, item 6): a bad value in any section
is a one-line error before the run directory exists or demos are generated, and the output
directory is checked for writability first."""

from __future__ import annotations

import pytest

from maniflow_rl.cli.main import main as cli_main
from maniflow_rl.config import RunConfig, load_config
from maniflow_rl.utils.output_dir import check_output_dir

BAD_VALUES = {
    "env.point_cloud_source=lidar": "env.point_cloud_source",
    "env.num_points=0": "env.num_points",
    "env.max_episode_steps=0": "env.max_episode_steps",
    "env.reward_type=shaping": "env.reward_type",
    "env.action_mode=joint": "env.action_mode",
    "env.task=robosuite/lfit": "did you mean robosuite/lift",
    "env.num_workers=-1": "env.num_workers",
    "pretrain.num_epochs=0": "pretrain.num_epochs",
    "pretrain.batch_size=0": "pretrain.batch_size",
    "pretrain.lr=0": "pretrain.lr",
    "pretrain.ema_decay=1.0": "pretrain.ema_decay",
    "demos.episodes=0": "demos.episodes",
    "eval.episodes=0": "eval.episodes",
    "eval.num_envs=0": "eval.num_envs",
    "eval.video_episodes=-1": "eval.video_episodes",
    "runtime.torch_threads=0": "runtime.torch_threads",
    "runtime.torch_threads=all": "runtime.torch_threads",
    "runtime.rollout_torch_threads=auto": "runtime.rollout_torch_threads",
    "pretrain.select_every_steps=-1": "pretrain.select_every_steps",
    "pretrain.select_episodes=0": "pretrain.select_episodes",
    "eval.seed=200000": "pretrain validation seeds",      # = the default validation bases
    "demos.seed=100001": "demos.seed",                     # the second evaluation env's base
}


@pytest.mark.parametrize("override", sorted(BAD_VALUES))
def test_bad_value_rejected_by_validate(override):
    cfg = load_config(RunConfig, ["default"], [override])
    with pytest.raises(ValueError, match=BAD_VALUES[override].replace(".", r"\.")):
        cfg.validate()


@pytest.mark.parametrize("reward_type", ["sparse", "shaped", "dense"])
def test_dsrl_demos_need_a_reward_they_can_be_paid(reward_type):
    """DSRL-NA puts the run's demos in its replay; their rewards are rebuilt for the sparse and
    the shaped reward only, so a dense reward is refused before any stage starts."""
    cfg = load_config(RunConfig, ["default"], ["finetune.algorithm=dsrl", "dsrl.variant=na",
                                               f"env.reward_type={reward_type}"])
    if reward_type == "dense":
        with pytest.raises(ValueError, match="env.reward_type=dense"):
            cfg.validate()
        cfg.dsrl.variant = "sac"   # SAC keeps no demos in replay: allowed
    cfg.validate()


@pytest.mark.parametrize("override", ["env.point_cloud_source=lidar", "env.num_points=0",
                                      "pretrain.num_epochs=0"])
def test_run_rejects_before_the_run_directory_exists(tmp_path, capsys, override):
    out = tmp_path / "run"
    assert cli_main(["run", "--out", str(out), "--no-progress", override]) == 1
    err = capsys.readouterr().err
    assert BAD_VALUES[override] in err and "Traceback" not in err
    assert not out.exists()


def test_finetune_checks_its_config_before_reading_the_checkpoint(tmp_path, capsys):
    assert cli_main(["finetune", "--checkpoint", str(tmp_path / "missing.pt"), "--out",
                     str(tmp_path / "ft"), "env.point_cloud_source=lidar"]) == 1
    assert "env.point_cloud_source" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()


def test_check_output_dir(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()          # nothing is created
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(ValueError, match="lies below the file"):
        check_output_dir(tmp_path / "f" / "a" / "b")
    assert [p.name for p in tmp_path.iterdir()] == ["f"]   # no probe file left behind
