"""PPO fine-tuning of a pretrained (or partly fine-tuned) checkpoint in MetaWorld.

``build_finetune_trainer`` rebuilds the policy stored in the checkpoint (with fine-tune-time
overrides such as the noise method or level), starts the training and evaluation env runners,
and returns a ``ManiFlowPPOTrainer`` that resumes from ``<out>/latest.pt`` when it exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from maniflow_rl.config import FINETUNE_POLICY_KEYS, FinetuneConfig  # noqa: F401
from maniflow_rl.rl.checkpoint_names import LATEST_CHECKPOINT
from maniflow_rl.rl.ppo.trainer import ManiFlowPPOTrainer
from maniflow_rl.utils.device import resolve_device
from maniflow_rl.utils.distributed import dist_info_from_env, local_num_envs, rank_seed
from maniflow_rl.utils.seeding import seed_everything
from maniflow_rl.utils.shape_meta import check_shape_meta_compatible
from maniflow_rl.utils.checkpoint import (checkpoint_identity, load_checkpoint_file,
                                         load_policy_weights, write_atomic)

log = logging.getLogger("maniflow_rl")


def policy_from_checkpoint(payload: dict[str, Any], overrides: dict[str, Any] | None = None,
                           use_ema: bool = True):
    """Rebuild the checkpoint's policy with sampling overrides; load its (EMA) weights.

    Parameters absent from the checkpoint (a fresh flow_noise head or value head) keep their
    initialisation; any other mismatch is an error.
    """
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy

    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(FINETUNE_POLICY_KEYS))
    if unknown:
        raise ValueError(f"policy overrides {unknown} cannot change at fine-tune time; allowed: "
                         f"{list(FINETUNE_POLICY_KEYS)}")
    config = {**payload["policy_config"], **overrides}
    policy = ManiFlowPointcloudRLPolicy.from_config(payload["shape_meta"], config)
    fresh = load_policy_weights(policy, payload, use_ema=use_ema)
    if fresh:
        log.info("fresh (untrained) parameters: %s", sorted({k.split('.')[0] for k in fresh}))
    return policy


def make_metaworld_eval_fn(cfg: FinetuneConfig):
    """The evaluations during fine-tuning: deterministic, on ``cfg.eval.num_envs`` envs with the
    fixed seeds of ``eval.rl_seed`` (never the before/after evaluation's ``eval.seed``: the
    run selects its checkpoint on these)."""
    from maniflow_rl.evaluation.evaluate import evaluate_policy

    def eval_fn(policy, runner, num_episodes):
        result = evaluate_policy(policy, runner, num_episodes, seed=cfg.eval.rl_seed,
                                 progress=False)
        # recorded in every evaluation row and the reference: selection checks the layouts
        return {**result, "layout_seed": cfg.eval.rl_seed}

    return eval_fn


def demo_dataset_for(policy, demos: str | None, extra_obs_keys: tuple[str, ...] = ()):
    """Demo windows shaped like the policy's pretraining data (the BC term, DSRL's replay);
    ``extra_obs_keys``: zarr ``data/`` arrays also loaded, under their own names (e.g. the
    privileged ``full_state`` of a DSRL critic)."""
    from maniflow_rl.data.dataset import PointCloudSequenceDataset, key_map_for

    if not demos or not Path(demos).exists():
        raise ValueError(f"ppo.bc_coef > 0 needs the demonstrations: `maniflow-rl finetune "
                         f"--demos <zarr>` (FinetuneConfig.demos); got {demos!r}")
    obs_meta = policy.shape_meta["obs"]
    channels = next((spec["shape"][-1] for spec in obs_meta.values()
                     if spec.get("type") == "point_cloud"), None)
    key_map = key_map_for([*obs_meta, *extra_obs_keys])
    dataset = PointCloudSequenceDataset(demos, policy.horizon, policy.n_obs_steps,
                                        policy.n_action_steps,
                                        obs_keys=[*obs_meta, *extra_obs_keys], key_map=key_map,
                                        point_cloud_channels=channels)
    check_shape_meta_compatible(policy.shape_meta, dataset.shape_meta, required_name="the policy",
                                provided_name=f"demos {demos}")
    return dataset


def imitation_checkpoint_of(checkpoint: str | Path, payload: dict[str, Any],
                            required: bool = False) -> dict[str, str] | None:
    """Identity of the imitation checkpoint behind ``checkpoint``: itself for a pretraining
    checkpoint; the one a PPO checkpoint recorded (None for an old PPO checkpoint without one,
    an error if ``required``)."""
    if payload["kind"] == "pretrain":
        return checkpoint_identity(checkpoint)
    identity = payload.get("imitation_checkpoint")
    if identity is None and required:
        raise ValueError(f"{checkpoint} does not record the imitation checkpoint it was "
                         f"fine-tuned from (written by an older maniflow-rl), so the demo term "
                         f"(ppo.bc_coef > 0) has no imitation teacher; fine-tune from the "
                         f"imitation checkpoint, or set ppo.bc_coef=0")
    return identity


def imitation_teacher(identity: dict[str, str], overrides: dict[str, Any] | None = None):
    """The imitation policy of ``identity`` (checked by its sha256), for the demo term."""
    path = Path(identity["path"])
    if not path.is_file():
        raise ValueError(f"the imitation checkpoint {path} that this fine-tuning started from "
                         f"is gone; the demo term (ppo.bc_coef > 0) anchors to it")
    if checkpoint_identity(path)["sha256"] != identity["sha256"]:
        raise ValueError(f"the imitation checkpoint {path} changed since fine-tuning started "
                         f"from it (sha256 differs); the demo term would anchor to another "
                         f"policy")
    return policy_from_checkpoint(load_checkpoint_file(path, expected_kind="pretrain"),
                                  overrides)


def build_finetune_trainer(cfg: FinetuneConfig, checkpoint: str | Path, out_dir: str | Path,
                           num_workers: int | None = None):
    """The trainer of ``cfg.finetune.algorithm`` (PPO or DSRL); everything validated before
    any env process starts. Seeds every RNG first, so fresh heads start alike (same seed, same
    run)."""
    cfg.finetune.validate()
    check_data_parallel(cfg)
    seed_everything(cfg.dsrl.seed if cfg.finetune.algorithm == "dsrl" else cfg.ppo.seed)
    if cfg.finetune.algorithm == "dsrl":
        return build_dsrl_trainer(cfg, checkpoint, out_dir, num_workers)
    return build_ppo_trainer(cfg, checkpoint, out_dir, num_workers)


def check_data_parallel(cfg: FinetuneConfig) -> int:
    """Under ``torchrun``: PPO only (DSRL runs in one process for now), and ``ppo.num_envs``
    divisible by the world size. Returns this rank's env count; checked before any work."""
    world_size = dist_info_from_env().world_size
    if world_size > 1 and cfg.finetune.algorithm == "dsrl":
        raise ValueError(f"finetune.algorithm=dsrl runs in one process (its env workers may be "
                         f"parallel: env.num_workers, env.backend); launched with world size "
                         f"{world_size}, run it without torchrun")
    return local_num_envs(cfg.ppo.num_envs, world_size)


def _start_env_runners(cfg: FinetuneConfig, policy, num_envs: int, seed: int,
                       num_workers: int | None, group_size: int, with_eval: bool,
                       privileged_state: bool = False):
    """Training runner (checked against the policy's shape_meta; ``privileged_state`` adds
    ``full_state`` to its observations) and the evaluation runner."""
    from maniflow_rl.envs.vector.runner import PointCloudEnvRunner
    from maniflow_rl.envs.metaworld.env import privileged_state_for

    # a policy that observes full_state (policy.obs=state) needs it in both runners
    policy_reads_state = privileged_state_for(policy.shape_meta)
    env_kwargs = {**cfg.env.env_kwargs(), "privileged_state": policy_reads_state}
    train_kwargs = {**env_kwargs, "privileged_state": policy_reads_state or privileged_state}
    runner = PointCloudEnvRunner(cfg.env.task, num_envs=num_envs, seed=seed,
                                 num_workers=cfg.env.num_workers if num_workers is None
                                 else num_workers, group_size=group_size,
                                 **cfg.env.runner_kwargs(), **train_kwargs)
    try:
        check_shape_meta_compatible(
            policy.shape_meta, runner.shape_meta, required_name="the policy",
            provided_name=f"env {cfg.env.task}",
            hint="set env.num_points / env options to match the pretraining data")
        eval_runner = PointCloudEnvRunner(cfg.env.task, num_envs=cfg.eval.num_envs,
                                          seed=cfg.eval.rl_seed, num_workers=0, **env_kwargs) \
            if with_eval else None
    except BaseException:
        runner.close()
        raise
    return runner, eval_runner


def build_dsrl_trainer(cfg: FinetuneConfig, checkpoint: str | Path, out_dir: str | Path,
                       num_workers: int | None = None):
    """DSRL from an imitation checkpoint; resumes from ``<out>/latest.pt`` when it exists."""
    from maniflow_rl.envs.metaworld.env import PRIVILEGED_KEY
    from maniflow_rl.rl.dsrl import ManiFlowDSRLTrainer

    out_dir = Path(out_dir)
    dsrl = dataclasses.replace(cfg.dsrl, save_path=str(out_dir),
                               device=str(resolve_device(cfg.dsrl.device))).validate()
    unknown = [k for k in dsrl.critic_obs_keys if k != PRIVILEGED_KEY]
    if unknown:
        raise ValueError(f"dsrl.critic_obs_keys: MetaWorld offers only {PRIVILEGED_KEY!r} as "
                         f"a privileged critic input, got {unknown}")
    payload = load_checkpoint_file(checkpoint, expected_kind="pretrain")
    policy = policy_from_checkpoint(payload, cfg.policy)
    demos = (demo_dataset_for(policy, cfg.demos, dsrl.critic_obs_keys)
             if dsrl.variant == "na" and cfg.demos and Path(cfg.demos).exists() else None)
    runner, eval_runner = _start_env_runners(cfg, policy, dsrl.num_envs, dsrl.seed,
                                             num_workers, 1, dsrl.eval_episodes > 0,
                                             privileged_state=bool(dsrl.critic_obs_keys))
    trainer = ManiFlowDSRLTrainer(policy, runner, dsrl, eval_env_runner=eval_runner,
                                  eval_fn=make_metaworld_eval_fn(cfg), demo_dataset=demos,
                                  demo_reward_type=cfg.env.reward_type)
    latest = out_dir / LATEST_CHECKPOINT
    if latest.is_file():
        log.info("resuming DSRL from %s", latest)
        trainer.load_checkpoint(latest)
    return trainer


def build_ppo_trainer(cfg: FinetuneConfig, checkpoint: str | Path, out_dir: str | Path,
                      num_workers: int | None = None) -> ManiFlowPPOTrainer:
    """PPO from an imitation or PPO checkpoint; resumes from ``<out>/latest.pt``. Under
    ``torchrun`` each rank builds ``ppo.num_envs / world_size`` envs (``rank_seed``)."""
    out_dir = Path(out_dir)
    ppo = dataclasses.replace(cfg.ppo, save_path=str(out_dir),
                              device=str(resolve_device(cfg.ppo.device))).validate()
    cfg.advantage.validate()
    payload = load_checkpoint_file(checkpoint, expected_kind=("pretrain", "ppo"))
    policy = policy_from_checkpoint(payload, cfg.policy)
    imitation = imitation_checkpoint_of(checkpoint, payload, required=ppo.bc_coef > 0)
    demo_dataset = demo_dataset_for(policy, cfg.demos) if ppo.bc_coef > 0 else None
    teacher = imitation_teacher(imitation, cfg.policy) \
        if ppo.bc_coef > 0 and payload["kind"] == "ppo" else None
    rank = dist_info_from_env()   # under torchrun: this rank's envs, rank 0 evaluates
    runner, eval_runner = _start_env_runners(
        cfg, policy, local_num_envs(ppo.num_envs, rank.world_size), rank_seed(ppo.seed, rank.rank),
        num_workers, cfg.advantage.group_size, ppo.eval_episodes > 0 and rank.is_main)
    trainer = ManiFlowPPOTrainer(policy, runner, ppo, cfg.advantage,
                                 eval_env_runner=eval_runner, eval_fn=make_metaworld_eval_fn(cfg),
                                 demo_dataset=demo_dataset, demo_teacher=teacher,
                                 imitation_checkpoint=imitation)
    latest = out_dir / LATEST_CHECKPOINT
    if latest.is_file():
        log.info("resuming fine-tuning from %s", latest)
        trainer.load_checkpoint(latest)
    elif payload["kind"] == "ppo":
        trainer.load_checkpoint(checkpoint)
    return trainer


REFERENCE_EVAL_FILE = "eval_reference.json"


def evaluate_reference(trainer, out_dir: str | Path) -> dict[str, Any] | None:
    """The starting policy (in ``maniflow-rl run``: the imitation checkpoint) on the
    in-training evaluation's own envs, seeds and episode count, written once to
    ``<out>/eval_reference.json`` before the first update.

    The 20-episode evaluations during RL cover fewer layouts than the 50-episode baseline, so
    they differ from it by sampling alone (sd ~11 points at 50 %); this is their like-for-like
    reference. ``trainer.policy`` is the starting policy at env step 0 (PPO has not updated
    it yet; DSRL never does, and ``policy.predict_action`` draws the noise from ``N(0, I)``).
    Returns the stored result; ``None`` when the run has no evaluations, or resumed past
    step 0 without one."""
    path = Path(out_dir) / REFERENCE_EVAL_FILE
    if path.is_file():
        return json.loads(path.read_text())
    if trainer.global_step > 0 or trainer.config.eval_episodes <= 0:
        return None
    result = trainer.evaluate(policy=trainer.policy)
    result = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    result["global_step"] = 0
    if getattr(getattr(trainer, "dist", None), "is_main", True):
        write_atomic(path, lambda f: f.write(json.dumps(result, indent=2).encode()))
    log.info("starting policy on the RL evaluation's %d episodes: %.1f%% success",
             result.get("num_episodes", 0), 100 * result.get("success_rate", 0.0))
    return result


def before_first_update(trainer, algorithm: str, demos: str | None, out_dir: str | Path) -> None:
    """What a fine-tune records before its first update (once; a resumed run reads the files):
    DSRL's steering check on the demos (``steering_check.py``), then the reference evaluation."""
    from maniflow_rl.pipeline.steering_check import check_steering_authority

    if algorithm == "dsrl":
        check_steering_authority(trainer.policy, demos, out_dir)
    evaluate_reference(trainer, out_dir)


def close_trainer_envs(trainer: ManiFlowPPOTrainer) -> None:
    for runner in (trainer.env_runner, trainer.eval_env_runner):
        if runner is not None and hasattr(runner, "close"):
            runner.close()
    trainer.close()
