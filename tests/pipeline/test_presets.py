"""Shipped presets: ``default.yaml`` plus one YAML per task, layered default <- task <- overrides."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from maniflow_rl.cli.config import PRESET_DIR, load_config
from maniflow_rl.cli.main import build_parser
from maniflow_rl.cli.run_cmd import build_run_config
from maniflow_rl.envs.metaworld.tasks import DP3_DIFFICULTY
from maniflow_rl.envs.registry import resolve_env_task
from maniflow_rl.pipeline.run import RunConfig

TASK_PRESETS = sorted(p for p in PRESET_DIR.glob("*.yaml") if p.stem != "default")


def resolve_task(name: str) -> str:
    """A preset's file stem (``stick-push-v3``, ``robosuite-lift``) or a task name -> the
    canonical task."""
    return resolve_env_task(name.replace("robosuite-", "robosuite/", 1))


def _run_config(*argv):
    return build_run_config(build_parser().parse_args(["run", *argv]))


def test_there_is_a_preset_for_a_task_of_each_harder_dp3_group():
    groups = {DP3_DIFFICULTY[resolve_task(p.stem).split("/")[-1]] for p in TASK_PRESETS
              if not p.stem.startswith("robosuite-")}
    assert {"medium", "hard", "very_hard"} <= groups


@pytest.mark.parametrize("path", TASK_PRESETS, ids=lambda p: p.stem)
def test_task_preset_names_its_task_and_layers_on_default(path):
    raw = OmegaConf.to_container(OmegaConf.load(path))
    task = resolve_task(path.stem)
    assert resolve_task(raw["env"]["task"]) == task, "the file name and env.task disagree"
    cfg = _run_config("--task", task)  # finds the preset by the bare task name
    default = load_config(RunConfig, "default")
    # every key the task preset sets wins; every key it leaves out comes from default.yaml
    for group, fields in raw.items():
        for key, value in (fields.items() if isinstance(fields, dict) else [(None, fields)]):
            got = getattr(getattr(cfg, group), key) if key else getattr(cfg, group)
            if (group, key) == ("env", "task"):
                assert resolve_task(got) == task
            else:
                assert got == value, f"{group}.{key}"
    for group in ("eval", "advantage"):
        if group not in raw:
            assert getattr(cfg, group) == getattr(default, group)
    untouched = [k for k in ("camera", "num_points") if k not in raw["env"]]
    for key in untouched:
        assert getattr(cfg.env, key) == getattr(default.env, key)


def test_command_line_overrides_beat_the_task_preset():
    path = TASK_PRESETS[0]
    cfg = _run_config("--task", path.stem, "ppo.total_timesteps=1234", "eval.episodes=3")
    assert cfg.ppo.total_timesteps == 1234 and cfg.eval.episodes == 3


def test_task_without_preset_uses_default_with_that_task():
    cfg = _run_config("--task", "metaworld/reach-v3")
    default = load_config(RunConfig, "default")
    assert cfg.env.task == "metaworld/reach-v3"
    assert cfg.ppo == default.ppo and cfg.pretrain == default.pretrain


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="presets"):
        _run_config("--config", "no-such-preset")
