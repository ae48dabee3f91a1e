"""How far PPO moved a policy's deterministic actions, and the size of the demo term's gradient.

Compares the deterministic K-step action chunks of the imitation policy (a run's pretraining
checkpoint, EMA weights) and of a PPO checkpoint on demo observations, with the same initial
noise, per action dimension: RMS and mean difference. The natural spread (the imitation policy
with two different initial noises) is printed beside it. Also prints the gradient norm of the
demo term (consistency-flow loss on a demo minibatch), to size ``ppo.bc_coef`` against the
``train/grad_norm`` that PPO logs. Numbers in docs/TUNING.md ("What the updates did to the
actions") come from

    python benchmarks/bench_action_drift.py --run-dir runs/assembly-v3 \
        --checkpoint runs/assembly-v3-attempt3-grpo-finetune/checkpoint_6.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

DEFAULT_OUT = Path(__file__).parent / "results" / "action_drift.json"


def main() -> None:
    from maniflow_rl.pipeline.finetune import demo_dataset_for, policy_from_checkpoint
    from maniflow_rl.pipeline.run import pretrain_checkpoint
    from maniflow_rl.utils.checkpoint import load_checkpoint_file, load_policy_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a maniflow-rl run directory")
    parser.add_argument("--checkpoint", type=Path, required=True, help="PPO checkpoint (.pt)")
    parser.add_argument("--num-inference-steps", type=int, default=4)
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.manual_seed(0)

    sampling = {"num_inference_steps": args.num_inference_steps}
    pretrained = load_checkpoint_file(pretrain_checkpoint(args.run_dir), expected_kind="pretrain")
    imitation = policy_from_checkpoint(pretrained, sampling).eval()
    finetuned = policy_from_checkpoint(pretrained, sampling).eval()
    load_policy_weights(finetuned, load_checkpoint_file(args.checkpoint, expected_kind="ppo"))
    dataset = demo_dataset_for(imitation, str(args.run_dir / "demos.zarr"))
    index = torch.linspace(0, len(dataset) - 1, min(args.samples, len(dataset))).long().tolist()
    obs = {k: torch.stack([dataset[i]["obs"][k] for i in index]) for k in dataset[0]["obs"]}

    def actions(policy, seed):
        with torch.no_grad():
            return policy.predict_action(obs, generator=torch.Generator().manual_seed(seed))["action"]

    def stats(diff):
        return {"rms": diff.pow(2).mean((0, 1)).sqrt().tolist(), "mean": diff.mean((0, 1)).tolist()}

    base = actions(imitation, 0)
    result = {"run_dir": str(args.run_dir), "checkpoint": str(args.checkpoint),
              "num_obs": len(index),
              "imitation_two_noises": stats(actions(imitation, 1) - base),
              "imitation_vs_checkpoint": stats(actions(finetuned, 0) - base)}
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    norms = []
    for _, batch in zip(range(3), loader):
        imitation.zero_grad()
        imitation.compute_loss(batch)[0].backward()
        norms.append(float(torch.sqrt(sum(p.grad.pow(2).sum() for p in imitation.parameters()
                                          if p.grad is not None))))
    result["demo_term_grad_norm"] = norms
    for key in ("imitation_two_noises", "imitation_vs_checkpoint"):
        print(f"{key:24s} rms {[round(v, 4) for v in result[key]['rms']]}  "
              f"mean {[round(v, 4) for v in result[key]['mean']]}")
    print(f"demo-term gradient norm (3 minibatches of 64): {[round(n, 2) for n in norms]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
