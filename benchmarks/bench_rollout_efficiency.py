"""Rollout efficiency of fine-tuning: env steps/s of the full collector (ManiFlow policy
inference included) divided by env steps/s of the same env runner driven by a trivial policy
(zero actions, no inference) through its fastest path (``step_chunk``: one request per chunk,
as the collector steps it; the ratio to ``step`` per sub-step is saved too), measured in one
run on the same machine.

Goal: >= 0.8 on 2 cores (action chunking amortises one inference over ``n_action_steps`` env
steps). Both measurements are repeated and interleaved; the best of each is compared (background
load only ever slows a run down), medians are saved too.

    MUJOCO_GL=egl python benchmarks/bench_rollout_efficiency.py [--num-envs 8] [--decisions 25]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

DEFAULT_OUT = Path(__file__).parent / "results" / "rollout_efficiency.json"


def trivial_policy_sps(runner, env_steps: int, chunk: int = 1) -> float:
    """Steps/s of the runner alone: zero actions, one vector step per loop, or (``chunk > 1``)
    one ``step_chunk`` of ``chunk`` sub-steps per loop (the runner's fastest path)."""
    runner.reset()
    shape = (runner.num_envs, chunk, runner.action_dim) if chunk > 1 else (runner.num_envs,
                                                                          runner.action_dim)
    actions = np.zeros(shape, dtype=np.float32)
    rounds = env_steps // (runner.num_envs * chunk)
    start = time.perf_counter()
    step = runner.step_chunk if chunk > 1 else runner.step
    for _ in range(rounds):
        step(actions)
    return rounds * runner.num_envs * chunk / (time.perf_counter() - start)


def replayed_actions_sps(runner, chunks: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Steps/s of the runner alone replaying recorded ``step_chunk`` requests ``(actions
    [N, Ca, Da], active [N])`` open-loop from a reset: the env work of the policy's own actions
    (a moving arm costs more physics than a still one) without computing them. Counted as the
    collector counts its steps/s: ``N * Ca`` env steps per chunk."""
    runner.reset()
    start = time.perf_counter()
    for actions, active in chunks:
        runner.step_chunk(actions, active=active.copy())
    return sum(a.shape[0] * a.shape[1] for a, _ in chunks) / (time.perf_counter() - start)


def collector_sps(collector, decisions: int) -> float:
    start = time.perf_counter()
    _, stats = collector.collect(decisions)
    return stats["env_steps"] / (time.perf_counter() - start)


def main() -> None:
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
    from maniflow_rl.rl.rollout_collector import ManiFlowRolloutCollector

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="metaworld/button-press-topdown-v3")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--decisions", type=int, default=25, help="decision points per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise-method", default="flow_sde")
    parser.add_argument("--num-inference-steps", type=int, default=4,
                        help="K (the default run fine-tunes with K = 4)")
    parser.add_argument("--point-cloud-source", default="camera")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    torch.set_num_threads(1)  # the env workers use the other core(s)
    with MetaWorldEnvRunner(args.task, num_envs=args.num_envs, seed=0,
                            num_workers=args.num_workers,
                            point_cloud_source=args.point_cloud_source) as runner:
        policy = ManiFlowPointcloudRLPolicy(runner.shape_meta, noise_method=args.noise_method,
                                            num_inference_steps=args.num_inference_steps)
        policy.eval()
        collector = ManiFlowRolloutCollector(policy, runner)
        env_steps = args.decisions * policy.n_action_steps * args.num_envs
        collector_sps(collector, 2)  # warm-up (workers, allocator)
        trivial, trivial_chunks, full = [], [], []
        for _ in range(args.repeats):
            trivial.append(trivial_policy_sps(runner, env_steps))
            trivial_chunks.append(trivial_policy_sps(runner, env_steps, policy.n_action_steps))
            collector.reset()
            full.append(collector_sps(collector, args.decisions))
    result = {
        "task": args.task, "num_envs": args.num_envs, "num_workers": runner.num_workers,
        "point_cloud_source": args.point_cloud_source, "noise_method": args.noise_method,
        "num_inference_steps": policy.num_inference_steps,
        "n_action_steps": policy.n_action_steps, "env_steps_per_repeat": env_steps,
        "trivial_policy_sps": {"best": max(trivial), "median": statistics.median(trivial),
                               "all": trivial},
        "collector_sps": {"best": max(full), "median": statistics.median(full), "all": full},
        "trivial_policy_chunk_sps": {"best": max(trivial_chunks), "all": trivial_chunks,
                                     "median": statistics.median(trivial_chunks)},
        "efficiency_best": max(full) / max(trivial_chunks),
        "efficiency_median": statistics.median(full) / statistics.median(trivial_chunks),
        "efficiency_median_vs_per_step_runner": statistics.median(full) / statistics.median(
            trivial),
        "goal": ">= 0.8",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in (
        "trivial_policy_sps", "trivial_policy_chunk_sps", "collector_sps", "efficiency_best",
        "efficiency_median", "efficiency_median_vs_per_step_runner")}, indent=2))


if __name__ == "__main__":
    main()
