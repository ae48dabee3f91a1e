"""MetaWorld point-cloud env throughput (steps per second), one run, all variants:

  a_bare_step                    bare MetaWorld step only
  a_bare_step_plus_depth         bare step + one mujoco.Renderer depth render of the same camera
                                 (corner2 at DP3's position) and size: the reference for b
  a_bare_step_plus_shared_depth  the same with our shared-context SceneRenderer (what b uses)
  b_camera_env                   MetaWorldPointCloudEnv, camera source (depth -> cloud -> crop
                                 -> FPS 512)
  c_geometry_env                 MetaWorldPointCloudEnv, geometry source (no rendering)
  d_runner_<k>_workers           MetaWorldEnvRunner total steps/s (camera source, auto-reset)
                                 with k spawn workers; k = 0: the same envs in this process

Every variant is measured ``--repeats`` times, interleaved, and the best run is reported (the
machine is shared; the median is saved too). Results: benchmarks/results/env_throughput.json.

    python benchmarks/bench_env_throughput.py [--task pick-place-v3] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "env_throughput.json"
LONG = 100_000  # episode cap for single-env variants: measure steps, not resets


def bench_bare(task: str, steps: int, size: int, with_depth: bool, shared: bool = False) -> float:
    """Bare MetaWorld steps, optionally + one corner2 depth render per step with
    ``mujoco.Renderer`` (or, ``shared=True``, with our shared-context ``SceneRenderer``)."""
    import mujoco
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    from maniflow_rl.envs.metaworld.env import DP3_CAMERA_POS
    from maniflow_rl.envs.metaworld.rendering import SceneRenderer

    env = ALL_V3_ENVIRONMENTS[task]()
    env._freeze_rand_vec, env.seeded_rand_vec, env._set_task_called = False, True, True
    env.max_path_length = LONG
    env.seed(0)
    env.reset()
    env.model.vis.quality.offsamples = 0
    cam = env.model.camera("corner2").id
    env.model.cam_pos[cam] = DP3_CAMERA_POS["corner2"]  # the view the point-cloud env renders
    renderer = mujoco.Renderer(env.model, size, size) if with_depth and not shared else None
    scene_renderer = SceneRenderer(env.model, env.model_name, size, size) if shared else None
    if renderer is not None:
        renderer.enable_depth_rendering()
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 4))

    def one(a):
        env.step(a)
        if renderer is not None:
            renderer.update_scene(env.data, camera=cam)
            renderer.render()
        if scene_renderer is not None:
            scene_renderer.depth(env.data, cam)

    one(actions[0])
    start = time.perf_counter()
    for a in actions:
        one(a)
    elapsed = time.perf_counter() - start
    if renderer is not None:
        renderer.close()
    return steps / elapsed


def bench_env(task: str, steps: int, source: str, size: int, num_points: int) -> float:
    from maniflow_rl.envs.metaworld.env import MetaWorldPointCloudEnv

    env = MetaWorldPointCloudEnv(task, point_cloud_source=source, camera_size=size,
                                 num_points=num_points, max_episode_steps=LONG)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 4))
    env.step(actions[0])
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def bench_runner(task: str, steps: int, num_envs: int, workers: int, size: int,
                 num_points: int, chunk: int = 1, **runner_kwargs) -> float:
    """Total env steps/s of a ``MetaWorldEnvRunner`` (``runner_kwargs``: e.g. ``backend``,
    ``point_cloud_source``), timed after the workers are up and one step is done; ``chunk >
    1``: ``step_chunk`` with chunks of that many sub-steps (one request per chunk)."""
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner

    with MetaWorldEnvRunner(task, num_envs=num_envs, seed=0, num_workers=workers,
                            camera_size=size, num_points=num_points,
                            **runner_kwargs) as runner:
        runner.reset()
        rng = np.random.default_rng(0)
        runner.step(rng.uniform(-1, 1, (num_envs, 4)))
        rounds = max(1, steps // (num_envs * chunk))
        start = time.perf_counter()
        for _ in range(rounds):
            if chunk > 1:
                runner.step_chunk(rng.uniform(-1, 1, (num_envs, chunk, 4)))
            else:
                runner.step(rng.uniform(-1, 1, (num_envs, 4)))
        elapsed = time.perf_counter() - start
    return rounds * num_envs * chunk / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="pick-place-v3")
    parser.add_argument("--steps", type=int, default=400, help="steps per measurement")
    parser.add_argument("--size", type=int, default=128, help="depth render size")
    parser.add_argument("--num-points", type=int, default=512)
    parser.add_argument("--num-envs", type=int, default=4, help="envs of the runner variants")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="runner worker counts (1 = all envs in one worker: IPC cost only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    task, n, size, pts, envs = args.task, args.steps, args.size, args.num_points, args.num_envs

    variants = {
        "a_bare_step": lambda: bench_bare(task, 4 * n, size, with_depth=False),
        "a_bare_step_plus_depth": lambda: bench_bare(task, n, size, with_depth=True),
        "a_bare_step_plus_shared_depth": lambda: bench_bare(task, n, size, True, shared=True),
        "b_camera_env": lambda: bench_env(task, n, "camera", size, pts),
        "c_geometry_env": lambda: bench_env(task, 2 * n, "geometry", size, pts),
        "d_runner_0_workers": lambda: bench_runner(task, 2 * n, envs, 0, size, pts),
    }
    for k in args.workers:
        variants[f"d_runner_{k}_workers"] = (
            lambda k=k: bench_runner(task, 2 * n, envs, k, size, pts))

    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, fn in variants.items():
            runs[name].append(fn())
            print(f"[repeat {r + 1}/{args.repeats}] {name:30s} {runs[name][-1]:8.1f} steps/s",
                  flush=True)
    best = {name: max(v) for name, v in runs.items()}
    median = {name: statistics.median(v) for name, v in runs.items()}

    ours, in_process = best["b_camera_env"], best["d_runner_0_workers"]
    summary = {  # overhead = extra time per step relative to the reference
        "overhead_camera_vs_bare_step_plus_depth": best["a_bare_step_plus_depth"] / ours - 1.0,
        "overhead_camera_vs_bare_step_plus_shared_depth":
            best["a_bare_step_plus_shared_depth"] / ours - 1.0,
        "geometry_vs_camera_speedup": best["c_geometry_env"] / ours,
        "scaling": {f"{k}_workers_vs_in_process": best[f"d_runner_{k}_workers"] / in_process
                    for k in args.workers},
    }
    import metaworld  # noqa: F401
    import mujoco
    from importlib.metadata import version

    result = {
        "task": task, "steps": n, "depth_size": size, "num_points": pts, "runner_num_envs": envs,
        "repeats": args.repeats,
        "steps_per_second_best": best, "steps_per_second_median": median, "all_runs": runs,
        **summary,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": platform.python_version(),
                    "mujoco": mujoco.__version__, "metaworld": version("metaworld"),
                    "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("\nbest steps/s:")
    for name, value in best.items():
        print(f"  {name:30s} {value:8.1f}   (median {median[name]:.1f})")
    print("camera env overhead beyond bare step + depth render: "
          f"{100 * summary['overhead_camera_vs_bare_step_plus_depth']:.1f} % (mujoco.Renderer), "
          f"{100 * summary['overhead_camera_vs_bare_step_plus_shared_depth']:.1f} % "
          "(our shared-context renderer)")
    for name, value in summary["scaling"].items():
        print(f"runner scaling {name}: {value:.2f}x")
    print(f"load average before/after: {load_before} / {os.getloadavg()}")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
