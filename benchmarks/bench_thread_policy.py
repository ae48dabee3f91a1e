"""Thread policy (issue 14, ``maniflow_rl/utils/threads.py``): what ``runtime.torch_threads`` and
``runtime.rollout_torch_threads`` cost or save, measured in fresh child processes.

(a) ``concurrent``: two identical small PPO fine-tunes at once vs one alone (Python API,
    dummy env runner with MetaWorld-shaped observations, the default run's policy: cpu model,
    flow_sde, K = 4). Seconds per iteration alone, and while both run (iterations inside the
    window where both children iterate); slowdown per process (goal <= 2.2x, fair share 2x).
(b) ``split``: the default ``maniflow-rl run``'s PPO iteration (``configs/default.yaml``:
    MetaWorld camera clouds, ppo.num_envs envs, 25 decision points, its PPO settings, untrained
    weights, no critic warm-up) split into env stepping (time in ``runner.step`` / ``reset``:
    the main process waits for its workers), policy inference (the rest of the rollout) and
    the update; env steps/s of the rollout / env steps/s of the same runner driven by a
    trivial policy (zero actions, interleaved; goal >= 0.9), through the runner's fastest
    path (``step_chunk``, one request per chunk, as the collector steps it); the ratio to
    ``step``-per-sub-step driving is saved beside it, and so is the ratio to the runner
    replaying the rollout's own action chunks open-loop (no inference, the same actions:
    separates the policy's compute from what its actions cost the physics).

Policies (``--policies``): ``torch`` = no policy installed, torch's default of one thread per
core (the main process before issue 14); ``auto`` = ``runtime.torch_threads=auto``; ``auto:1``
= auto with ``rollout_torch_threads=1`` (fewer threads while the env workers step); ``N`` /
``N:M`` explicit counts. Children get a fresh process registry each and no ``*_NUM_THREADS``
variables. Results: benchmarks/results/thread_policy.json (median per-iteration times; load
averages before / after: the numbers are only as quiet as the machine).

    python benchmarks/bench_thread_policy.py [--parts concurrent split]
        [--policies torch auto auto:1 1] [--iterations 6] [--warmup 1] [--repeats 2]
        [--num-envs 16] [--decisions 25] [--split-iterations 3] [--dummy-envs 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

RESULTS = Path(__file__).resolve().parent / "results" / "thread_policy.json"
SHAPE_META = {"obs": {"point_cloud": {"shape": [512, 3], "type": "point_cloud"},
                      "agent_pos": {"shape": [9], "type": "low_dim"}}, "action": {"shape": [4]}}
GOAL_SLOWDOWN, GOAL_EFFICIENCY = 2.2, 0.9


def parse_policy(spec: str):
    """``torch`` -> None (nothing installed); ``auto`` / ``N`` [``:M``] -> ThreadPolicy."""
    from maniflow_rl.utils.threads import ThreadPolicy

    if spec == "torch":
        return None
    main, _, rollout = spec.partition(":")
    return ThreadPolicy(_setting(main), _setting(rollout or "same")).validate()


def _setting(text: str) -> int | str:
    return text if text in ("auto", "same") else int(text)


def installed(spec: str):
    from maniflow_rl.utils.threads import thread_policy

    policy = parse_policy(spec)
    return nullcontext() if policy is None else thread_policy(policy)


def default_run_config(num_envs: int, decisions: int, save_path: str):
    """``configs/default.yaml`` with this benchmark's sizes (4 minibatches per epoch, as the
    default run's 400 / 100, when the rollout divides by 4); no evaluation, checkpoint or
    critic warm-up inside the timed iterations."""
    from maniflow_rl.config import RunConfig, load_config
    from maniflow_rl.utils.device import resolve_device

    samples = num_envs * decisions
    cfg = load_config(RunConfig, ["default"], [
        f"ppo.num_envs={num_envs}", f"ppo.num_steps_per_rollout={decisions}",
        f"ppo.batch_size={samples // 4 if samples % 4 == 0 else samples}",
        "ppo.eval_episodes=0", "ppo.save_interval=1000000", "ppo.log_interval=1000000",
        "ppo.critic_warmup_iterations=0", "ppo.total_timesteps=1000000000",
        f"ppo.save_path={save_path}"]).validate()
    cfg.ppo.device = str(resolve_device(cfg.ppo.device))
    return cfg


class TimedRunner:
    """An env runner whose ``step`` / ``step_chunk`` / ``reset`` time is summed in
    ``seconds``; it holds envs and runs chunks as the runner it wraps does, and keeps the
    ``step_chunk`` requests (``chunks``: copies of actions and active masks) for a replay."""

    def __init__(self, runner):
        self._runner, self.seconds, self.chunks = runner, 0.0, []

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def _timed(self, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def step(self, actions, active=None):
        return self._timed(self._runner.step, actions, active=active)

    def step_chunk(self, actions, active=None):
        self.chunks.append((np.array(actions, copy=True), np.array(
            np.ones(len(actions), bool) if active is None else active, copy=True)))
        return self._timed(self._runner.step_chunk, actions, active=active)

    def reset(self, *args, **kwargs):
        return self._timed(self._runner.reset, *args, **kwargs)


# ------------------------------------------------------------------------------ children
def child_concurrent(args, save_path: str) -> dict:
    """Timestamps ``(start, end)`` of the timed iterations of one small fine-tune."""
    import torch

    from maniflow_rl import create_maniflow_ppo_trainer

    cfg = default_run_config(args.dummy_envs, args.dummy_steps, save_path)
    with installed(args.policy):
        trainer = create_maniflow_ppo_trainer(
            SHAPE_META, ppo_config=cfg.ppo, advantage_config=cfg.advantage,
            policy_config={**cfg.policy, **cfg.finetune_policy})
        intervals = []
        for i in range(args.warmup + args.iterations):
            start = time.time()
            trainer.train_iteration()
            if i >= args.warmup:
                intervals.append((start, time.time()))
        threads = torch.get_num_threads()
        trainer.close()
    return {"intervals": intervals, "torch_threads_after": threads}


def child_split(args, save_path: str) -> dict:
    """Per-iteration env / inference / update seconds and trivial-policy steps/s."""
    from bench_rollout_efficiency import replayed_actions_sps, trivial_policy_sps

    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
    from maniflow_rl.rl.ppo.trainer import ManiFlowPPOTrainer

    cfg = default_run_config(args.num_envs, args.decisions, save_path)
    rows, trivial, trivial_chunks, replayed = [], [], [], []
    with installed(args.policy), MetaWorldEnvRunner(
            cfg.env.task, num_envs=cfg.ppo.num_envs, seed=0, num_workers=args.num_workers,
            **cfg.env.env_kwargs()) as runner:
        timed = TimedRunner(runner)
        policy = ManiFlowPointcloudRLPolicy.from_config(
            runner.shape_meta, {**cfg.policy, **cfg.finetune_policy})
        trainer = ManiFlowPPOTrainer(policy, timed, cfg.ppo, cfg.advantage)
        for i in range(args.warmup + args.split_iterations):
            timed.seconds, timed.chunks = 0.0, []
            steps, start = trainer.global_step, time.perf_counter()
            metrics = trainer.train_iteration()
            total = time.perf_counter() - start
            if i < args.warmup:
                continue
            rollout, steps = metrics["perf/rollout_seconds"], trainer.global_step - steps
            rows.append({"iteration_s": total, "rollout_s": rollout, "env_s": timed.seconds,
                         "inference_s": rollout - timed.seconds,
                         "update_s": metrics["perf/update_seconds"], "env_steps": steps,
                         "rollout_sps": steps / rollout})
            trivial.append(trivial_policy_sps(runner, int(steps)))
            trivial_chunks.append(trivial_policy_sps(runner, int(steps), policy.n_action_steps))
            replayed.append(replayed_actions_sps(runner, timed.chunks))
            trainer.collector.reset()   # the runner was reset by the trivial policy
        workers = runner.worker_thread_reports()
        trainer.close()
    return {"iterations": rows, "trivial_sps": trivial, "trivial_chunk_sps": trivial_chunks,
            "replayed_actions_sps": replayed,
            "worker_torch_threads": [w["torch_threads"] for w in workers]}


# ------------------------------------------------------------------------------ parent
def launch(part: str, policy: str, args, copies: int) -> list[dict]:
    """``copies`` children of ``part`` at once (fresh registry, no thread variables)."""
    from maniflow_rl.utils.threads import THREAD_ENV_VARS

    registry = tempfile.mkdtemp(prefix="bench_threads_")
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}
    env["MANIFLOW_THREAD_REGISTRY"] = registry
    command = [sys.executable, __file__, "--child", part, "--policy", policy,
               *child_arguments(args)]
    start = time.time()
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=args.child_timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"child {part} {policy} failed (rc {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"[{part} {policy}] {copies} process(es): {time.time() - start:.0f} s",
          file=sys.stderr, flush=True)
    return results


def child_arguments(args) -> list[str]:
    names = ("iterations", "warmup", "split_iterations", "num_envs", "decisions", "dummy_envs",
             "dummy_steps")
    out = [item for name in names for item in (f"--{name.replace('_', '-')}",
                                                str(getattr(args, name)))]
    return out + (["--num-workers", str(args.num_workers)] if args.num_workers is not None
                  else [])


def window_durations(runs: list[dict]) -> list[list[float]]:
    """Each child's iteration durations inside the window where every child iterates (all of
    them when a child has none there)."""
    low = max(run["intervals"][0][0] for run in runs)
    high = min(run["intervals"][-1][1] for run in runs)
    out = []
    for run in runs:
        inside = [end - start for start, end in run["intervals"] if start >= low and end <= high]
        out.append(inside or [end - start for start, end in run["intervals"]])
    return out


def measure_concurrent(policy: str, args) -> dict:
    alone, pair = [], []
    for _ in range(args.repeats):
        alone.append(statistics.median(window_durations(launch("concurrent", policy, args,
                                                                1))[0]))
        pair.append([statistics.median(d) for d in
                     window_durations(launch("concurrent", policy, args, 2))])
    alone_s = statistics.median(alone)
    pair_s = [statistics.median(p[k] for p in pair) for k in range(2)]
    slowdown = [s / alone_s for s in pair_s]
    return {"alone_s_per_iteration": alone_s, "together_s_per_iteration": pair_s,
            "slowdown_per_process": slowdown, "all_alone": alone, "all_together": pair,
            f"meets_goal_le_{GOAL_SLOWDOWN}x": max(slowdown) <= GOAL_SLOWDOWN}


def measure_split(policy: str, args) -> dict:
    run = launch("split", policy, args, 1)[0]
    rows = run["iterations"]
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    # the runner's fastest path (step_chunk) is the reference; per-step calls for comparison
    trivial = statistics.median(run["trivial_chunk_sps"])
    efficiency = median["rollout_sps"] / trivial
    return {"median": median, "trivial_policy_sps": run["trivial_sps"],
            "trivial_policy_chunk_sps": run["trivial_chunk_sps"],
            "rollout_efficiency": efficiency,
            "rollout_efficiency_vs_per_step_runner":
                median["rollout_sps"] / statistics.median(run["trivial_sps"]),
            "replayed_actions_sps": run["replayed_actions_sps"],
            "rollout_efficiency_vs_replayed_actions":
                median["rollout_sps"] / statistics.median(run["replayed_actions_sps"]),
            "iterations": rows,
            "share_of_iteration": {k: median[k] / median["iteration_s"]
                                   for k in ("env_s", "inference_s", "update_s")},
            "worker_torch_threads": run["worker_torch_threads"],
            f"meets_goal_ge_{GOAL_EFFICIENCY}": efficiency >= GOAL_EFFICIENCY}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["concurrent", "split"],
                        choices=["concurrent", "split"])
    parser.add_argument("--policies", nargs="+", default=["torch", "auto", "auto:1", "1"])
    parser.add_argument("--iterations", type=int, default=6, help="(a) timed iterations")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first iterations")
    parser.add_argument("--repeats", type=int, default=2, help="(a) alone / together repeats")
    parser.add_argument("--dummy-envs", type=int, default=8, help="(a) envs")
    parser.add_argument("--dummy-steps", type=int, default=8, help="(a) decisions per rollout")
    parser.add_argument("--split-iterations", type=int, default=3, help="(b) timed iterations")
    parser.add_argument("--num-envs", type=int, default=16, help="(b) MetaWorld envs")
    parser.add_argument("--decisions", type=int, default=25, help="(b) decisions per rollout")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="(b) env workers (default: the runner's, one per core)")
    parser.add_argument("--child-timeout", type=float, default=7200)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", choices=["concurrent", "split"], help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="auto", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.child:
        with tempfile.TemporaryDirectory() as save_path:
            fn = child_concurrent if args.child == "concurrent" else child_split
            print(json.dumps(fn(args, save_path)))
        return
    for spec in args.policies:   # bad settings fail before any child starts
        parse_policy(spec)
    default_run_config(args.dummy_envs, args.dummy_steps, "unused")
    default_run_config(args.num_envs, args.decisions, "unused")
    import torch

    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__},
              "load_average_before": os.getloadavg(), "args": vars(args)}
    start = time.time()
    for part, measure in (("concurrent", measure_concurrent), ("split", measure_split)):
        if part in args.parts:
            result[part] = {spec: measure(spec, args) for spec in args.policies}
    result["load_average_after"] = os.getloadavg()
    result["wall_s"] = time.time() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    summary = {part: {spec: {k: v for k, v in r.items() if not k.startswith("all_")
                             and k not in ("iterations", "trivial_policy_sps",
                                        "trivial_policy_chunk_sps", "replayed_actions_sps")}
                      for spec, r in result[part].items()}
               for part in ("concurrent", "split") if part in result}
    print(json.dumps(summary, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
