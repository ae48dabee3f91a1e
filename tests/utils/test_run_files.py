"""Run-folder hygiene after a restart (issue 12, item 3): metrics.jsonl truncation, stale temp
files of interrupted atomic saves, TensorBoard purge, resume seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from maniflow_rl.utils.checkpoint import is_temp_file_name, remove_stale_temp_files, write_atomic
from maniflow_rl.utils.logger import MetricLogger
from maniflow_rl.utils.run_files import keep_metrics_row, prepare_run_dir, truncate_metrics_jsonl
from maniflow_rl.utils.seeding import reseed_env_runner_for_resume, resume_env_seed


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_keep_metrics_row():
    assert keep_metrics_row('{"global_step": 20, "x": 1}', 20)
    assert not keep_metrics_row('{"global_step": 21}', 20)
    assert keep_metrics_row('{"iteration": 3}', 20)              # no step: kept
    assert keep_metrics_row('{"vector_step": 5}', 5, step_key="vector_step")
    assert not keep_metrics_row('{"global_step": 4', 20)          # torn write
    assert not keep_metrics_row("", 20) and not keep_metrics_row("[1, 2]", 20)


def test_truncate_metrics_jsonl_keeps_rows_up_to_the_step_atomically(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = ['{"global_step": 10, "a": 1.5}', '{"global_step": 20}', "", '{"note": "no step"}',
             '{"global_step": 30}', '{"global_step": 40']
    path.write_text("\n".join(lines))
    assert truncate_metrics_jsonl(path, 20) == 3
    assert _rows(path) == [{"global_step": 10, "a": 1.5}, {"global_step": 20},
                           {"note": "no step"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]   # no temp left
    inode = path.stat().st_ino
    assert truncate_metrics_jsonl(path, 20) == 0 and path.stat().st_ino == inode   # untouched
    assert truncate_metrics_jsonl(tmp_path / "missing.jsonl", 5) == 0
    assert truncate_metrics_jsonl(path, 0) == 2 and _rows(path) == [{"note": "no step"}]


def test_remove_stale_temp_files_removes_only_atomic_save_temps(tmp_path):
    stale = [".latest.pt.abcd1234.tmp", ".checkpoint_4.pt.x_9zq0w1.tmp",
             ".metrics.jsonl.k2j3h4g5.tmp"]
    kept = ["notes.tmp", ".latest.pt.tmp", ".latest.pt.ABCD1234.tmp", "latest.pt.abcd1234.tmp",
            ".latest.pt.abcd123.tmp", "latest.pt", ".latest.pt.abcd1234.tmp.bak"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 10)
    (tmp_path / ".dir.abcd1234.tmp").mkdir()
    os.symlink(tmp_path / "latest.pt", tmp_path / ".link.abcd1234.tmp")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        kept + [".dir.abcd1234.tmp", ".link.abcd1234.tmp"])
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_write_killed_midway_leaves_a_temp_file_that_cleanup_removes(tmp_path):
    target = tmp_path / "latest.pt"
    target.write_bytes(b"good")
    script = textwrap.dedent(f"""
        import os, signal
        from maniflow_rl.utils.checkpoint import write_atomic
        def write(f):
            f.write(b"half")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        write_atomic({str(target)!r}, write)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9
    leftovers = [p for p in tmp_path.iterdir() if p.name != "latest.pt"]
    assert len(leftovers) == 1 and is_temp_file_name(leftovers[0].name), leftovers
    assert target.read_bytes() == b"good"
    report = prepare_run_dir(tmp_path, 0)
    assert report["removed_temp_files"] == leftovers
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_write_atomic_temp_names_match_the_cleanup_pattern(tmp_path, monkeypatch):
    import tempfile

    seen = []
    real = tempfile.mkstemp

    def recording(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        seen.append(os.path.basename(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", recording)
    for name in ("latest.pt", "checkpoint_12.pt", "metrics.jsonl", "a.b.c"):
        write_atomic(tmp_path / name, lambda f: f.write(b"1"))
    assert len(seen) == 4 and all(is_temp_file_name(n) for n in seen), seen


def test_metric_logger_purge_step_writes_a_session_start_at_that_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    logger = MetricLogger(tmp_path, purge_step=7)
    logger.log({"a": 1.0}, 7)
    logger.close()
    (event_file,) = list(tmp_path.glob("events.out.tfevents.*"))
    starts = [e.step for e in EventFileLoader(str(event_file)).Load()
              if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [7]


def test_resume_env_seed():
    assert resume_env_seed(0, 640) == resume_env_seed(0, 640)
    assert len({resume_env_seed(0, 640), resume_env_seed(0, 1280), resume_env_seed(1, 640),
                0, 640}) == 5

    class NoSeed:
        num_envs = 2

    class Seeded:
        def seed(self, seeds):
            self.seeds = seeds

    assert reseed_env_runner_for_resume(NoSeed(), 0, 10) is False
    runner = Seeded()
    assert reseed_env_runner_for_resume(runner, 3, 10) is True
    assert runner.seeds == resume_env_seed(3, 10)
