"""How well the policy's point tokens cover the objects of a task (perception diagnostic).

    python benchmarks/bench_point_token_coverage.py \
        --checkpoint runs/imit10/stick-pull-v3/pretrain/checkpoints/best.pt \
        --demos runs/imit10/stick-pull-v3/demos.zarr --tokens 64 128 \
        --out benchmarks/results/point_token_coverage_stick-pull.json

For every ``--stride``-th demo frame, the points the checkpoint's encoder keeps (farthest
point sampling on the normalized xyz, exactly as in training and rollouts,
``data/point_token_cache.presample_point_cloud``), re-cut for each ``--tokens`` count, against
the positions of MetaWorld's objects in the frame's ``full_state`` (object 1, object 2, goal,
hand; ``maniflow_rl/evaluation/token_coverage.py`` defines the statistics). Prints and saves
JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from maniflow_rl.data.point_token_cache import presample_point_cloud
from maniflow_rl.data.replay_buffer import ReplayBuffer
from maniflow_rl.evaluation.evaluate import load_policy_from_checkpoint
from maniflow_rl.evaluation.token_coverage import (METAWORLD_STATE_SLICES, kept_point_spacing,
                                                   token_coverage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--demos", type=Path, required=True)
    parser.add_argument("--tokens", type=int, nargs="+", default=[64])
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--radius", type=float, default=0.03)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    policy, _ = load_policy_from_checkpoint(str(args.checkpoint))
    data = ReplayBuffer.copy_from_path(str(args.demos))
    if "full_state" not in data.keys():
        raise SystemExit(f"{args.demos} has no full_state (MetaWorld demos written by "
                         "`maniflow-rl demos` have it)")
    cloud = np.asarray(data["point_cloud"])[::args.stride].astype(np.float32)
    state = np.asarray(data["full_state"])[::args.stride]
    tokenizer = policy.obs_encoder.tokenizers["point_cloud"]
    result = {"checkpoint": str(args.checkpoint), "demos": str(args.demos),
              "frames": int(len(cloud)), "cloud_points": int(cloud.shape[1]), "by_tokens": {}}
    for count in args.tokens:
        tokenizer.num_tokens = int(count)
        kept = presample_point_cloud(policy, "point_cloud", cloud)[..., :3]
        row = {"kept_point_spacing_m": kept_point_spacing(kept)}
        for name, part in METAWORLD_STATE_SLICES.items():
            row[name] = token_coverage(kept, cloud[..., :3], state[:, part], args.radius)
        result["by_tokens"][str(count)] = row
    text = json.dumps(result, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
