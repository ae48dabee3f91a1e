"""``maniflow-rl finetune`` (PPO or DSRL from a checkpoint in MetaWorld) and ``maniflow-rl dummy``
(PPO on the synthetic env: a quick check of the whole RL stack)."""

from __future__ import annotations

import argparse
import logging

from maniflow_rl.config import DummyConfig, RunConfig, load_config
from maniflow_rl.utils.distributed import current_info
from maniflow_rl.utils.output_dir import check_output_dir
from maniflow_rl.utils.threads import thread_policy

log = logging.getLogger("maniflow_rl")

DUMMY_SHAPE_META = {"obs": {"point_cloud": {"shape": [128, 3], "type": "point_cloud"},
                            "agent_pos": {"shape": [4]}}, "action": {"shape": [4]}}


def add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "finetune", help="PPO or DSRL fine-tuning of a pretrained checkpoint in MetaWorld",
        description="Overrides are key=value pairs on the run config (the same schema as "
                    "`maniflow-rl run`; its env/finetune/ppo/advantage/dsrl/finetune_policy/"
                    "eval/runtime sections apply), e.g. ppo.total_timesteps=200000 "
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


def checkpoint_task_of(payload: dict) -> str | None:
    """The task a pretraining / fine-tuning checkpoint names, if any."""
    return (payload.get("train_config") or {}).get("task") or \
        (payload.get("env_config") or {}).get("task")


def run_finetune(args) -> int:
    cfg = load_config(RunConfig, args.config, args.overrides).finetune_config()
    cfg.validate()
    check_output_dir(args.out)
    with thread_policy(cfg.runtime.thread_policy()):
        return _finetune(cfg, args)


def _finetune(cfg, args) -> int:
    from maniflow_rl.pipeline.finetune import (before_first_update, build_finetune_trainer,
                                               close_trainer_envs)
    from maniflow_rl.utils.checkpoint import load_checkpoint_file
    from maniflow_rl.utils.shape_meta import env_mismatch_warnings

    payload = load_checkpoint_file(args.checkpoint, expected_kind=("pretrain", "ppo", "dsrl"))
    task = args.task or checkpoint_task_of(payload)
    if not task:
        raise ValueError("the checkpoint does not name its task: pass --task metaworld/<task>")
    cfg.env.task = task
    cfg.demos = args.demos   # never a run directory's demos picked by default
    for message in env_mismatch_warnings(payload, cfg.env.env_kwargs()):
        log.warning(message)
    trainer = build_finetune_trainer(cfg, args.checkpoint, args.out)
    try:
        before_first_update(trainer, cfg.finetune.algorithm, args.demos, args.out)
        trainer.train(progress=not args.no_progress)
        trainer.save_checkpoint()   # latest.pt holds the final step (DSRL saves by interval)
        main = current_info().is_main   # torchrun: rank 0 reports
        if main:
            print(f"fine-tuned for {trainer.global_step} env steps; checkpoints in {args.out}")
        algorithm = cfg.dsrl if cfg.finetune.algorithm == "dsrl" else cfg.ppo
        if algorithm.eval_episodes > 0:
            result = trainer.evaluate()
        if algorithm.eval_episodes > 0 and main:
            print(f"final success rate {result['success_rate']:.1%} "
                  f"[{result['ci_low']:.1%}, {result['ci_high']:.1%}] (eval.rl_seed's layouts)")
            _print_selection(cfg, args, trainer.global_step)
    finally:
        close_trainer_envs(trainer)
    return 0


def _print_selection(cfg, args, final_step: int) -> None:
    """The evaluated policy ``finetune.select`` keeps (``finetune/selection.json``)."""
    from maniflow_rl.pipeline.finetune_selection import select_finetuned_checkpoint

    selection = select_finetuned_checkpoint(args.out, cfg.finetune.algorithm, args.checkpoint,
                                            final_step, cfg.eval.rl_seed, cfg.finetune.select)
    rate = selection["success_rate"]
    print(f"kept (finetune.select={cfg.finetune.select}): {selection['checkpoint']}"
          + ("" if rate is None else f", {rate:.1%} on the evaluations during RL"))


def add_dummy_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dummy", help="PPO on the synthetic env (smoke test of the stack)",
        description="Overrides are key=value pairs on DummyConfig: ppo.*, advantage.*, "
                    "policy.*, runtime.* (e.g. ppo.seed=3 ppo.num_envs=4 "
                    "policy.num_inference_steps=2)")
    p.add_argument("--out", default="runs/dummy")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--noise-method", default="flow_noise", choices=["flow_noise", "flow_sde"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def build_dummy_config(args) -> DummyConfig:
    """DummyConfig defaults <- ``key=value`` overrides; ``--noise-method`` and ``--out`` apply
    unless ``policy.noise_method`` / ``ppo.save_path`` is overridden."""
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    overrides = list(args.overrides or [])
    cfg = load_config(DummyConfig, None, overrides)
    keys = {item.partition("=")[0] for item in overrides}
    if "policy.noise_method" not in keys:
        cfg.policy["noise_method"] = args.noise_method
    if "ppo.save_path" not in keys:
        cfg.ppo.save_path = args.out
    return cfg.validate()


def run_dummy(args) -> int:
    from maniflow_rl.rl.ppo.factory import create_maniflow_ppo_trainer

    cfg = build_dummy_config(args)
    check_output_dir(cfg.ppo.save_path)
    with thread_policy(cfg.runtime.thread_policy()):
        trainer = create_maniflow_ppo_trainer(DUMMY_SHAPE_META, device=cfg.ppo.device,
                                              ppo_config=cfg.ppo, advantage_config=cfg.advantage,
                                              policy_config=cfg.policy)
        try:
            history = trainer.train(num_iterations=args.iterations,
                                    progress=not args.no_progress)
        finally:
            trainer.close()
    first, last = history[0], history[-1]
    if not current_info().is_main:   # torchrun: rank 0 reports
        return 0
    print(f"reward per decision point: {first['rollout/reward_per_decision']:.3f} -> "
          f"{last['rollout/reward_per_decision']:.3f}; logs in {cfg.ppo.save_path}/tb")
    return 0
