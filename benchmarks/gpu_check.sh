#!/usr/bin/env bash
# GPU check (issue 11): run on a CUDA machine after `MANIFLOW_SKIP_TORCH=1 bash scripts/install.sh`
# (with the CUDA torch wheel installed first). Writes benchmarks/results/gpu_check.json:
#   1. policy cost at the `paper` model size on the GPU, float32 and bf16 autocast
#      (per-sample rollout inference latency, PPO update cost -> update samples/s)
#   2. a 2-iteration PPO fine-tune end to end with ppo.device=cuda (`maniflow-rl run`: demos ->
#      short imitation -> PPO -> evaluation), then the same fine-tune with ppo.autocast=bf16
#   3. data-parallel PPO with nccl on all visible GPUs (torchrun maniflow-rl dummy)
# Each step's exit code and wall-clock are recorded; a failing step does not stop the others.
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine (about 10-15 minutes)
#   DEVICE=cpu MODEL_SIZE=cpu SMOKE=1 bash benchmarks/gpu_check.sh   # dry run of the script
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
MODEL_SIZE=${MODEL_SIZE:-paper}
SMOKE=${SMOKE:-0}
OUT=${OUT:-benchmarks/results/gpu_check}
export MUJOCO_GL=${MUJOCO_GL:-egl}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
rm -f "$OUT/steps.jsonl"

if [ "$DEVICE" = "cuda" ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: torch sees no CUDA device (install the CUDA torch wheel); nothing run" >&2
  exit 2
fi
NGPU=$("$PY" -c "import torch; print(max(1, torch.cuda.device_count()))")
# SMOKE: tiny sizes and render-free point clouds, to check the script itself on a CPU
if [ "$SMOKE" = "1" ]; then BATCH=8; REPEATS=1; DEMOS=1; STEPS=5; EVAL=1; ENVS=2
  SIZE_ARGS=(env.point_cloud_source=geometry ppo.batch_size=50); else
  BATCH=256; REPEATS=5; DEMOS=4; STEPS=200; EVAL=10; ENVS=8; SIZE_ARGS=(); fi
PPO_ARGS=("ppo.device=$DEVICE" "ppo.num_envs=$ENVS" "ppo.total_timesteps=$((2 * ENVS * 25 * 8))"
  ppo.eval_episodes=0 ppo.critic_warmup_iterations=0 "${SIZE_ARGS[@]}")

step() {   # step <name> <command...>: run, log to $OUT/<name>.log, record rc and seconds
  local name=$1; shift
  local start; start=$(date +%s.%N)
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local end; end=$(date +%s.%N)
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(awk "BEGIN {print $end - $start}")}" \
    >>"$OUT/steps.jsonl"
  [ $rc -eq 0 ] || { echo "   failed (rc $rc), see $OUT/$name.log"; tail -n 5 "$OUT/$name.log"; }
}

for AC in none bf16; do
  step "policy_cost_$AC" "$PY" benchmarks/bench_policy_cost.py --model-size "$MODEL_SIZE" \
    --device "$DEVICE" --autocast "$AC" --batch "$BATCH" --repeats "$REPEATS" \
    --out "$OUT/policy_cost_$AC.json"
done

# 2 PPO iterations of ENVS envs x 25 decision points x 8 env steps
rm -rf "$OUT/run" "$OUT/finetune_bf16" "$OUT/ddp"
step finetune_fp32 maniflow-rl run --out "$OUT/run" --task metaworld/button-press-topdown-v3 \
  --no-progress --stop-after eval_finetune "policy.model_size=$MODEL_SIZE" \
  "demos.episodes=$DEMOS" pretrain.num_epochs=1 "pretrain.max_train_steps=$STEPS" \
  "eval.episodes=$EVAL" eval.video_episodes=0 "${PPO_ARGS[@]}"
step finetune_bf16 maniflow-rl finetune --checkpoint "$OUT/run/pretrain/checkpoints/latest.pt" \
  --out "$OUT/finetune_bf16" --no-progress ppo.autocast=bf16 "${PPO_ARGS[@]}"

BACKEND=nccl; [ "$DEVICE" = "cuda" ] || BACKEND=gloo
NPROC=$NGPU; [ "$DEVICE" = "cuda" ] || NPROC=2
step "ddp_${BACKEND}_x${NPROC}" env MANIFLOW_DIST_BACKEND=$BACKEND "$PY" -m torch.distributed.run \
  --standalone --nproc_per_node="$NPROC" -m maniflow_rl.cli.main dummy --iterations 4 \
  --out "$OUT/ddp" --no-progress "ppo.device=$DEVICE" "ppo.num_envs=$((8 * NPROC))" \
  "policy.model_size=$MODEL_SIZE"

"$PY" - "$OUT" "$DEVICE" <<'EOF'
"""Summarise the steps into benchmarks/results/gpu_check.json."""
import json, platform, sys
from pathlib import Path

import torch

out, device = Path(sys.argv[1]), sys.argv[2]
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]

def rows(path):
    p = out / path / "metrics.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines()] if p.is_file() else []

def ppo_summary(path):
    r = rows(path)
    if not r:
        return None
    last = r[-1]
    return {"iterations": len(r), "env_steps": last.get("global_step"),
            "sps": [x.get("perf/sps") for x in r],
            "rollout_seconds": [x.get("perf/rollout_seconds") for x in r],
            "update_seconds": [x.get("perf/update_seconds") for x in r],
            "approx_kl": [x.get("train/approx_kl") for x in r]}

summary = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                       "gpus": [torch.cuda.get_device_name(i)
                                for i in range(torch.cuda.device_count())]},
           "device": device, "steps": steps, "policy_cost": {}, "ppo": {}}
for ac in ("none", "bf16"):
    p = out / f"policy_cost_{ac}.json"
    if p.is_file():
        data = json.loads(p.read_text())
        batch = data["batch"]
        summary["policy_cost"][ac] = {
            m: {"rollout_latency_ms_per_batch_of_%d" % batch: r["per_sample_ms"]["rollout"] * batch,
                "update_samples_per_s": 1e3 / r["per_sample_ms"]["ppo_update"],
                "per_sample_ms": r["per_sample_ms"]}
            for m, r in data["methods"].items()}
summary["ppo"] = {"finetune_fp32": ppo_summary("run/finetune"),
                  "finetune_bf16": ppo_summary("finetune_bf16"), "ddp": ppo_summary("ddp")}
target = Path("benchmarks/results/gpu_check.json") if out.name == "gpu_check" else out / "gpu_check.json"
target.write_text(json.dumps(summary, indent=2))
print(json.dumps({s["step"]: s["rc"] for s in steps}), "->", target)
EOF
