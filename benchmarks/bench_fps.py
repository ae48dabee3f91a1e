"""Farthest point sampling cost: the encoder's coordinate-major ``farthest_point_indices``
against the earlier layout (each pick reduces the last axis of ``[M, N, 3]``), same inputs.

The rollout runs it on ``num_envs x n_obs_steps`` clouds per decision (the default run: 16 x 2
of 512 points, 64 tokens). Minimum over interleaved repeats, one torch thread; checks the picks
are identical. Prints and saves JSON.

    python benchmarks/bench_fps.py [--clouds 16] [--points 512 1024] [--picks 64] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from maniflow_rl.policy.maniflow.obs_encoder import farthest_point_indices

DEFAULT_OUT = Path(__file__).parent / "results" / "fps.json"


def last_axis_fps(xyz: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The earlier layout (the baseline of this benchmark): ``[M, N, 3]``, reduce the last axis."""
    m, n, _ = xyz.shape
    rows = torch.arange(m)
    chosen = torch.empty(m, num_samples, dtype=torch.long)
    min_dist = torch.full((m, n), float("inf"), dtype=xyz.dtype)
    farthest = torch.zeros(m, dtype=torch.long)
    for i in range(num_samples):
        chosen[:, i] = farthest
        center = xyz[rows, farthest].unsqueeze(1)
        min_dist = torch.minimum(min_dist, (xyz - center).square().sum(-1))
        farthest = min_dist.argmax(-1)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clouds", type=int, default=16)
    parser.add_argument("--points", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--picks", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fns = {"last_axis_ms": last_axis_fps, "coordinate_major_ms": farthest_point_indices}
    results = []
    for points in args.points:
        xyz = torch.rand(args.clouds, points, 3, generator=torch.Generator().manual_seed(0))
        same = torch.equal(last_axis_fps(xyz, args.picks), farthest_point_indices(xyz, args.picks))
        times = {name: [] for name in fns}
        with torch.no_grad():
            for _ in range(args.repeats):
                for name, fn in fns.items():
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        fn(xyz, args.picks)
                    times[name].append((time.perf_counter() - start) / args.calls * 1e3)
        row = {"clouds": args.clouds, "points": points, "picks": args.picks,
               "same_picks": same, **{k: round(min(v), 3) for k, v in times.items()}}
        row["speedup"] = round(row["last_axis_ms"] / row["coordinate_major_ms"], 2)
        print(json.dumps(row), flush=True)
        results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch_threads": 1, "results": results}, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
