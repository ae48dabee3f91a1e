"""``maniflow-rl finetune`` (PPO or DSRL from a checkpoint in MetaWorld) and ``maniflow-rl dummy``
(PPO on the synthetic env: a quick check of the whole RL stack)."""

from __future__ import annotations

import argparse

from maniflow_rl.cli.config import load_config


def add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "finetune", help="PPO or DSRL fine-tuning of a pretrained checkpoint in MetaWorld",
        description="Overrides are key=value pairs on the run config (the same schema as "
                    "`maniflow-rl run`; its env/finetune/ppo/advantage/dsrl/finetune_policy/eval "
                    "sections apply), e.g. ppo.total_timesteps=200000 "
                    "finetune_policy.noise_level=0.3, or finetune.algorithm=dsrl "
                    "dsrl.total_timesteps=100000")
    p.add_argument("--checkpoint", required=True, help="pretraining or PPO checkpoint (.pt)")
    p.add_argument("--task", help="metaworld/<task> (default: the checkpoint's task)")
    p.add_argument("--out", required=True, help="output folder (resumes from <out>/latest.pt)")
    p.add_argument("--config", default="default", help="preset name or YAML file")
    p.add_argument("--demos", help="demo zarr: PPO's demo term (ppo.bc_coef > 0), DSRL-NA's "
                                   "replay pre-fill")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def run_finetune(args) -> int:
    from maniflow_rl.pipeline.finetune import build_finetune_trainer, close_trainer_envs
    from maniflow_rl.pipeline.run import RunConfig
    from maniflow_rl.utils.checkpoint import load_checkpoint_file

    cfg = load_config(RunConfig, args.config, args.overrides).finetune_config()
    task = args.task
    if task is None:
        payload = load_checkpoint_file(args.checkpoint,
                                       expected_kind=("pretrain", "ppo", "dsrl"))
        task = (payload.get("train_config") or {}).get("task") or \
            (payload.get("env_config") or {}).get("task")
        if not task:
            raise ValueError("the checkpoint does not name its task: pass --task metaworld/<task>")
    cfg.env.task = task
    cfg.demos = args.demos   # never a run directory's demos picked by default
    trainer = build_finetune_trainer(cfg, args.checkpoint, args.out)
    try:
        trainer.train(progress=not args.no_progress)
        print(f"fine-tuned for {trainer.global_step} env steps; checkpoints in {args.out}")
        algorithm = cfg.dsrl if cfg.finetune.algorithm == "dsrl" else cfg.ppo
        if algorithm.eval_episodes > 0:
            result = trainer.evaluate()
            print(f"final success rate {result['success_rate']:.1%} "
                  f"[{result['ci_low']:.1%}, {result['ci_high']:.1%}]")
    finally:
        close_trainer_envs(trainer)
    return 0


def add_dummy_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("dummy", help="PPO on the synthetic env (smoke test of the stack)")
    p.add_argument("--out", default="runs/dummy")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--noise-method", default="flow_noise", choices=["flow_noise", "flow_sde"])
    p.add_argument("--no-progress", action="store_true")
    return p


def run_dummy(args) -> int:
    from maniflow_rl.rl.factory import create_maniflow_ppo_trainer

    shape_meta = {"obs": {"point_cloud": {"shape": [128, 3], "type": "point_cloud"},
                          "agent_pos": {"shape": [4]}}, "action": {"shape": [4]}}
    trainer = create_maniflow_ppo_trainer(
        shape_meta, device="cpu",
        ppo_config={"total_timesteps": 10**9, "num_envs": 8, "num_steps_per_rollout": 8,
                    "batch_size": 32, "learning_rate": 1e-3, "critic_learning_rate": 3e-3,
                    "save_path": args.out, "log_interval": 5, "eval_interval": 10**6},
        policy_config={"horizon": 8, "n_action_steps": 4, "n_obs_steps": 2,
                       "num_inference_steps": 4, "noise_method": args.noise_method})
    history = trainer.train(num_iterations=args.iterations, progress=not args.no_progress)
    first, last = history[0], history[-1]
    print(f"reward per decision point: {first['rollout/reward_per_decision']:.3f} -> "
          f"{last['rollout/reward_per_decision']:.3f}; logs in {args.out}/tb")
    return 0
