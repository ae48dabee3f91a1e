"""The README's RL results table, from the ``report.json`` of finished ``maniflow-rl run``s.

    python benchmarks/rl_results_table.py runs/assembly-v3 runs/coffee-push-v3 runs/stick-push-v3

Prints the markdown table with each run's exact command and machine below it, and saves the
rows as JSON (``benchmarks/results/rl_results.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from maniflow_rl.pipeline.report import RESULTS_TABLE_HEADER, results_table_row

DEFAULT_OUT = Path(__file__).parent / "results" / "rl_results.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    reports = []
    for run_dir in args.run_dirs:
        path = run_dir / "report.json"
        if not path.is_file():
            raise SystemExit(f"{path} not found: finish the run first (maniflow-rl run ...)")
        report = json.loads(path.read_text())
        report.pop("config", None)
        reports.append(report)
    print(RESULTS_TABLE_HEADER)
    for report in reports:
        print(results_table_row(report))
    print()
    for report in reports:
        print(f"- `{report['command']}` — {report['machine']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reports, indent=2))
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
