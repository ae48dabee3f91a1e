"""Can latent steering (DSRL) help this policy? Steering authority, critic ranking, and success
against the initial noise's scale (``maniflow_rl/rl/dsrl/diagnostics.py`` has the definitions).

    python benchmarks/bench_dsrl_steerability.py \
        --checkpoint runs/imit10/hammer-v3/pretrain/checkpoints/best.pt \
        --demos runs/imit10/hammer-v3/demos.zarr \
        --dsrl-run runs/hammer-dsrl-hold --task metaworld/hammer-v3 --eval-scales 1 1.5 2

1. Authority: on demo observations, the normalized executed chunk ``f(s, s_w * eps)`` for
   ``--noises`` draws per state at each noise scale ``s_w``: spread within a state vs between
   states (K = ``--inference-steps`` Euler steps, as the fine-tuning sampler).
2. Critic ranking (``--dsrl-run``, a finished DSRL-NA run): Monte-Carlo returns from its replay,
   against its action critic's values and advantages.
3. Success vs noise scale (``--task`` with ``--eval-scales``): the frozen policy with initial
   noise ``s_w * N(0, I)`` on the pipeline's evaluation seeds.
4. Does one chunk's noise decide the episode? (``--task`` with ``--branch-layouts``): for each
   layout and decision point ``t`` in ``--branch-points``, ``--branches`` envs start the same
   layout and share every noise draw except the one at ``t`` (deterministic chains, so they
   stay identical until ``t``). Reported per ``t``: how often the branches of a layout
   disagree on success, and the oracle gain ``mean_layouts max_k success_k - mean success``:
   the most that choosing that one chunk's noise could add.

Prints and saves JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from maniflow_rl.pipeline.steering_check import steering_authority
from maniflow_rl.rl.dsrl import diagnostics

DEFAULT_OUT = Path(__file__).parent / "results" / "dsrl_steerability.json"


class ScaledNoisePolicy(torch.nn.Module):
    """The frozen policy sampled deterministically from initial noise ``scale * N(0, I)``."""

    def __init__(self, policy, scale: float):
        super().__init__()
        self.policy, self.scale = policy, float(scale)
        for key in ("shape_meta", "horizon", "action_dim", "n_obs_steps", "n_action_steps"):
            setattr(self, key, getattr(policy, key))

    @torch.no_grad()
    def predict_action(self, obs, generator: torch.Generator | None = None):
        context, _ = self.policy.encode_obs(obs)
        noise = torch.randn(context.shape[0], self.horizon, self.action_dim, generator=generator)
        return self.policy.actions_from_noise(context, self.scale * noise)


def load_frozen_policy(checkpoint: Path, inference_steps: int):
    from maniflow_rl.pipeline.finetune import policy_from_checkpoint
    from maniflow_rl.utils.checkpoint import load_checkpoint_file

    payload = load_checkpoint_file(checkpoint, expected_kind="pretrain")
    return policy_from_checkpoint(payload, {"num_inference_steps": inference_steps}).eval()


def critic_ranking(run_dir: Path) -> dict:
    from maniflow_rl.rl.dsrl.networks import CriticEnsemble
    from maniflow_rl.utils.checkpoint import load_checkpoint_file

    payload = load_checkpoint_file(run_dir / "finetune" / "latest.pt", expected_kind="dsrl")
    config = payload["dsrl_config"]
    if config["variant"] != "na":
        raise SystemExit(f"{run_dir}: critic ranking needs a DSRL-NA run (an action critic)")
    if int(config.get("nstep", 1)) != 1:
        raise SystemExit(f"{run_dir}: Monte-Carlo returns are rebuilt from 1-step transitions; "
                         f"this run used nstep={config['nstep']}")
    replay = np.load(run_dir / "finetune" / "replay.npz")
    if len(replay["online_reward"]) >= int(config["buffer_size"]):
        raise SystemExit(f"{run_dir}: the replay buffer wrapped around; its order no longer "
                         f"follows the vector steps")
    get = {k: replay[f"online_{k}"] for k in ("features", "next_features", "action", "reward",
                                             "discount", "terminated", "alias_action")}
    num_envs = int(config["num_envs"])
    continues = diagnostics.episode_continues(get["features"], get["next_features"],
                                              get["terminated"], num_envs)
    returns = diagnostics.monte_carlo_returns(get["reward"], get["discount"], continues, num_envs)
    critic = CriticEnsemble(get["features"].shape[1], get["action"].shape[1],
                            tuple(config["hidden_dims"]), int(config["num_critics"]))
    critic.load_state_dict(payload["modules"]["action_critic"])
    # the last 40 vector steps: episodes still running at the buffer's end have no full return
    keep = slice(0, max(0, len(returns) - 40 * num_envs))
    features = torch.as_tensor(get["features"][keep])
    aliases = torch.as_tensor(get["alias_action"][keep])
    with torch.no_grad():
        q_executed = critic(features, torch.as_tensor(get["action"][keep])).mean(0).numpy()
        q_aliases = critic(features.repeat_interleave(aliases.shape[1], 0),
                           aliases.flatten(0, 1)).mean(0).view(len(features), -1).numpy()
    result = diagnostics.critic_ranking(q_executed, q_aliases, returns[keep])
    return {"run_dir": str(run_dir), "transitions": int(len(q_executed)),
            **{k: round(v, 4) for k, v in result.items()}}


def success_by_scale(policy, task: str, scales: list[float], episodes: int) -> dict:
    from maniflow_rl.config import RunConfig, load_config
    from maniflow_rl.evaluation.evaluate import evaluate_policy
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner

    cfg = load_config(RunConfig, "default", [f"env.task={task}"])
    out = {}
    for scale in scales:
        start = time.perf_counter()
        with MetaWorldEnvRunner(cfg.env.task, num_envs=cfg.eval.num_envs, seed=cfg.eval.seed,
                                **cfg.env.env_kwargs()) as runner:
            result = evaluate_policy(ScaledNoisePolicy(policy, scale), runner, episodes,
                                     seed=cfg.eval.seed, progress=False)
        out[str(scale)] = {"success": result["success_rate"],
                           "ci": [round(result["ci_low"], 3), round(result["ci_high"], 3)],
                           "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps({"scale": scale, **out[str(scale)]}), flush=True)
    return {"task": task, "episodes": episodes, "eval_seed": cfg.eval.seed, "by_noise_scale": out}


def branch_outcomes(policy, task: str, layouts: int, branches: int, branch_points: list[int],
                    seed: int) -> dict:
    from maniflow_rl.config import RunConfig, load_config
    from maniflow_rl.envs.metaworld import MetaWorldEnvRunner
    from maniflow_rl.rl.rollout_collector import ManiFlowRolloutCollector

    cfg = load_config(RunConfig, "default", [f"env.task={task}"])
    shape = (policy.horizon, policy.action_dim)
    results: dict[int, list[list[bool]]] = {t: [] for t in branch_points}
    ended_before: dict[int, int] = {t: 0 for t in branch_points}
    with MetaWorldEnvRunner(cfg.env.task, num_envs=branches, seed=seed,
                            **cfg.env.env_kwargs()) as runner:
        collector = ManiFlowRolloutCollector(policy, runner)
        for layout in range(layouts):
            for t_branch in branch_points:
                runner.seed([cfg.eval.seed + layout] * branches)   # reset seeds 100000, 100001, ...
                collector.reset()
                generator = torch.Generator().manual_seed(
                    seed * 100_003 + layout * 1_009 + t_branch)
                success = np.zeros(branches, bool)
                ended = np.zeros(branches, bool)
                decision = 0
                while not ended.all():
                    with torch.no_grad():
                        context, _ = policy.encode_obs(collector.observation())
                        shared = torch.randn(1, *shape, generator=generator).repeat(branches, 1, 1)
                        own = torch.randn(branches, *shape, generator=generator)
                        noise = own if decision == t_branch else shared
                        actions = policy.actions_from_noise(context, noise)["action"]
                    _, finished = collector.execute(actions.numpy())
                    for episode in finished:
                        env = episode["env"]
                        if not ended[env]:
                            ended[env], success[env] = True, episode["success"]
                    decision += 1
                    if ended.all() and decision <= t_branch:
                        ended_before[t_branch] += 1
                if decision > t_branch:
                    results[t_branch].append(success.tolist())
    out = {}
    for t_branch, rows in results.items():
        outcomes = np.array(rows, dtype=float).reshape(len(rows), branches)
        disagree = (outcomes.min(1) < 1) & (outcomes.max(1) > 0)
        out[str(t_branch)] = {
            "layouts": len(rows), "ended_before_branch": ended_before[t_branch],
            "mean_success": round(float(outcomes.mean()), 4) if rows else None,
            "layouts_where_branches_disagree": round(float(disagree.mean()), 4) if rows else None,
            "oracle_gain": (round(float(outcomes.max(1).mean() - outcomes.mean()), 4)
                            if rows else None)}
        print(json.dumps({"branch_point": t_branch, **out[str(t_branch)]}), flush=True)
    return {"task": task, "branches": branches, "eval_seed": cfg.eval.seed,
            "by_branch_point": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="imitation (pretrain) checkpoint")
    parser.add_argument("--demos", type=Path, help="the run's demos.zarr (authority states)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--num-states", type=int, default=48)
    parser.add_argument("--noises", type=int, default=8)
    parser.add_argument("--inference-steps", type=int, default=4)
    parser.add_argument("--dsrl-run", type=Path, nargs="*", default=[])
    parser.add_argument("--task", help="metaworld/<task> for success vs noise scale")
    parser.add_argument("--eval-scales", type=float, nargs="*", default=[])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--branch-layouts", type=int, default=0)
    parser.add_argument("--branches", type=int, default=8)
    parser.add_argument("--branch-points", type=int, nargs="+", default=[0, 3, 6])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.demos and not args.checkpoint:
        parser.error("--demos needs --checkpoint")
    if (args.eval_scales or args.branch_layouts) and not (args.task and args.checkpoint):
        parser.error("--eval-scales and --branch-layouts need --task and --checkpoint")
    result: dict = {"checkpoint": str(args.checkpoint) if args.checkpoint else None}
    policy = load_frozen_policy(args.checkpoint, args.inference_steps) if args.checkpoint else None
    if policy is not None and args.demos:
        result["authority"] = steering_authority(policy, args.demos, args.scales,
                                                 args.num_states, args.noises, args.seed)
    result["critic_ranking"] = [critic_ranking(run) for run in args.dsrl_run]
    if args.eval_scales:
        result["success"] = success_by_scale(policy, args.task, args.eval_scales, args.episodes)
    if args.branch_layouts:
        result["branching"] = branch_outcomes(policy, args.task, args.branch_layouts,
                                              args.branches, args.branch_points, args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
