"""OpenMP waiting under a competing process (issue 14): learner steps/s of a small MLP update
(the DSRL critic's shape: 3 x 256 LayerNorm MLP, batch 256, Adam), alone and beside one busy
process (a pure-Python loop holding one core, as a test run or a second experiment does).

Variants ``THREADS[:VAR=VALUE]``: torch threads, and an OpenMP variable for the child, e.g.
``2`` (libgomp's default: threads spin at barriers), ``2:OMP_WAIT_POLICY=PASSIVE`` (they sleep
at once), ``2:GOMP_SPINCOUNT=10000`` (spin briefly), ``1``. Each variant runs in a fresh child
process, one after the other; results in benchmarks/results/omp_wait_policy.json.

    python benchmarks/bench_omp_wait_policy.py [--seconds 20] [--variants 2 2:OMP_WAIT_POLICY=PASSIVE 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "omp_wait_policy.json"

CHILD = r"""
import sys, time, torch
threads, seconds = int(sys.argv[1]), float(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
def mlp(i):
    return torch.nn.Sequential(torch.nn.Linear(i, 256), torch.nn.LayerNorm(256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 256), torch.nn.LayerNorm(256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 256), torch.nn.LayerNorm(256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 1))
nets = torch.nn.ModuleList([mlp(192) for _ in range(2)])
opt = torch.optim.Adam(nets.parameters(), 3e-4)
x, y = torch.randn(256, 192), torch.randn(256, 1)
def step():
    loss = sum(((n(x) - y) ** 2).mean() for n in nets)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(20):
    step()
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    step(); n += 1
print(n / (time.perf_counter() - start))
"""


def _busy(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


OMP_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")


def measure(variant: str, seconds: float, competitor: bool) -> float:
    threads, _, setting = variant.partition(":")
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    if setting:
        name, _, value = setting.partition("=")
        env[name] = value
    busy = None
    if competitor:
        busy = mp.get_context("spawn").Process(target=_busy, args=(time.time() + seconds + 30,))
        busy.start()
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, threads, str(seconds)], env=env,
                             check=True, capture_output=True, text=True).stdout
    finally:
        if busy is not None:
            busy.terminate()
            busy.join()
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--variants", nargs="+", default=[
        "2", "2:OMP_WAIT_POLICY=PASSIVE", "2:GOMP_SPINCOUNT=10000", "1"])
    args = parser.parse_args()
    rows = []
    for competitor in (False, True):
        for variant in args.variants:
            rate = measure(variant, args.seconds, competitor)
            rows.append({"variant": variant, "competing_busy_process": competitor,
                         "steps_per_s": rate})
            print(json.dumps(rows[-1]))
    out = {"seconds": args.seconds, "cpu_count": os.cpu_count(),
           "load_before": os.getloadavg(), "results": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    print(f"saved {OUT}")


if __name__ == "__main__":
    main()
