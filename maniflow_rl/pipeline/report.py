"""The run report: ``report.json``, ``report.md`` and ``learning_curve.png``.

Success before and after RL come from the same evaluation protocol (same seeds, same episode
count, seeded noise draws), each with a 95 % Wilson confidence interval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_history(metrics_path: Path) -> list[dict[str, float]]:
    if not metrics_path.is_file():
        return []
    return [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]


def plot_learning_curve(history: list[dict[str, float]], baseline: float | None,
                        path: Path, reference: dict[str, Any] | None = None,
                        selected: dict[str, Any] | None = None) -> Path | None:
    """Success rate (evaluation and training rollouts) and return vs env steps; ``reference``
    (``eval_reference.json``) puts the starting policy's score at env step 0 of the
    evaluation curve; ``selected`` (``finetune/selection.json``) marks the policy kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return None
    fig, (ax_success, ax_return) = plt.subplots(1, 2, figsize=(11, 4))

    def series(key):
        pts = [(h["global_step"], h[key]) for h in history if key in h]
        return [p[0] for p in pts], [p[1] for p in pts]

    steps, values = series("rollout/success_rate")
    if steps:
        ax_success.plot(steps, values, alpha=0.6, label="training rollouts (stochastic)")
    steps, values = series("eval/success_rate")
    if reference is not None:
        steps, values = [0, *steps], [reference["success_rate"], *values]
    if steps:
        ax_success.plot(steps, values, "o-", label="evaluation (fixed seeds; step 0: start)")
    if selected and selected.get("success_rate") is not None:
        ax_success.plot([selected["global_step"]], [selected["success_rate"]], "*", ms=14,
                        color="C3", label="kept (finetune.select)")
    if baseline is not None:
        ax_success.axhline(baseline, color="k", ls="--", label=f"imitation baseline ({baseline:.0%})")
    ax_success.set(xlabel="env steps", ylabel="success rate", ylim=(-0.02, 1.02),
                   title="Success rate")
    ax_success.legend(loc="lower right", fontsize=8)
    steps, values = series("rollout/return_mean")
    ax_return.plot(steps, values)
    ax_return.set(xlabel="env steps", ylabel="episode return", title="Training return")
    from matplotlib.ticker import FuncFormatter

    for ax in (ax_success, ax_return):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _relative_to(path: str | None, folder: Path) -> str | None:
    """``path`` relative to ``folder`` when it lies inside it (links in report.md)."""
    if not path:
        return None
    resolved, base = Path(path).resolve(), folder.resolve()
    return resolved.relative_to(base).as_posix() if resolved.is_relative_to(base) else str(path)


def _fmt_eval(result: dict[str, Any]) -> str:
    return (f"{result['success_rate']:.1%} [{result['ci_low']:.1%}, {result['ci_high']:.1%}] "
            f"({result['num_successes']}/{result['num_episodes']})")


def write_report(run_dir: Path, stages: dict[str, dict[str, Any]], config: dict[str, Any],
                 command: str, machine: str) -> dict[str, Any]:
    before = json.loads((run_dir / "eval_pretrain.json").read_text())
    after = json.loads((run_dir / "eval_finetune.json").read_text())
    selection = after.get("selection")   # finetune_selection.py; absent in older runs
    last_file = run_dir / "eval_finetune_last.json"
    last = json.loads(last_file.read_text()) \
        if selection and not selection["is_last"] and last_file.is_file() else after
    history = load_history(run_dir / "finetune" / "metrics.jsonl")
    reference_file = run_dir / "finetune" / "eval_reference.json"
    reference = json.loads(reference_file.read_text()) if reference_file.is_file() else None
    authority_file = run_dir / "finetune" / "steering_authority.json"
    authority = json.loads(authority_file.read_text()) if authority_file.is_file() else None
    curve = plot_learning_curve(history, before["success_rate"], run_dir / "learning_curve.png",
                                reference, selection)
    eval_points = [h["eval/success_rate"] for h in history if "eval/success_rate" in h]
    stage_rows = {name: {"wall_s": rec.get("wall_s", 0.0), "env_steps": rec.get("env_steps", 0)}
                  for name, rec in stages.items() if name != "report"}
    report = {
        "task": config["env"]["task"],
        "algorithm": config.get("finetune", {}).get("algorithm", "ppo"),
        "demos": config["demos"]["episodes"],
        "eval_episodes": before["num_episodes"],
        "eval_seed": config["eval"]["seed"],
        "success_before": before["success_rate"],
        "success_before_ci": [before["ci_low"], before["ci_high"]],
        "success_after": after["success_rate"],
        "success_after_ci": [after["ci_low"], after["ci_high"]],
        "success_gain": after["success_rate"] - before["success_rate"],
        # the policy kept (finetune.select) and the last checkpoint, on the same episodes
        "selection": selection,
        "success_after_last": last["success_rate"],
        "success_after_last_ci": [last["ci_low"], last["ci_high"]],
        "min_eval_success_during_rl": min(eval_points) if eval_points else None,
        "eval_success_during_rl": eval_points,
        # the starting policy on the same evaluation episodes as eval_success_during_rl
        "eval_reference_success": reference["success_rate"] if reference else None,
        "steering_authority": authority,          # DSRL: steering_check.py
        "finetune_env_steps": stages.get("finetune", {}).get("env_steps", 0),
        "finetune_executed_env_steps": stages.get("finetune", {}).get("executed_env_steps"),
        "total_wall_s": sum(r["wall_s"] for r in stage_rows.values()),
        "stages": stage_rows,
        "machine": machine,
        "command": command,
        "learning_curve": curve.name if curve else None,
        "video": _relative_to(after.get("video_path"), run_dir),
        "config": config,
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    (run_dir / "report.md").write_text(_markdown(report, before, after, last))
    return report


def _kept(report: dict[str, Any]) -> str:
    """Which fine-tuned policy the run kept, in words (``finetune/selection.json``)."""
    selection = report["selection"]
    if selection["mode"] == "last":
        return "the last checkpoint (`finetune.select=last`)"
    if selection["is_start"]:
        alone = selection.get("num_candidates", 2) == 1
        return "the starting policy (" + ("the only candidate" if alone else
                                          "no evaluation during RL beat it") + ")"
    where = f"env step {selection['global_step']:,}"
    if selection.get("success_rate") is None:
        return f"the last checkpoint ({where})"
    return (f"the checkpoint of {where}" + (", the last one" if selection["is_last"] else "")
            + f": {selection['success_rate']:.0%} on the evaluations during RL, the highest "
            "(`finetune.select=best`)")


def _markdown(report: dict[str, Any], before: dict[str, Any], after: dict[str, Any],
              last: dict[str, Any]) -> str:
    kept_last = last is after
    lines = [
        f"# maniflow-rl run report: {report['task']}",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}",
        "",
        "| | success rate [95 % CI] | mean episode length |",
        "|---|---|---|",
        f"| imitation (consistency flow, {report['demos']} demos) | {_fmt_eval(before)} | "
        f"{before['mean_length']:.1f} |",
        f"| after {report.get('algorithm', 'ppo').upper()} fine-tuning"
        f"{' (kept)' if report.get('selection') else ''} | "
        f"{_fmt_eval(after)} | {after['mean_length']:.1f} |",
        *([] if kept_last else [f"| last checkpoint | {_fmt_eval(last)} | "
                                f"{last['mean_length']:.1f} |"]),
        "",
        *([f"Kept: {_kept(report)} (`finetune/selection.json`; chosen on the layouts of the "
           "evaluations during RL, never on the episodes of this table).",
           ""] if report.get("selection") else []),
        f"Gain: **{report['success_gain'] * 100:+.1f} points** on {report['eval_episodes']} "
        f"evaluation episodes (seeds from {report['eval_seed']}: the same layouts and noise "
        "seeds before and after; the chain from the initial noise is deterministic).",
    ]
    if report["min_eval_success_during_rl"] is not None:
        lines.append(f"Lowest evaluated success during RL: "
                     f"{report['min_eval_success_during_rl']:.1%}.")
    if report.get("eval_reference_success") is not None:
        lines.append(f"The evaluations during RL: "
                     f"{', '.join(f'{v:.0%}' for v in report['eval_success_during_rl'])}; the "
                     f"starting policy on the same episodes and seeds: "
                     f"{report['eval_reference_success']:.0%} (`finetune/eval_reference.json`).")
    authority = report.get("steering_authority")
    if authority:
        lines.append(f"Steering authority of the frozen policy at N(0, I): its chunk moves "
                     f"{authority['within']:.3f} across initial noises against "
                     f"{authority['between']:.3f} across states (ratio {authority['ratio']:.3f}"
                     + ("; low: DSRL has little to choose from" if authority["low"] else "")
                     + ").")
    executed = report.get("finetune_executed_env_steps")
    if executed is not None:
        lines.append(f"Fine-tuning env steps: {report['finetune_env_steps']:,} budgeted, "
                     f"{executed:,} executed (an env whose episode ended inside an action chunk "
                     f"waits for the next decision point; GRPO envs idle after their episode).")
    lines += ["", "| stage | wall-clock | env steps |", "|---|---|---|"]
    for name, row in report["stages"].items():
        lines.append(f"| {name} | {row['wall_s'] / 60:.1f} min | {row['env_steps']:,} |")
    lines.append(f"| **total** | {report['total_wall_s'] / 60:.1f} min | |")
    if report["learning_curve"]:
        lines += ["", f"![learning curve]({report['learning_curve']})"]
    if report["video"]:
        which = "kept" if report.get("selection") else "fine-tuned"
        lines += ["", f"Video of the {which} policy: [{report['video']}]({report['video']})"]
    return "\n".join(lines) + "\n"


RESULTS_TABLE_HEADER = (
    "| task | DP3 group | algorithm | demos | imitation [95 % CI] | after RL [95 % CI] | gain | "
    "lowest eval during RL | RL env steps | wall-clock (total) |\n"
    "|---|---|---|---|---|---|---|---|---|---|")


def results_table_row(report: dict[str, Any]) -> str:
    """One markdown row of the README results table from a run's ``report.json``."""
    from maniflow_rl.envs.metaworld.tasks import task_difficulty
    from maniflow_rl.envs.robosuite.tasks import is_robosuite_task

    def pct(value: float, ci: list[float]) -> str:
        return f"{value:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]"

    task = report["task"]
    low = report.get("min_eval_success_during_rl")
    start = report.get("eval_reference_success")   # the same episodes before the first update
    lowest = ("-" if low is None else f"{low:.0%}"
              + ("" if start is None else f" (start {start:.0%})"))
    group = "robosuite" if is_robosuite_task(task) else task_difficulty(task).replace("_", " ")
    selection, kept = report.get("selection") or {}, ""
    if not selection.get("is_last", True):   # another policy than the last one was kept
        which = "start kept" if selection["is_start"] else \
            f"kept step {selection['global_step']:,}"
        kept = f" ({which}; last {report['success_after_last']:.0%})"
    return (f"| {task.split('/')[-1]} | {group} | "
            f"{report.get('algorithm', 'ppo').upper()} | {report['demos']} | {pct(report['success_before'], report['success_before_ci'])} | "
            f"{pct(report['success_after'], report['success_after_ci'])}{kept} | "
            f"{report['success_gain'] * 100:+.0f} | {lowest} | "
            f"{report['finetune_env_steps']:,} | {report['total_wall_s'] / 60:.0f} min |")
