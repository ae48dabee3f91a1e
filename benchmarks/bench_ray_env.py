"""Ray env workers (``env.backend=ray``) vs the multiprocessing workers: total env steps/s of a
``MetaWorldEnvRunner`` with 1 and 2 workers of each backend, on a local Ray instance.

  mp_<k>   multiprocessing backend, k spawn workers
  ray_<k>  Ray backend, k actors (local ``ray.init()``, started once before timing)
  <backend>_<k>_chunk<c>  the same, stepped by ``step_chunk`` (one request per chunk of c
           sub-steps, as the rollout collector steps them; c = n_action_steps = 8 by default)

Reported: steps/s (best and median of ``--repeats`` interleaved runs: the machine is shared),
Ray's scaling from 1 to 2 workers, and Ray's overhead at equal worker count, ``mp / ray - 1``
(extra time per step; goal <= 15 %), for each request size. Results:
benchmarks/results/ray_env.json.

    python benchmarks/bench_ray_env.py [--task pick-place-v3] [--steps 200] [--repeats 2]
                                       [--chunks 1 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from bench_env_throughput import bench_runner  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ray_env.json"
GOAL_OVERHEAD = 0.15


def variant_name(prefix: str, workers: int | str, chunk: int) -> str:
    """``mp_2``, ``ray_2_chunk8``; with ``("2", "workers")``: ``2_workers_chunk8``."""
    return f"{prefix}_{workers}" + (f"_chunk{chunk}" if chunk > 1 else "")


def summarize(runs: dict[str, list[float]], workers: list[int], chunks: list[int]) -> dict:
    """Best / median steps/s, Ray scaling over its smallest worker count, Ray overhead (per
    request size: ``step`` calls, ``step_chunk`` calls)."""
    best = {name: max(v) for name, v in runs.items()}
    overhead = {variant_name(f"{k}", "workers", c):
                best[variant_name("mp", k, c)] / best[variant_name("ray", k, c)] - 1.0
                for c in chunks for k in workers}
    low = min(workers)
    return {"steps_per_second_best": best,
            "steps_per_second_median": {n: statistics.median(v) for n, v in runs.items()},
            "ray_scaling_vs_1_worker" if low == 1 else f"ray_scaling_vs_{low}_workers":
                {variant_name(f"{k}", "workers", c):
                 best[variant_name("ray", k, c)] / best[variant_name("ray", low, c)]
                 for c in chunks for k in workers},
            "ray_overhead_vs_multiprocessing": overhead,
            "meets_goal_overhead_le_15pct": {
                name: value <= GOAL_OVERHEAD for name, value in overhead.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pick-place-v3")
    parser.add_argument("--source", default="camera", choices=["camera", "geometry"])
    parser.add_argument("--steps", type=int, default=200, help="env steps per measurement")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 8],
                        help="sub-steps per request (1: step(), > 1: step_chunk())")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    from maniflow_rl.envs.vector.ray_workers import connect

    ray = connect(None, max(args.workers))   # local instance, up before any timing
    variants = {variant_name(backend, k, c): (backend, k, c) for c in args.chunks
                for k in args.workers for backend in ("mp", "ray")}
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, (backend, k, c) in variants.items():
            runs[name].append(bench_runner(
                args.task, args.steps, args.num_envs, k, 128, 512, chunk=c,
                backend="ray" if backend == "ray" else "multiprocessing",
                point_cloud_source=args.source))
            print(f"[repeat {r + 1}/{args.repeats}] {name:15s} {runs[name][-1]:8.1f} steps/s",
                  flush=True)
    result = {"task": args.task, "point_cloud_source": args.source, "steps": args.steps,
              "num_envs": args.num_envs, "repeats": args.repeats, "chunks": args.chunks,
              "all_runs": runs, **summarize(runs, args.workers, args.chunks),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "ray": ray.__version__,
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("steps_per_second_best",
                                             "ray_overhead_vs_multiprocessing")}, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
