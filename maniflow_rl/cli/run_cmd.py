"""``maniflow-rl run``: the whole job, resumable (see ``maniflow_rl.pipeline.run``)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys

from maniflow_rl.config import RunConfig, load_config, resolve_preset
from maniflow_rl.pipeline.run import STAGES, run_pipeline
from maniflow_rl.utils.distributed import current_info

DEFAULT_PRESET = "default"


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="demos -> pretrain -> eval -> PPO fine-tune -> eval -> report",
        description="Run (or resume) the full pipeline in one run directory. Overrides are "
                    "key=value pairs on the typed RunConfig, e.g. ppo.learning_rate=3e-5 "
                    "pretrain.num_epochs=100 env.point_cloud_source=geometry")
    p.add_argument("--task", help="metaworld/<task>; default: the preset's task")
    p.add_argument("--config", default=None,
                   help="preset name (maniflow_rl/configs/<name>.yaml) or YAML path, applied "
                        "on top of 'default'; default: the task's preset if one exists")
    p.add_argument("--out", help="run directory (default: runs/<task>)")
    p.add_argument("--stop-after", choices=STAGES, help="stop after this stage")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def build_run_config(args) -> RunConfig:
    """``default.yaml`` <- ``--config`` (or the task's preset, if one is shipped) <- overrides."""
    presets = [DEFAULT_PRESET]
    if args.config is not None:
        presets.append(args.config)
    elif args.task:
        try:
            presets.append(str(resolve_preset(args.task)))
        except FileNotFoundError:
            pass
    overrides = list(args.overrides or [])
    if args.task:
        overrides.append(f"env.task={args.task}")
    if args.out:
        overrides.append(f"run_dir={args.out}")
    return load_config(RunConfig, presets, overrides)


def run_run(args) -> int:
    cfg = build_run_config(args)
    # a plain `kill` (SIGTERM) unwinds like Ctrl-C, so the stopped stage's time is recorded
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    command = "maniflow-rl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) \
        if sys.argv and sys.argv[0].endswith("maniflow-rl") else "maniflow-rl run " + " ".join(
            shlex.quote(a) for a in (args.overrides or []))
    report = run_pipeline(cfg, command=command, progress=not args.no_progress,
                          stop_after=args.stop_after)
    if "success_before" in report and current_info().is_main:   # torchrun: rank 0 reports
        print(f"\n{report['task']}: success {report['success_before']:.1%} -> "
              f"{report['success_after']:.1%} ({report['success_gain'] * 100:+.1f} points), "
              f"report: {cfg.resolved_run_dir() / 'report.md'}")
    return 0
