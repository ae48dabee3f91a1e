"""Imitation baseline: success after consistency-flow pretraining on scripted demos, for MetaWorld
tasks of the DP3 difficulty groups, next to DP3's published 10-demo group averages.

Each task runs the first stages of ``maniflow-rl run`` (demos -> pretrain -> eval_pretrain) in
``<runs-dir>/<task>``, so the same run directory can later be fine-tuned by the plain
``maniflow-rl run --task <task>`` command. Per task (50 evaluation episodes on the run's
evaluation seeds, 95 % Wilson intervals):

- ``selected``: the checkpoint the pipeline uses, chosen on *validation* seeds
  (``pretrain.select_every_steps``; the last one when selection is off);
- ``final``: the last checkpoint, evaluated on the same episodes;
- ``validation_best5_mean``: DP3 / ManiFlow's statistic (mean of the 5 best evaluations over
  training), read here on the validation rollouts (``pretrain.select_episodes`` each), not on
  the evaluation seeds as the papers do;
- ``pretrain_minutes``: wall-clock of the pretrain stage, validation rollouts included.

    MUJOCO_GL=egl python benchmarks/bench_imitation_baseline.py \
        --tasks hammer-v3 pick-place-v3 stick-pull-v3 [key=value overrides ...]
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


def _summary(result: dict) -> dict:
    return {"success_rate": result["success_rate"], "ci": [result["ci_low"], result["ci_high"]],
            "episodes": result["num_episodes"]}


def task_row(cfg, run_dir: Path, task: str, wall_s: float) -> dict:
    """One table row from a finished ``eval_pretrain`` stage of ``run_dir``."""
    from maniflow_rl.envs.metaworld.tasks import task_difficulty
    from maniflow_rl.pipeline.run import evaluate_checkpoint

    selected = json.loads((run_dir / "eval_pretrain.json").read_text())
    stages = json.loads((run_dir / "stages.json").read_text())
    summary = stages["pretrain"].get("summary", {})
    latest = run_dir / "pretrain" / "checkpoints" / "latest.pt"
    final = (selected if selected.get("checkpoint") == "pretrain/checkpoints/latest.pt"
             else evaluate_checkpoint(cfg, latest))
    group = task_difficulty(task)
    return {"task": task, "dp3_group": group, "dp3_group_success": DP3_GROUP_SUCCESS.get(group),
            "demos": cfg.demos.episodes, "pretrain_steps": summary.get("global_step"),
            "pretrain_minutes": stages["pretrain"]["wall_s"] / 60.0,
            "selected": {**_summary(selected), "checkpoint": selected.get("checkpoint"),
                         "step": _selected_step(summary)},
            "final": _summary(final),
            "validation_best5_mean": summary.get("validation_best5_mean"),
            "validation_curve": summary.get("selection", []),
            "wall_s_this_invocation": wall_s}


def _selected_step(summary: dict) -> int | None:
    """Step of best.pt (``checkpoint_selection.best_record``: ties go to the later step)."""
    from maniflow_rl.train.checkpoint_selection import best_record

    best = best_record(summary.get("selection") or [])
    return None if best is None else best["step"]


def main() -> None:
    from maniflow_rl.cli.config import load_config
    from maniflow_rl.envs.metaworld.tasks import resolve_task
    from maniflow_rl.pipeline.run import RunConfig, machine_description, run_pipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["button-press-topdown-v3"])
    parser.add_argument("--config", default="default")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    rows = {row["task"]: row for row in saved.get("results", [])}
    for task in args.tasks:
        name = resolve_task(task)
        cfg = load_config(RunConfig, args.config, [*args.overrides, f"env.task=metaworld/{name}",
                                                   f"run_dir={args.runs_dir}/{name}"])
        start = time.time()
        run_pipeline(cfg, command=f"benchmarks/bench_imitation_baseline.py --tasks {task}",
                     progress=False, stop_after="eval_pretrain")
        rows[name] = {**task_row(cfg, cfg.resolved_run_dir(), name, time.time() - start),
                      "config": args.config, "overrides": args.overrides}
        print(json.dumps({k: v for k, v in rows[name].items() if k != "validation_curve"}))
        out = {"machine": machine_description(), "results": list(rows.values())}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
