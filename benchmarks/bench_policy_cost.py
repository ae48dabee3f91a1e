"""Per-sample compute cost of the ManiFlow policy: rollout inference, PPO update, imitation step.

MetaWorld-like shape_meta (point_cloud [512, 3], agent_pos [9], action [4]), ``cpu`` preset,
batch 64, 2 torch threads. Measures (minimum over interleaved repeats after warm-up; the
machine is shared, so the minimum is the stable number; medians are saved too), per sample:

- ``rollout``:        ``sample_actions`` under no_grad (K velocity-net calls, encoder once)
- ``ppo_update``:     ``default_forward`` + backward of a PPO-style loss
                      (flow_sde: 1 evaluated step per sample; flow_noise: K steps batched)
- ``imitation_step``: ``compute_loss`` (consistency flow) + backward

Goal: ppo_update / imitation_step <= 1.5 for flow_sde and <= K for flow_noise.

    python benchmarks/bench_policy_cost.py [--batch 64] [--repeats 5] [--out PATH]
        [--model-size cpu|paper] [--device cpu|cuda] [--autocast none|bf16]

On CUDA the timings synchronise the device (benchmarks/gpu_check.sh runs the ``paper`` size).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from maniflow_rl.policy import ManiFlowPointcloudRLPolicy
from maniflow_rl.rl.ppo.helpers import policy_autocast

SHAPE_META = {"obs": {"point_cloud": {"shape": [512, 3], "type": "point_cloud"},
                      "agent_pos": {"shape": [9], "type": "low_dim"}},
              "action": {"shape": [4]}}
DEFAULT_OUT = Path(__file__).parent / "results" / "policy_cost.json"


def _synced(fn, device: torch.device):
    """``fn`` followed by a CUDA synchronisation (kernels finish inside the timing)."""
    if device.type != "cuda":
        return fn
    return lambda: (fn(), torch.cuda.synchronize(device))


def time_round_robin(fns: dict, warmup: int, repeats: int) -> dict[str, dict[str, float]]:
    """Time each function ``repeats`` times, interleaved so background load hits all alike.

    Returns ``{name: {"min": s, "median": s}}``; the minimum is the number to compare on a
    shared machine (contention only ever adds time).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"min": min(t), "median": statistics.median(t)} for name, t in times.items()}


def make_batch(policy: ManiFlowPointcloudRLPolicy, batch: int,
               device: torch.device = torch.device("cpu")) -> dict:
    g = torch.Generator().manual_seed(0)
    obs = {k: torch.randn(batch, policy.n_obs_steps, *spec["shape"], generator=g).to(device)
           for k, spec in SHAPE_META["obs"].items()}
    action = torch.rand(batch, policy.horizon, policy.action_dim, generator=g) * 2 - 1
    return {"obs": obs, "action": action.to(device)}


def bench_method(noise_method: str, batch: int, warmup: int, repeats: int,
                 model_size: str = "cpu", device: torch.device = torch.device("cpu"),
                 autocast: str = "none") -> dict:
    torch.manual_seed(0)
    policy = ManiFlowPointcloudRLPolicy(SHAPE_META, noise_method=noise_method,
                                        model_size=model_size).to(device)
    data = make_batch(policy, batch, device)
    rollout = policy.sample_actions(data["obs"])
    recorded = {"observation": data["obs"], "chains": rollout["chains"],
                "denoise_inds": rollout["denoise_inds"]}

    def ppo_update():
        out = policy.default_forward(recorded)
        ratio = torch.exp(out["logprobs"].sum((1, 2)) - rollout["logprobs"].sum((1, 2)))
        loss = -ratio.mean() + out["values"].square().mean() - 0.01 * out["entropy"].mean()
        policy.zero_grad(set_to_none=True)
        loss.backward()

    def imitation_step():
        loss, _ = policy.compute_loss(data)
        policy.zero_grad(set_to_none=True)
        loss.backward()

    fns = {"rollout": lambda: policy.sample_actions(data["obs"]),
           "encode_obs": lambda: _no_grad(policy.encode_obs, data["obs"]),
           "ppo_update": ppo_update, "imitation_step": imitation_step}
    with policy_autocast(autocast, device):
        timed = time_round_robin({k: _synced(fn, device) for k, fn in fns.items()},
                                 warmup, repeats)
    times = {name: t["min"] for name, t in timed.items()}
    k_steps = policy.num_inference_steps
    goal = 1.5 if noise_method == "flow_sde" else float(k_steps)
    ratio = times["ppo_update"] / times["imitation_step"]
    return {"per_sample_ms": {k: 1e3 * v / batch for k, v in times.items()},
            "per_sample_ms_median": {k: 1e3 * t["median"] / batch for k, t in timed.items()},
            "ppo_update_over_imitation_step": ratio,
            "rollout_over_imitation_step": times["rollout"] / times["imitation_step"],
            "goal_ppo_over_imitation": goal, "meets_goal": ratio <= goal,
            "num_inference_steps": k_steps,
            "num_parameters": sum(p.numel() for p in policy.parameters())}


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--model-size", default="cpu", choices=["cpu", "paper"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", default="none", choices=["none", "bf16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None

    results = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "torch": torch.__version__, "threads": args.threads, "gpu": gpu},
               "shape_meta": SHAPE_META, "model_size": args.model_size, "batch": args.batch,
               "device": str(device), "autocast": args.autocast,
               "warmup": args.warmup, "repeats": args.repeats,
               "methods": {m: bench_method(m, args.batch, args.warmup, args.repeats,
                                           args.model_size, device, args.autocast)
                           for m in ("flow_sde", "flow_noise")}}
    for method, r in results["methods"].items():
        ms = r["per_sample_ms"]
        print(f"{method:10s} per sample: rollout {ms['rollout']:.3f} ms "
              f"(encode {ms['encode_obs']:.3f}), ppo_update {ms['ppo_update']:.3f} ms, "
              f"imitation_step {ms['imitation_step']:.3f} ms | ppo/imitation "
              f"{r['ppo_update_over_imitation_step']:.2f}x (goal <= "
              f"{r['goal_ppo_over_imitation']:g}x: {'ok' if r['meets_goal'] else 'MISSED'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
