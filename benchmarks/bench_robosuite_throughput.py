"""robosuite env throughput (steps per second), one run, all variants:

  a_bare_step          robosuite's own step (20 Hz control, 25 physics steps), no rendering
  b_pointcloud_env     RobosuitePointCloudEnv: the step + its cameras (two depth + RGB renders
                       fused into the cloud, FPS to 1024, the 84x84 eye-in-hand image)
  c_runner_<k>_workers the vector runner's total steps/s over 2 envs (auto-reset) with k spawn
                       workers; k = 0: the same envs in this process

Random actions in the delta mode (7-D, in [-1, 1]), so every variant moves the arm the same way.
Every variant runs ``--repeats`` times, interleaved; the best run is reported (the machine is
shared), the median saved too. Results: benchmarks/results/robosuite_throughput_<task>.json.

    python benchmarks/bench_robosuite_throughput.py [--task robosuite/lift] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def bench_env(task: str, steps: int, bare: bool) -> float:
    """Steps/s of one env: robosuite's own step alone (``bare``: no cameras, no cloud) or
    ``RobosuitePointCloudEnv.step`` with its observations."""
    from maniflow_rl.envs.robosuite.env import RobosuitePointCloudEnv

    env = RobosuitePointCloudEnv(task, action_mode="delta", max_episode_steps=10**6)
    env.reset(seed=0)
    step = env._rs.step if bare else env.step
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 7))
    start = time.perf_counter()
    for action in actions:
        step(action)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def bench_runner(task: str, steps: int, workers: int, num_envs: int = 2) -> float:
    from maniflow_rl.envs.robosuite import RobosuiteEnvRunner

    with RobosuiteEnvRunner(task, num_envs=num_envs, seed=0, num_workers=workers,
                            action_mode="delta") as runner:
        runner.reset()
        actions = np.random.default_rng(0).uniform(-1, 1, (steps, num_envs, 7)).astype(np.float32)
        start = time.perf_counter()
        for action in actions:
            runner.step(action)
        return steps * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="robosuite/lift")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    variants = {"a_bare_step": lambda: bench_env(args.task, args.steps, bare=True),
                "b_pointcloud_env": lambda: bench_env(args.task, args.steps, bare=False),
                **{f"c_runner_{k}_workers": (lambda k=k: bench_runner(args.task, args.steps // 2, k))
                   for k in (0, 1, 2)}}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            runs[name].append(fn())
            print(f"{name:22s} {runs[name][-1]:8.1f} steps/s", flush=True)
    result = {"task": args.task, "steps": args.steps, "repeats": args.repeats,
              "machine": f"{platform.machine()} {os.cpu_count()} cores",
              "steps_per_s_best": {k: round(max(v), 1) for k, v in runs.items()},
              "steps_per_s_median": {k: round(statistics.median(v), 1) for k, v in runs.items()}}
    best = result["steps_per_s_best"]
    result["camera_cost_ratio"] = round(best["a_bare_step"] / best["b_pointcloud_env"], 2)
    result["scaling_2_workers_vs_1"] = round(best["c_runner_2_workers"]
                                             / best["c_runner_1_workers"], 2)
    print(json.dumps(result, indent=2))
    out = Path(args.out) if args.out else RESULTS / (
        f"robosuite_throughput_{args.task.split('/')[-1]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
