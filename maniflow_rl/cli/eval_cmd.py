"""``maniflow-rl eval``: success rate (95 % Wilson interval) and videos of a checkpoint.

    maniflow-rl eval --checkpoint runs/bp/checkpoints/latest.pt --episodes 50 --num-envs 2 \\
        --video-dir runs/bp/videos env.num_points=512 runtime.torch_threads=2

The task defaults to the one the checkpoint was trained for. Results are printed as a table and
saved as JSON (``--output``, default ``<checkpoint dir>/eval_<checkpoint name>.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from maniflow_rl.cli.pretrain_cmd import (env_kwargs_for, split_overrides,
                                          split_runtime_overrides)


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint in its env",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="pretrain or PPO checkpoint (.pt)")
    p.add_argument("--task", default=None, help="default: the checkpoint's training task")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100_000, help="env i is seeded with seed + i")
    p.add_argument("--num-envs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="episode step cap")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-ema", action="store_true", help="use the raw (non-EMA) weights")
    p.add_argument("--video-dir", default=None, help="write an mp4 of env 0's first episodes")
    p.add_argument("--video-episodes", type=int, default=2)
    p.add_argument("--video-point-cloud", action="store_true",
                   help="add a point-cloud panel next to the RGB frames")
    p.add_argument("--output", default=None, help="JSON results path")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="env.<field>=value, runtime.<field>=value (threads)")
    return p


def checkpoint_task(payload: dict[str, Any]) -> str | None:
    """The task a checkpoint was trained on (pretrain ``train_config`` or PPO configs)."""
    for key in ("train_config", "env_config", "ppo_config"):
        section = payload.get(key) or {}
        if isinstance(section, dict) and section.get("task"):
            return section["task"]
    return None


def format_summary(result: dict[str, Any], header: dict[str, Any]) -> str:
    rows = [*header.items(),
            ("episodes", result["num_episodes"]),
            ("success rate", f"{result['success_rate']:.3f}  [{result['ci_low']:.3f}, "
                             f"{result['ci_high']:.3f}]  (95% Wilson)"),
            ("successes", result["num_successes"]),
            ("mean return", f"{result['mean_return']:.3f}"),
            ("mean length", f"{result['mean_length']:.1f}"),
            ("env steps", result["num_env_steps"]),
            ("wall time", f"{result['wall_time_s']:.1f} s")]
    if result.get("video_path"):
        rows.append(("video", result["video_path"]))
    width = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"{str(k):<{width}} : {v}" for k, v in rows)


def run_eval(args: argparse.Namespace) -> int:
    from maniflow_rl.utils.threads import thread_policy

    runtime, overrides = split_runtime_overrides(args.overrides)
    groups = split_overrides(overrides)
    if groups["policy"] or groups["top"]:
        raise ValueError("eval accepts only env.<field>=value and runtime.<field>=value "
                         "overrides")
    with thread_policy(runtime.thread_policy()):
        return _evaluate(args, groups)


def _evaluate(args: argparse.Namespace, groups: dict[str, dict[str, Any]]) -> int:
    from maniflow_rl.evaluation import evaluate_policy, load_policy_from_checkpoint, make_env_runner

    policy, payload = load_policy_from_checkpoint(args.checkpoint, use_ema=not args.no_ema,
                                                  device=args.device)
    task = args.task or checkpoint_task(payload)
    if task is None:
        raise ValueError("the checkpoint does not name its task; pass --task metaworld/<task>")
    pc = policy.shape_meta["obs"].get("point_cloud")
    env_kwargs = (env_kwargs_for(groups["env"], pc["shape"][0] if pc else None)
                  if task.startswith("metaworld") else groups["env"])
    runner = make_env_runner(task, num_envs=args.num_envs, seed=args.seed,
                             shape_meta=policy.shape_meta, **env_kwargs)
    ckpt = Path(args.checkpoint)
    video = (Path(args.video_dir) / f"eval_{ckpt.stem}.mp4") if args.video_dir else None
    try:
        result = evaluate_policy(policy, runner, args.episodes, seed=args.seed,
                                 max_steps=args.max_steps, device=args.device, video_path=video,
                                 num_video_episodes=args.video_episodes,
                                 video_point_cloud=args.video_point_cloud,
                                 progress=not args.no_progress)
    finally:
        if hasattr(runner, "close"):
            runner.close()
    header = {"checkpoint": str(ckpt), "kind": payload.get("kind"), "task": task,
              "weights": "raw" if args.no_ema or "ema_state_dict" not in payload else "EMA",
              "seed": f"{args.seed} (+ env index), {args.num_envs} envs"}
    print(format_summary(result, header))
    out = Path(args.output) if args.output else ckpt.parent / f"eval_{ckpt.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**header, "env_kwargs": env_kwargs, **result}, indent=2,
                              default=str))
    print(f"results: {out}")
    return 0
