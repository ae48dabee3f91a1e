"""Fault injection: the probe of issue 12, re-run. Results: benchmarks/results/fault_injection.json.

Bad inputs (benchmarks/fault_cases.py): each ``maniflow-rl`` command line runs in its own
process and must be *rejected cleanly*: rc != 0, one error line on stderr, no traceback, and
no output folder created. Silent mismatches must produce a warning or an error.

Injected faults, each *survived without loss* when nothing that was saved is damaged:

  kill -9          a PPO run (synthetic env, checkpoint every iteration) killed at random
                   moments, then resumed: latest.pt loads and is finite after every kill, the
                   resumed run continues from it, no temp files remain, metrics.jsonl holds each
                   iteration once
  full disk        a run whose checkpoint write hits a full file system (1 MB tmpfs; root
                   only): one error line naming the file, the previous latest.pt intact
  env worker kill  a MetaWorld env worker of `maniflow-rl finetune` killed mid-rollout: one
                   error line "env worker k died", the checkpoint intact, the re-run resumes
  NaN reward       a NaN reward from one env: with nonfinite_policy=error the run stops with a
                   clear error and a finite checkpoint; with drop it finishes with finite weights

    python benchmarks/bench_fault_injection.py [--kills 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "fault_injection.json"
sys.path.insert(0, str(HERE))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
CLI = [sys.executable, "-m", "maniflow_rl.cli.main"]
SHAPE_META = {"obs": {"point_cloud": {"shape": [32, 3], "type": "point_cloud"},
                      "agent_pos": {"shape": [3]}}, "action": {"shape": [2]}}
TINY_POLICY = {"horizon": 4, "n_action_steps": 2, "n_obs_steps": 1, "num_inference_steps": 2,
               "n_emb": 32, "n_layer": 1, "n_head": 2}


def run_cli(argv: list[str], timeout: float = 120, env: dict | None = None) -> dict:
    """``maniflow-rl argv`` in a fresh process: rc, stderr, wall seconds."""
    start = time.time()
    try:
        proc = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=timeout,
                              env={**ENV, **(env or {})})
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, err = None, (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else ""
    return {"rc": rc, "stderr": err, "seconds": round(time.time() - start, 2)}


def error_lines(stderr: str) -> list[str]:
    """stderr without log lines (``HH:MM:SS LEVEL ...``) and argparse usage lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(
        ("usage:", "       ")) and not (len(line) > 9 and line[2] == ":" and line[5] == ":")]


def clean_rejection(result: dict, command: str) -> bool:
    """rc != 0, exactly one ``maniflow-rl <command>: error: ...`` line, no traceback."""
    lines = error_lines(result["stderr"])
    return (result["rc"] not in (0, None) and "Traceback" not in result["stderr"]
            and len(lines) == 1 and lines[0].startswith(f"maniflow-rl {command}: error: "))


# ------------------------------------------------------------------------ bad inputs
def read_only_dir(work: Path) -> tuple[Path | None, str]:
    """A folder nobody (root included) can write: a read-only tmpfs mount when root, else a
    chmod 555 folder; None if neither works."""
    folder = work / "read_only"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs",
                               str(folder)], capture_output=True)
        return (folder, "read-only tmpfs") if done.returncode == 0 else (None, "no mount")
    folder.chmod(0o555)
    return folder, "chmod 555"


def bench_bad_inputs(work: Path) -> dict:
    from fault_cases import bad_input_cases

    ro, how = read_only_dir(work)
    rows = []
    for name, argv, env in bad_input_cases(work):
        if any("{ro}" in a for a in argv) and ro is None:
            rows.append({"case": name, "skipped": "no read-only folder available"})
            continue
        argv = [a.replace("{ro}", str(ro)) for a in argv]
        result = run_cli(argv, timeout=90, env=env)
        lines = error_lines(result["stderr"])
        rows.append({"case": name, "argv": argv, "rc": result["rc"],
                     "clean": clean_rejection(result, argv[0]),
                     "no_output_created": not (work / "out").exists(),
                     "error": lines[-1] if lines else "", "seconds": result["seconds"]})
    user_file_ok = (work / "user_file.txt").read_text() == "the user's data\n"
    user_dir_ok = (work / "user_dir" / "notes.txt").read_text() == "keep me\n"
    if ro is not None and how.startswith("read-only"):
        subprocess.run(["umount", str(ro)], capture_output=True)
    tried = [r for r in rows if "skipped" not in r]
    return {"read_only_folder": how, "tried": len(tried),
            "rejected_cleanly": sum(r["clean"] and r["no_output_created"] for r in tried),
            "user_files_intact": user_file_ok and user_dir_ok, "cases": rows}


def bench_mismatches(work: Path) -> dict:
    """Silent mismatches of item 7: each must log a warning (or raise a clear error)."""
    import logging

    from fault_cases import write_dataset

    from maniflow_rl.data import ReplayBuffer
    from maniflow_rl.data.dataset import infer_shape_meta
    from maniflow_rl.utils.shape_meta import env_mismatch_warnings

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("maniflow_rl").addHandler(handler)
    buffer = ReplayBuffer.open_zarr(str(write_dataset(work / "c7.zarr", (16, 7))))
    infer_shape_meta(buffer, point_cloud_channels=3)
    logging.getLogger("maniflow_rl").removeHandler(handler)
    payload = {"train_config": {"env_kwargs": {"point_cloud_source": "camera"}}}
    source = env_mismatch_warnings(payload, {"point_cloud_source": "geometry"})
    cases = {"7-channel zarr point cloud cut to xyz": any("7 channels" in r for r in records),
             "camera checkpoint fine-tuned on geometry clouds": bool(source)}
    return {"tried": len(cases), "flagged": sum(cases.values()), "cases": cases}


# ------------------------------------------------------------------------ faults
def train_worker(out: str, iterations: int) -> None:
    """Child process of the kill -9 test: resume from ``out/latest.pt`` if present, train up
    to ``iterations`` with a checkpoint every iteration."""
    from maniflow_rl import create_maniflow_ppo_trainer

    trainer = create_maniflow_ppo_trainer(
        SHAPE_META, policy_config=TINY_POLICY,
        ppo_config=dict(num_envs=4, num_steps_per_rollout=8, batch_size=16, update_epochs=1,
                        save_interval=1, log_interval=10**6, eval_interval=10**6,
                        eval_episodes=0, save_path=out, seed=0))
    latest = Path(out) / "latest.pt"
    if latest.is_file():
        trainer.load_checkpoint(latest)
    trainer.train(num_iterations=max(0, iterations - trainer.iteration), progress=False)
    trainer.close()


def checkpoint_state(path: Path) -> dict:
    """Whether ``path`` loads as a checkpoint with finite weights, and its iteration."""
    from maniflow_rl.utils.checkpoint import assert_finite_state, load_checkpoint_file

    if not path.is_file():
        return {"exists": False, "ok": True, "iteration": 0}
    try:
        payload = load_checkpoint_file(path, expected_kind="ppo")
        assert_finite_state(payload, str(path))
        return {"exists": True, "ok": True, "iteration": int(payload["iteration"])}
    except Exception as exc:  # noqa: BLE001 - any failure to load is a lost checkpoint
        return {"exists": True, "ok": False, "error": f"{type(exc).__name__}: {exc}"}


def temp_files(folder: Path) -> list[str]:
    from maniflow_rl.utils.checkpoint import is_temp_file_name

    return [p.name for p in folder.glob(".*") if is_temp_file_name(p.name)] \
        if folder.is_dir() else []


def bench_kills(work: Path, kills: int, rng: random.Random) -> list[dict]:
    """``kills`` kill -9s of the training child at random moments, each followed by a resume."""
    out, rows, last = work / "killed_run", [], 0
    for k in range(kills):
        child = subprocess.Popen([sys.executable, __file__, "--train-worker", str(out),
                                  "--iterations", "1000"], env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(4.0, 8.0))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        state = checkpoint_state(out / "latest.pt")
        survived = state["ok"] and state["iteration"] >= last
        rows.append({"fault": f"kill -9 #{k + 1}", "survived": bool(survived),
                     "checkpoint_iteration": state.get("iteration"),
                     "temp_files_left_by_kill": len(temp_files(out))})
        last = state.get("iteration", last)
    final = subprocess.run([sys.executable, __file__, "--train-worker", str(out),
                            "--iterations", str(last + 2)], env=ENV, capture_output=True,
                           text=True, timeout=300)
    metrics = [json.loads(line)["iteration"] for line in
               (out / "metrics.jsonl").read_text().splitlines()]
    history_ok = final.returncode == 0 and metrics == sorted(set(metrics)) and \
        metrics[-1] == last + 2 and not temp_files(out)
    for row in rows:
        row["survived"] = row["survived"] and history_ok
    rows.append({"fault": "resume after the kills", "survived": history_ok,
                 "iterations_logged": len(metrics), "final_iteration": metrics[-1]})
    return rows


def sha256(path: Path) -> str:
    from maniflow_rl.utils.checkpoint import checkpoint_identity

    return checkpoint_identity(path)["sha256"]


DUMMY = ["--no-progress", "--iterations", "1", "ppo.num_envs=2", "ppo.batch_size=8",
         "ppo.num_steps_per_rollout=4", "ppo.save_interval=1", "policy.n_emb=32",
         "policy.n_layer=1", "policy.n_head=2"]


def bench_full_disk(work: Path) -> dict:
    """A checkpoint write on a full 16 MB tmpfs (256 kB left: the metrics row fits, the 1 MB
    checkpoint does not): one error line naming the file, and the latest.pt written while there
    was space is unchanged."""
    if os.geteuid() != 0:
        return {"fault": "full disk", "skipped": "needs root (tmpfs mount)"}
    disk = work / "small_disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        return {"fault": "full disk", "skipped": "mount failed"}
    try:
        out = disk / "run"
        first = run_cli(["dummy", "--out", str(out), *DUMMY])
        before = sha256(out / "latest.pt") if first["rc"] == 0 else None
        try:
            with open(disk / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 16))
        except OSError:   # full; free 256 kB: the metrics row fits, the checkpoint does not
            filler = disk / "filler"
            os.truncate(filler, max(0, filler.stat().st_size - (256 << 10)))
        second = run_cli(["dummy", "--out", str(out), *DUMMY])
        lines = error_lines(second["stderr"])
        intact = before is not None and sha256(out / "latest.pt") == before and \
            checkpoint_state(out / "latest.pt")["ok"]
        return {"fault": "full disk", "survived": bool(intact),
                "clean_error": clean_rejection(second, "dummy")
                and "no space left on device" in lines[-1],
                "error": lines[-1] if lines else second["stderr"][-300:]}
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` that are multiprocessing spawn workers."""
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                pids.append(int(child))
    return pids


def bench_worker_kill(work: Path) -> dict:
    """Kill one env worker of a running `maniflow-rl finetune` once it has a checkpoint."""
    sys.path.insert(0, str(HERE.parent / "tests" / "cli"))
    from cli_testlib import metaworld_checkpoint   # the tests' tiny reach-v3 checkpoint

    checkpoint = metaworld_checkpoint(work / "imitation.pt")
    out = work / "ft"
    argv = ["finetune", "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress",
            "env.point_cloud_source=geometry", "env.num_points=64", "env.max_episode_steps=20",
            "env.num_workers=2", "ppo.num_envs=2", "ppo.num_steps_per_rollout=4",
            "ppo.batch_size=4", "ppo.update_epochs=1", "ppo.eval_episodes=0",
            "ppo.save_interval=1", "eval.num_envs=1"]
    proc = subprocess.Popen([*CLI, *argv, "ppo.total_timesteps=1000000"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (out / "latest.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    workers = child_pids(proc.pid) if proc.poll() is None else []
    if workers:
        os.kill(workers[-1], signal.SIGKILL)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    result = {"rc": proc.returncode, "stderr": stderr}
    lines = error_lines(stderr)
    state = checkpoint_state(out / "latest.pt")
    steps = 2 * 4 * 2 * (state.get("iteration", 0) + 1)   # envs * decisions * chunk: one more
    rerun = run_cli([*argv, f"ppo.total_timesteps={steps}"], timeout=300)
    after = checkpoint_state(out / "latest.pt")
    return {"fault": "env worker kill -9 mid-rollout", "worker_killed": bool(workers),
            "clean_error": clean_rejection(result, "finetune")
            and "env worker" in lines[-1] and "died" in lines[-1],
            "error": lines[-1] if lines else stderr[-300:],
            "survived": bool(workers) and state["ok"] and state["exists"] and rerun["rc"] == 0
            and after.get("iteration", -1) > state["iteration"],
            "checkpoint_iteration": state.get("iteration"), "resumed_to": after.get("iteration")}


def bench_nan_reward(work: Path) -> list[dict]:
    """One NaN reward from env 0 at the 10th step, with nonfinite_policy error and drop."""
    import numpy as np

    from maniflow_rl import create_maniflow_ppo_trainer
    from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
    from maniflow_rl.rl.env_input_guard import NonFiniteEnvInputError

    class NaNOnce(ManiFlowDummyEnvRunner):
        steps = 0

        def step(self, actions):
            out = super().step(actions)
            self.steps += 1
            if self.steps == 10:
                out["rewards"] = np.array(out["rewards"], dtype=np.float32)
                out["rewards"][0] = np.nan
            return out

    rows = []
    for policy in ("error", "drop"):
        out = work / f"nan_{policy}"
        trainer = create_maniflow_ppo_trainer(
            SHAPE_META, policy_config=TINY_POLICY, env_runner=NaNOnce(SHAPE_META, num_envs=2),
            ppo_config=dict(num_envs=2, num_steps_per_rollout=4, batch_size=8, update_epochs=1,
                            save_interval=1, eval_episodes=0, save_path=str(out),
                            nonfinite_policy=policy, log_interval=10**6))
        try:
            trainer.train(num_iterations=4, progress=False)
            outcome = "finished"
        except NonFiniteEnvInputError as exc:
            outcome = f"stopped: {exc}"
        trainer.close()
        state = checkpoint_state(out / "latest.pt")
        expected = outcome.startswith("stopped") if policy == "error" else outcome == "finished"
        rows.append({"fault": f"NaN reward, nonfinite_policy={policy}", "outcome": outcome,
                     "survived": bool(expected and state["ok"] and state["exists"]),
                     "checkpoint_iteration": state.get("iteration")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_worker:
        return train_worker(args.train_worker, args.iterations)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="maniflow_faults_") as tmp:
        work = Path(tmp)
        (work / "inputs").mkdir()
        bad = bench_bad_inputs(work / "inputs")
        mismatches = bench_mismatches(work)
        faults = [*bench_kills(work, args.kills, random.Random(args.seed)),
                  bench_full_disk(work), bench_worker_kill(work), *bench_nan_reward(work)]
    injected = [f for f in faults if "skipped" not in f]
    summary = {"bad_inputs_tried": bad["tried"], "bad_inputs_rejected_cleanly":
               bad["rejected_cleanly"], "user_files_intact": bad["user_files_intact"],
               "mismatches_tried": mismatches["tried"], "mismatches_flagged":
               mismatches["flagged"], "faults_injected": len(injected),
               "faults_survived_without_loss": sum(bool(f["survived"]) for f in injected),
               "fault_errors_clean": sum(bool(f.get("clean_error", True)) for f in injected),
               "faults_skipped": [f["fault"] for f in faults if "skipped" in f],
               "wall_seconds": round(time.time() - start, 1)}
    report = {"summary": summary, "bad_inputs": bad, "mismatches": mismatches,
              "faults": faults}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for row in bad["cases"]:
        if not row.get("clean", True) or not row.get("no_output_created", True):
            print(f"NOT CLEAN: {row['case']}: rc={row['rc']} {row['error'][:200]}")
    for row in injected:
        if not row["survived"] or not row.get("clean_error", True):
            print(f"FAULT NOT HANDLED: {row}")


if __name__ == "__main__":
    main()
