"""``maniflow-rl demos``: scripted MetaWorld demonstrations -> DP3/ManiFlow zarr dataset.

    maniflow-rl demos --task metaworld/button-press-topdown-v3 --episodes 10 \\
        --out data/button-press-topdown.zarr

Only successful episodes are kept (new layouts are tried until --episodes succeed or
--max-attempts run out). Layout: data/{point_cloud,state,action,full_state,potential,
next_potential[,img]}, meta/episode_ends (zarr format 2).
"""

from __future__ import annotations

import argparse
import json


def add_demos_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demos", help="generate scripted MetaWorld / robosuite demos (zarr)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help="e.g. metaworld/pick-place-v3, pick-place or "
                                                 "robosuite/lift")
    p.add_argument("--episodes", type=int, default=10, help="successful episodes to keep")
    p.add_argument("--out", required=True, help="output .zarr directory (must not exist, be "
                                                "empty, or be a demo dataset with --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing demo dataset at --out (nothing else is replaced)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-episode-steps", type=int, default=None,
                   help="default: 200 (MetaWorld), the task's own (robosuite)")
    p.add_argument("--max-attempts", type=int, default=None, help="default: 3 * episodes + 10")
    p.add_argument("--point-cloud-source", choices=("camera", "geometry"), default="camera")
    p.add_argument("--num-points", type=int, default=None,
                   help="default: 512 (MetaWorld), 1024 (robosuite)")
    p.add_argument("--camera", default="corner2", help="MetaWorld only")
    p.add_argument("--action-mode", choices=("absolute", "delta"), default="absolute",
                   help="robosuite only: 10-D absolute pose (6-D rotation) or 7-D OSC deltas")
    p.add_argument("--action-noise", type=float, default=0.0,
                   help="std of the Gaussian added to every executed expert action (noisy demos)")
    p.add_argument("--use-rgb-image", action="store_true", help="also store data/img [T,H,W,3]")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_demos(args: argparse.Namespace) -> int:
    from maniflow_rl.data.demos import generate_demos
    from maniflow_rl.utils.output_dir import check_output_dir

    from maniflow_rl.envs.registry import resolve_env_task
    from maniflow_rl.envs.robosuite.tasks import is_robosuite_task

    resolve_env_task(args.task)   # an unknown task fails before anything is written
    for name in ("episodes", "num_points", "max_episode_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    check_output_dir(args.out)
    robosuite = is_robosuite_task(args.task)
    num_points = args.num_points or (1024 if robosuite else 512)
    env_kwargs = ({"num_points": num_points, "action_mode": args.action_mode} if robosuite else
                  {"point_cloud_source": args.point_cloud_source, "num_points": num_points,
                   "camera": args.camera, "use_image": bool(args.use_rgb_image)})
    summary = generate_demos(args.task, args.episodes, args.out, seed=args.seed,
                             max_episode_steps=args.max_episode_steps, env_kwargs=env_kwargs,
                             progress=not getattr(args, "no_progress", False),
                             max_attempts=getattr(args, "max_attempts", None),
                             overwrite=bool(getattr(args, "overwrite", False)),
                             action_noise=float(getattr(args, "action_noise", 0.0)))
    print(json.dumps(summary, indent=2))
    if not summary["complete"]:
        print(f"warning: only {summary['episodes']} of {summary['requested']} episodes succeeded")
        return 1
    return 0
