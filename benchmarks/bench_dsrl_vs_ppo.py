"""Sample efficiency of DSRL vs PPO from finished runs on the same imitation checkpoint.

    python benchmarks/bench_dsrl_vs_ppo.py --ppo runs/assembly-v3 --dsrl runs/assembly-v3-dsrl

For each run: the imitation baseline (its ``eval_pretrain.json``), the env steps at which a
20-episode evaluation during fine-tuning first reached baseline + ``--gain`` points (None when
it never did), the final 50-episode success, and for DSRL the cost split logged by the trainer
(learner updates/s, the share of wall-clock spent learning vs stepping envs). The ratio
``ppo_steps / dsrl_steps`` is the sample-efficiency ratio (goal >= 5). Prints and saves JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_OUT = Path(__file__).parent / "results" / "dsrl_vs_ppo.json"


def load_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "finetune" / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `maniflow-rl run` first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def steps_to_gain(metrics: list[dict], baseline: float, gain: float) -> int | None:
    """First ``global_step`` whose ``eval/success_rate`` >= baseline + gain."""
    for row in metrics:
        if row.get("eval/success_rate", -1.0) >= baseline + gain - 1e-9:
            return int(row["global_step"])
    return None


def summarize(run_dir: Path, gain: float) -> dict:
    baseline = json.loads((run_dir / "eval_pretrain.json").read_text())["success_rate"]
    metrics = load_metrics(run_dir)
    final_path = run_dir / "eval_finetune.json"
    final = json.loads(final_path.read_text())["success_rate"] if final_path.is_file() else None
    evals = [row["eval/success_rate"] for row in metrics if "eval/success_rate" in row]
    out = {"run_dir": str(run_dir), "baseline": baseline, "final": final,
           "env_steps": int(metrics[-1]["global_step"]),
           "steps_to_gain": steps_to_gain(metrics, baseline, gain),
           "lowest_eval": min(evals) if evals else None}
    cost_rows = [row for row in metrics if "perf/updates_per_s" in row]
    if cost_rows:
        out["updates_per_s"] = sum(r["perf/updates_per_s"] for r in cost_rows) / len(cost_rows)
        out["learning_share"] = sum(r["perf/learning_share"] for r in cost_rows) / len(cost_rows)
        out["env_sps"] = sum(r["perf/env_sps"] for r in cost_rows) / len(cost_rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ppo", type=Path, required=True)
    parser.add_argument("--dsrl", type=Path, required=True)
    parser.add_argument("--gain", type=float, default=0.20)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    result = {"gain": args.gain, "ppo": summarize(args.ppo, args.gain),
              "dsrl": summarize(args.dsrl, args.gain)}
    ppo_steps, dsrl_steps = result["ppo"]["steps_to_gain"], result["dsrl"]["steps_to_gain"]
    result["sample_efficiency_ratio"] = (ppo_steps / dsrl_steps
                                         if ppo_steps and dsrl_steps else None)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
