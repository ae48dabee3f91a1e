"""How often the robosuite scripted experts succeed, and in how many steps.

The layouts are the demos' attempt layouts (``derive_episode_seed(demos seed, k)``,
k = 0..episodes-1): the success rate ``maniflow-rl demos`` would see on its first attempts.
Cameras are rendered tiny (the experts read the simulator's state, not the images), so this
measures the experts, not the renderer. Results:
benchmarks/results/robosuite_experts.json.

    python benchmarks/bench_robosuite_experts.py [--episodes 10] [--action-mode absolute]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

RESULTS = Path(__file__).resolve().parent / "results" / "robosuite_experts.json"


def expert_success(task: str, episodes: int, seed: int, action_mode: str) -> dict:
    from maniflow_rl.envs.vector.runner import derive_episode_seed
    from maniflow_rl.envs.robosuite.env import RobosuitePointCloudEnv

    env = RobosuitePointCloudEnv(task, action_mode=action_mode, num_points=16, camera_size=16,
                                 image_size=8)
    outcomes, lengths = [], []
    try:
        for k in range(episodes):
            env.reset(seed=derive_episode_seed(seed, k))
            for step in range(1, env.max_episode_steps + 1):
                _, _, terminated, truncated, info = env.step(env.expert_action())
                if terminated or truncated:
                    break
            outcomes.append(bool(info["success"]))
            lengths.append(step)
    finally:
        env.close()
    return {"success_rate": sum(outcomes) / episodes, "successes": sum(outcomes),
            "episodes": episodes, "mean_length": sum(lengths) / episodes, "outcomes": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+",
                        default=["robosuite/lift", "robosuite/can", "robosuite/square"])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="the demos seed (demos.seed)")
    parser.add_argument("--action-mode", default="absolute", choices=("absolute", "delta"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = {"seed": args.seed, "action_mode": args.action_mode, "tasks": {}}
    for task in args.tasks:
        result["tasks"][task] = expert_success(task, args.episodes, args.seed, args.action_mode)
        row = result["tasks"][task]
        print(f"{task:18s} {row['successes']}/{row['episodes']} succeeded, "
              f"{row['mean_length']:.0f} steps on average", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
