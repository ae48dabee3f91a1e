"""Imitation baseline: success rate after consistency-flow pretraining on scripted demos, for
MetaWorld tasks of different DP3 difficulty groups, next to DP3's published group averages.

Each task runs the first stages of ``maniflow-rl run`` (demos -> pretrain -> eval_pretrain) in
``runs/<task>``, so the same run directory can later be continued with PPO by the plain
``maniflow-rl run --task <task>`` command. Results are printed and saved as JSON.

    MUJOCO_GL=egl python benchmarks/bench_imitation_baseline.py \
        --tasks button-press-topdown-v3 hammer-v3 stick-pull-v3 [key=value overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

DP3_GROUP_SUCCESS = {"easy": 0.909, "medium": 0.616, "hard": 0.317, "very_hard": 0.490}
DEFAULT_OUT = Path(__file__).parent / "results" / "imitation_baseline.json"


def main() -> None:
    from maniflow_rl.cli.config import load_config
    from maniflow_rl.envs.metaworld.tasks import resolve_task, task_difficulty
    from maniflow_rl.pipeline.run import RunConfig, machine_description, run_pipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["button-press-topdown-v3"])
    parser.add_argument("--config", default="default")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    rows = []
    for task in args.tasks:
        name = resolve_task(task)
        cfg = load_config(RunConfig, args.config, [*args.overrides, f"env.task=metaworld/{name}",
                                                   f"run_dir={args.runs_dir}/{name}"])
        start = time.time()
        run_pipeline(cfg, command=f"benchmarks/bench_imitation_baseline.py --tasks {task}",
                     progress=False, stop_after="eval_pretrain")
        result = json.loads((cfg.resolved_run_dir() / "eval_pretrain.json").read_text())
        group = task_difficulty(name)
        rows.append({"task": name, "dp3_group": group,
                     "dp3_group_success": DP3_GROUP_SUCCESS.get(group),
                     "demos": cfg.demos.episodes, "pretrain_epochs": cfg.pretrain.num_epochs,
                     "success_rate": result["success_rate"],
                     "ci": [result["ci_low"], result["ci_high"]],
                     "eval_episodes": result["num_episodes"],
                     "wall_s_this_invocation": time.time() - start})
        print(json.dumps(rows[-1]))
    out = {"machine": machine_description(), "config": args.config,
           "overrides": args.overrides, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
