"""Imitation pretraining speed: optimizer steps/s and samples/s of the real training loop.

Builds the pretraining run of ``--dataset`` (a demos zarr written by ``maniflow-rl demos`` or
``run``), ``cpu`` preset, then times ``--steps`` optimizer steps (consistency flow loss with the
EMA teacher, backward, AdamW, EMA; not the batch fetch, ~3-5 ms, nor the LR scheduler's step)
after ``--warmup`` steps. The result is
stored under ``--label`` in the JSON file (other labels are kept), with the git commit of the
``maniflow_rl`` that ran, so "before" and "after" can come from two checkouts of the code:

    python benchmarks/bench_pretrain_speed.py --dataset runs/coffee-push-v3/demos.zarr --label after
    PYTHONPATH=/tmp/old-checkout python benchmarks/bench_pretrain_speed.py ... --label before

``--set key=value`` overrides a PretrainConfig field (``policy.<field>`` for the policy);
fields the checked-out code does not know are an error. Run the labels one after another on an
idle machine and compare ratios from the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).parent / "results" / "pretrain_speed.json"
POLICY = dict(horizon=16, n_obs_steps=2, n_action_steps=8, num_inference_steps=10,
              model_size="cpu")


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _commit_of(module) -> str:
    root = Path(module.__file__).resolve().parents[1]
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(dataset: str, steps: int, warmup: int, batch_size: int, overrides: dict) -> dict:
    import maniflow_rl
    from maniflow_rl.train.pretrain import PretrainConfig, _Run

    policy = dict(POLICY)
    fields = {}
    for key, value in overrides.items():
        if key.startswith("policy."):
            policy[key.split(".", 1)[1]] = value
        else:
            fields[key] = value
    with tempfile.TemporaryDirectory() as out:
        cfg = PretrainConfig(dataset_path=dataset, output_dir=out, batch_size=batch_size,
                             resume=False, policy_config=policy, **fields)
        run = _Run(cfg, None, None)
        run.policy.train()
        times = []
        done = 0
        while done < warmup + steps:
            for batch in run.loader:
                start = time.perf_counter()
                loss, _ = run.policy.compute_loss(batch, teacher=run.ema.averaged_model)
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                run.optimizer.step()
                run.ema.step(run.policy)
                elapsed = time.perf_counter() - start
                if done >= warmup:
                    times.append(elapsed + 0.0)
                done += 1
                if done >= warmup + steps:
                    break
    times.sort()
    median = times[len(times) // 2]
    return {"commit": _commit_of(maniflow_rl), "overrides": overrides, "batch_size": batch_size,
            "steps_timed": steps, "median_s_per_step": median, "min_s_per_step": times[0],
            "steps_per_s": 1.0 / median, "samples_per_s": batch_size / median,
            "torch_threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    result = measure(args.dataset, args.steps, args.warmup, args.batch_size, overrides)
    result.update(dataset=args.dataset, machine=platform.processor() or platform.machine(),
                  cpu_count=os.cpu_count(), python=sys.version.split()[0],
                  torch=torch.__version__, load_average_1min=os.getloadavg()[0])
    out = Path(args.out)
    saved = json.loads(out.read_text()) if out.exists() else {}
    saved[args.label] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved, indent=2))
    print(json.dumps({args.label: result}, indent=2))
    return result


if __name__ == "__main__":
    main()
