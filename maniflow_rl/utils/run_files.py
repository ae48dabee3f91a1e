"""The run directory's history files after a restart: ``metrics.jsonl`` and stale temp files.

A trainer appends one JSON row per logged iteration to ``<save_dir>/metrics.jsonl``. When a run
is killed after its last checkpoint and resumed from it, the rows of the discarded iterations
are still in the file, and the resumed run writes those steps again. :func:`prepare_run_dir`
(call it once when a trainer starts logging, after any checkpoint is loaded) makes the folder
describe exactly the run that continues there:

- rows with ``step_key`` > the checkpoint's step are removed (the file is rewritten atomically);
  a torn last line (a kill mid-write) is dropped too;
- temp files of interrupted atomic saves (``utils/checkpoint.write_atomic``) are deleted.

Open the TensorBoard writer with ``purge_step = step + 1`` (``MetricLogger(purge_step=...)``)
for the same effect on the event files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from maniflow_rl.utils.checkpoint import remove_stale_temp_files, write_atomic
from maniflow_rl.utils.output_dir import naming_file

log = logging.getLogger("maniflow_rl")

METRICS_FILE = "metrics.jsonl"


def keep_metrics_row(line: str, max_step: float, step_key: str = "global_step") -> bool:
    """Whether one ``metrics.jsonl`` line survives truncation to ``max_step``: a JSON object
    whose ``step_key`` is <= ``max_step``, or that has no such key. Blank and unparseable lines
    (a torn write) do not survive."""
    try:
        row = json.loads(line)
    except ValueError:
        return False
    if not isinstance(row, dict):
        return False
    step = row.get(step_key)
    return not isinstance(step, (int, float)) or step <= max_step


def truncate_metrics_jsonl(path: str | os.PathLike, max_step: float,
                           step_key: str = "global_step") -> int:
    """Keep only the rows of ``path`` with ``step_key <= max_step`` (:func:`keep_metrics_row`);
    rewrite the file atomically if anything is removed. Returns the number of lines removed (0
    when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if keep_metrics_row(line, max_step, step_key)]
    removed = len(lines) - len(kept)
    if removed:
        text = "".join(line + "\n" for line in kept).encode()
        write_atomic(path, lambda f: f.write(text))
        log.info("%s: removed %d row(s) after %s %s (resumed from that step)",
                 path, removed, step_key, max_step)
    return removed


def append_metrics_row(path: str | os.PathLike, row: Mapping[str, Any]) -> None:
    """Append one JSON row to ``path`` (its folder is created if needed); a full disk raises
    an ``OSError`` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming_file(path), open(path, "a") as f:
        f.write(json.dumps(dict(row)) + "\n")


def prepare_run_dir(save_dir: str | os.PathLike, step: float,
                    step_key: str = "global_step",
                    metrics_file: str = METRICS_FILE) -> dict[str, Any]:
    """Start (or resume at ``step``) a run in ``save_dir``: truncate ``metrics_file`` to the
    rows with ``step_key <= step`` and delete stale temp files of interrupted saves (module
    docstring). A fresh run passes ``step = 0``: rows of an earlier, abandoned attempt go.
    Returns ``{"removed_rows": int, "removed_temp_files": [paths]}``."""
    save_dir = Path(save_dir)
    return {"removed_rows": truncate_metrics_jsonl(save_dir / metrics_file, step, step_key),
            "removed_temp_files": remove_stale_temp_files(save_dir)}


def open_run_logger(save_dir: str | os.PathLike, step: int, log_dir: str | None,
                    config: Mapping[str, Any], wandb_project: str | None = None,
                    wandb_run_name: str | None = None):
    """A trainer's :class:`~maniflow_rl.utils.logger.MetricLogger` (TensorBoard in
    ``log_dir`` or ``<save_dir>/tb``) for a run at ``step``: :func:`prepare_run_dir` first (rows
    and temp files of an abandoned attempt go), and TensorBoard events after ``step`` purged."""
    from maniflow_rl.utils.logger import MetricLogger

    prepare_run_dir(save_dir, step, step_key="global_step")
    return MetricLogger(log_dir or str(Path(save_dir) / "tb"), wandb_project, wandb_run_name,
                        dict(config), purge_step=step + 1)

