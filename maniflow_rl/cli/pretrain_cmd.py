"""``maniflow-rl pretrain``: consistency-flow imitation training on a DP3/ManiFlow zarr dataset.

    maniflow-rl pretrain --dataset demos/button-press.zarr --task metaworld/button-press \\
        --out runs/bp --epochs 300 --eval-every 50 policy.horizon=16 policy.model_size=cpu \\
        env.num_points=512 ema_decay=0.999

Trailing ``key=value`` overrides: ``policy.<field>`` (ManiFlowPolicyConfig), ``env.<field>``
(EnvConfig of the evaluation env), ``runtime.<field>`` (threads: RuntimeConfig) and any other
PretrainConfig field. A run resumes from ``<out>/checkpoints/latest.pt`` when it exists
(``--no-resume`` to refuse).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import yaml

from maniflow_rl.train.pretrain import PretrainConfig


def parse_value(text: str) -> Any:
    """YAML scalar / list parsing: ``16`` -> int, ``1e-4`` -> float, ``[64,128]`` -> list."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # yaml 1.1 reads "1e-4" as a string
        except ValueError:
            return value
    return value


def split_overrides(overrides: list[str]) -> dict[str, dict[str, Any]]:
    """``['policy.horizon=16', 'env.num_points=512', 'lr=3e-4']`` ->
    ``{'policy': {'horizon': 16}, 'env': {'num_points': 512}, 'top': {'lr': 3e-4}}``."""
    groups: dict[str, dict[str, Any]] = {"policy": {}, "env": {}, "top": {}}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"overrides must look like key=value, got {item!r}")
        prefix, dot, name = key.partition(".")
        if dot and prefix in ("policy", "env"):
            groups[prefix][name] = parse_value(value)
        elif dot:
            raise ValueError(f"unknown override group {prefix!r} in {item!r}; use policy.*, "
                             f"env.* or a top-level field")
        else:
            groups["top"][key] = parse_value(value)
    return groups


def split_runtime_overrides(overrides: list[str] | None):
    """``(RuntimeConfig, the other overrides)``: the ``runtime.<field>=value`` items (thread
    policy, ``utils/threads.py``) as a validated section, unknown fields named."""
    from maniflow_rl.config import RuntimeConfig

    items = list(overrides or [])
    ours = [item for item in items if item.startswith("runtime.")]
    values = {k.removeprefix("runtime."): parse_value(v)
              for k, _, v in (item.partition("=") for item in ours)}
    fields = {f.name for f in dataclasses.fields(RuntimeConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown runtime option(s) {unknown}; known: {sorted(fields)}")
    return RuntimeConfig(**values).validate(), [item for item in items if item not in ours]


def env_kwargs_for(env_overrides: dict[str, Any], num_points: int | None) -> dict[str, Any]:
    """MetaWorld runner kwargs: EnvConfig defaults <- dataset point count <- ``env.*`` overrides."""
    from maniflow_rl.config import EnvConfig

    fields = {f.name for f in dataclasses.fields(EnvConfig)}
    unknown = sorted(set(env_overrides) - fields)
    if unknown:
        raise ValueError(f"unknown env option(s) {unknown}; known: {sorted(fields)}")
    base = {"num_points": num_points} if num_points else {}
    env = EnvConfig(**{**base, **env_overrides})
    kwargs = env.env_kwargs()
    if env.num_workers is not None:
        kwargs["num_workers"] = env.num_workers
    return kwargs


def dataset_num_points(path: str) -> int | None:
    """Points per cloud of a zarr dataset (read lazily), or None without ``point_cloud``."""
    from maniflow_rl.data.replay_buffer import ReplayBuffer

    buffer = ReplayBuffer.open_zarr(path)
    return int(buffer["point_cloud"].shape[1]) if "point_cloud" in buffer else None


def add_pretrain_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pretrain", help="imitation pretraining on a zarr dataset",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="DP3/ManiFlow zarr dataset")
    p.add_argument("--out", required=True, help="output directory (checkpoints, tb, eval)")
    p.add_argument("--task", default=None, help="env for evaluation, e.g. metaworld/reach")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N epochs (0: off)")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--eval-num-envs", type=int, default=1)
    p.add_argument("--eval-video", action="store_true", help="save a video at every evaluation")
    p.add_argument("--checkpoint-every", type=int, default=10, help="epochs between checkpoints")
    p.add_argument("--max-train-steps", type=int, default=None)
    p.add_argument("--val-ratio", type=float, default=0.0)
    p.add_argument("--no-resume", action="store_true",
                   help="fail instead of resuming when <out>/checkpoints/latest.pt exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="policy.<field>=v, env.<field>=v, runtime.<field>=v or "
                        "<PretrainConfig field>=v")
    return p


def build_config(args: argparse.Namespace) -> PretrainConfig:
    groups = split_overrides(split_runtime_overrides(args.overrides)[1])
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(groups["top"]) - fields)
    if unknown:
        raise ValueError(f"unknown pretrain option(s) {unknown}; known: {sorted(fields)}")
    cfg = PretrainConfig(
        dataset_path=args.dataset, output_dir=args.out, task=args.task, num_epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps, seed=args.seed,
        device=args.device, num_workers=args.num_workers, eval_every_epochs=args.eval_every,
        eval_episodes=args.eval_episodes, eval_num_envs=args.eval_num_envs,
        eval_video=args.eval_video, checkpoint_every_epochs=args.checkpoint_every,
        max_train_steps=args.max_train_steps, val_ratio=args.val_ratio,
        resume=not args.no_resume, policy_config=groups["policy"])
    cfg = dataclasses.replace(cfg, **groups["top"])
    if cfg.task is not None and cfg.task.startswith("metaworld"):
        cfg.env_kwargs = {**env_kwargs_for(groups["env"], dataset_num_points(cfg.dataset_path)),
                          **cfg.env_kwargs}
    elif groups["env"]:
        cfg.env_kwargs = {**groups["env"], **cfg.env_kwargs}
    cfg.validate()
    return cfg


def run_pretrain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maniflow_rl.train.pretrain import run_pretraining
    from maniflow_rl.utils.output_dir import check_output_dir
    from maniflow_rl.utils.threads import thread_policy

    cfg = build_config(args)
    runtime, _ = split_runtime_overrides(args.overrides)
    check_output_dir(cfg.output_dir)
    latest = Path(cfg.output_dir) / "checkpoints" / "latest.pt"
    if args.no_resume and latest.exists():
        raise ValueError(f"{latest} exists and --no-resume was given; choose another --out")
    with thread_policy(runtime.thread_policy()):
        summary = run_pretraining(cfg, progress=not args.no_progress)
    print(f"pretraining done: {summary['epochs']} epochs, {summary['global_step']} steps, "
          f"final train loss {summary['train_loss']:.4f}")
    if summary.get("eval"):
        e = summary["eval"]
        print(f"EMA policy success rate {e['success_rate']:.3f} "
              f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}] over {e['num_episodes']} episodes")
    print(f"checkpoint: {summary['checkpoint']}")
    (Path(cfg.output_dir) / "summary.json").write_text(
        json.dumps({k: v for k, v in summary.items()}, indent=2, default=str))
    return 0
