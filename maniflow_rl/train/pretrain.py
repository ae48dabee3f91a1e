"""Imitation pretraining of the ManiFlow policy on demonstrations (ALGORITHM.md section 2).

Consistency flow training with AdamW (lr 1e-4, betas (0.9, 0.95), wd 1e-3), a cosine schedule
with linear warm-up stepped per optimizer step, and an EMA copy of the weights that is both the
consistency teacher and the evaluated / exported policy.

Files under ``output_dir``::

    config.json                    the PretrainConfig of the run
    tb/                            TensorBoard: train/loss, train/lr, val/loss, eval/success_rate
    checkpoints/latest.pt          written atomically every checkpoint_every_epochs and at the end
    checkpoints/epoch_XXXX.pt      same payload, kept per epoch (keep_epoch_checkpoints)
    checkpoints/best.pt            with select_every_steps: the best EMA policy on validation
                                   seeds so far (train/checkpoint_selection.py)
    eval/epoch_XXXX.json           evaluation results (+ videos/epoch_XXXX.mp4 with eval_video)

A run whose ``checkpoints/latest.pt`` exists resumes from it (``resume=True``): weights, EMA,
optimizer, LR schedule, counters and RNG states are restored and the data order of every epoch
depends only on (seed, epoch), so an interrupted run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from maniflow_rl.data.dataset import (PointCloudSequenceDataset, infer_shape_meta,
                                      load_replay_buffer)
from maniflow_rl.data.point_token_cache import cache_dataset_point_tokens
from maniflow_rl.evaluation.evaluate import EVAL_SEED_OFFSET, evaluate_policy, make_env_runner
from maniflow_rl.train.checkpoint_selection import (best_k_mean, best_record,
                                                    reconcile_best_checkpoint, validation_due,
                                                    validation_policy, validation_seed)
from maniflow_rl.train.ema import EMAModel
from maniflow_rl.train.pretrain_config import PretrainConfig
from maniflow_rl.train.lr_schedule import cosine_with_warmup
from maniflow_rl.utils.checkpoint import (load_checkpoint_file, remove_stale_temp_files,
                                         save_checkpoint_atomic)
from maniflow_rl.utils.device import resolve_device
from maniflow_rl.utils.logger import MetricLogger
from maniflow_rl.utils.seeding import get_rng_state, seed_everything, set_rng_state
from maniflow_rl.utils.shape_meta import check_shape_meta_compatible
from maniflow_rl.utils import threads
from maniflow_rl.utils.threads import limit_worker_threads

log = logging.getLogger("maniflow_rl")


def default_policy_factory(shape_meta: dict, policy_config: dict):
    from maniflow_rl.policy import ManiFlowPointcloudRLPolicy

    return ManiFlowPointcloudRLPolicy(shape_meta, **policy_config)



def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


def _scalars(info: dict, prefix: str) -> dict[str, float]:
    out = {}
    for key, value in (info or {}).items():
        try:
            out[f"{prefix}/{key}"] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class _Run:
    """State of one pretraining run (built and validated before any training step)."""

    def __init__(self, cfg: PretrainConfig, env_runner_factory, policy_factory):
        cfg.validate()
        rollouts = cfg.eval_every_epochs or cfg.select_every_steps
        if rollouts and cfg.task is None and env_runner_factory is None:
            raise ValueError("eval_every_epochs / select_every_steps > 0 need a task (e.g. "
                             "metaworld/button-press) or an env_runner_factory")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        if policy_factory is None:  # fail fast on a bad policy config, before loading data
            from maniflow_rl.policy import ManiFlowPolicyConfig

            ManiFlowPolicyConfig().replace(**cfg.policy_config)
            policy_factory = default_policy_factory
        seed_everything(cfg.seed)
        buffer = load_replay_buffer(cfg.dataset_path, cfg.key_map, cfg.obs_keys)
        self.shape_meta = infer_shape_meta(buffer, cfg.key_map, cfg.obs_keys,
                                           cfg.point_cloud_channels)
        self.policy = policy_factory(self.shape_meta, dict(cfg.policy_config)).to(self.device)
        p = self.policy
        if p.n_action_steps > p.horizon - p.n_obs_steps + 1:
            raise ValueError(f"n_action_steps={p.n_action_steps} > horizon - n_obs_steps + 1 = "
                             f"{p.horizon - p.n_obs_steps + 1}")
        check_shape_meta_compatible(self.shape_meta, p.shape_meta, required_name="the dataset",
                                        provided_name="the policy shape_meta")
        self.dataset = PointCloudSequenceDataset(
            buffer, p.horizon, p.n_obs_steps, p.n_action_steps, key_map=cfg.key_map,
            val_ratio=cfg.val_ratio, seed=cfg.seed, max_train_episodes=cfg.max_train_episodes,
            obs_keys=cfg.obs_keys, point_cloud_channels=cfg.point_cloud_channels)
        self.val_dataset = self.dataset.get_validation_dataset() if cfg.val_ratio > 0 else None

        self.env_runner, self._owns_env = None, False
        if rollouts:
            self._owns_env = env_runner_factory is None
            self.env_runner = (env_runner_factory() if env_runner_factory is not None else
                               make_env_runner(cfg.task, cfg.eval_num_envs,
                                               cfg.seed + EVAL_SEED_OFFSET, self.shape_meta,
                                               **cfg.env_kwargs))
            env_meta = getattr(self.env_runner, "shape_meta", None)
            if env_meta is None:
                env_meta = {"obs": {k: {"shape": list(np.shape(v)[1:])}
                                    for k, v in self.env_runner.reset().items()}}
            check_shape_meta_compatible(self.shape_meta, env_meta, required_name="the dataset",
                                        provided_name=f"env of task {cfg.task}")

        self.generator = torch.Generator()
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=cfg.batch_size, shuffle=True, generator=self.generator,
            num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
            worker_init_fn=limit_worker_threads)
        steps = cfg.num_epochs * len(self.loader)
        self.total_steps = min(steps, cfg.max_train_steps or steps)

        self.policy.normalizer.fit(self.dataset.get_normalizer_data())
        self.ema = EMAModel(self.policy, power=cfg.ema_power, max_value=cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr,
                                           betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        self.scheduler = cosine_with_warmup(self.optimizer, cfg.warmup_steps, self.total_steps,
                                            cfg.min_lr_ratio)
        self.epoch, self.global_step, self.resumed_from = 0, 0, None
        self.history: list[dict[str, float]] = []
        self.selection: list[dict[str, float]] = []   # validation rollouts {step, success_rate}
        latest = self.ckpt_dir / "latest.pt"
        if cfg.resume and latest.exists():
            self._restore(latest)
            reconcile_best_checkpoint(self.ckpt_dir / "best.pt", self.selection,
                                      self.global_step, self._save_best)
        if cfg.cache_point_tokens:   # after the normalizer is fitted (or restored)
            cache_dataset_point_tokens(self.dataset, self.policy)

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict[str, Any]:
        return {
            "kind": "pretrain", "shape_meta": self.shape_meta,
            "policy_config": self.policy.get_config(),
            "policy_state_dict": self.policy.state_dict(),
            "ema_state_dict": self.ema.averaged_model.state_dict(),
            "ema_step": self.ema.optimization_step,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch, "global_step": self.global_step, "history": self.history,
            "selection": self.selection,
            "rng": get_rng_state(), "train_config": self.cfg.to_dict(),
            "dataset_path": str(self.cfg.dataset_path),
        }

    def _restore(self, path: Path) -> None:
        payload = load_checkpoint_file(path, map_location=self.device, expected_kind="pretrain")
        check_shape_meta_compatible(self.shape_meta, payload["shape_meta"],
                                    required_name="the dataset", provided_name=f"checkpoint {path}")
        if payload["policy_config"] != self.policy.get_config():
            raise ValueError(f"checkpoint {path} was trained with a different policy config; "
                             f"use another output_dir or resume=False")
        saved_cfg = payload.get("train_config", {})
        for name in ("num_epochs", "max_train_steps", "batch_size", "warmup_steps", "lr"):
            if name in saved_cfg and saved_cfg[name] != getattr(self.cfg, name):
                log.warning("resuming %s with %s=%s (the checkpoint used %s): the learning-rate "
                            "schedule / data order will differ from an uninterrupted run",
                            path, name, getattr(self.cfg, name), saved_cfg[name])
        self.policy.load_state_dict(payload["policy_state_dict"])
        self.ema.load_state_dict({"averaged_model": payload["ema_state_dict"],
                                  "optimization_step": payload["ema_step"]})
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["lr_scheduler"])
        self.epoch, self.global_step = int(payload["epoch"]), int(payload["global_step"])
        self.history = list(payload.get("history", []))
        self.selection = list(payload.get("selection", []))
        set_rng_state(payload["rng"])
        self.resumed_from = self.epoch
        log.info("resumed from %s (epoch %d, step %d)", path, self.epoch, self.global_step)

    def save(self) -> Path:
        """``latest.pt`` (and ``epoch_XXXX.pt``); then ``best.pt`` when this step's validation is
        the best so far (written after latest.pt, see ``checkpoint_selection.py``)."""
        payload = self._payload()
        if self.cfg.keep_epoch_checkpoints:
            save_checkpoint_atomic(payload, self.ckpt_dir / f"epoch_{self.epoch:04d}.pt")
        latest = save_checkpoint_atomic(payload, self.ckpt_dir / "latest.pt")
        best = best_record(self.selection)
        if best is not None and best["step"] == self.global_step:
            self._save_best(payload)
        return latest

    def _save_best(self, payload: dict[str, Any] | None = None) -> None:
        save_checkpoint_atomic({**(payload or self._payload()), "selected_on": "validation seeds"},
                               self.ckpt_dir / "best.pt")

    # ------------------------------------------------------------------ loops
    def done(self) -> bool:
        return self.epoch >= self.cfg.num_epochs or self.global_step >= self.total_steps

    def optimizer_step(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Consistency-flow loss, backward, clip, Adam, LR schedule and EMA on one batch."""
        loss, info = self.policy.compute_loss(batch, teacher=self.ema.averaged_model)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step "
                                     f"{self.global_step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.step(self.policy)
        return loss, info

    def train_epoch(self, logger: MetricLogger, bar) -> float:
        self.policy.train()
        self.generator.manual_seed(self.cfg.seed * 1_000_003 + self.epoch)  # data order
        losses = []
        for batch in self.loader:
            batch = _to_device(batch, self.device)
            # the thread policy's update phase (utils/threads.py); with data-loader workers
            # their busy cores would read as other processes' load, so it is skipped then
            with threads.phase("update") if self.cfg.num_workers == 0 else nullcontext():
                loss, info = self.optimizer_step(batch)
            self.global_step += 1
            losses.append(loss.item())
            lr = self.optimizer.param_groups[0]["lr"]
            logger.log({"train/loss": losses[-1], "train/lr": lr, **_scalars(info, "train")},
                       self.global_step)
            bar.update(1)
            bar.set_postfix(epoch=self.epoch, loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            if self.global_step >= self.total_steps:
                break
        return float(np.mean(losses)) if losses else math.nan

    @torch.no_grad()
    def val_loss(self) -> float | None:
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return None
        loader = torch.utils.data.DataLoader(self.val_dataset, batch_size=self.cfg.batch_size)
        self.policy.eval()
        losses, weights = [], []
        with torch.random.fork_rng(devices=[]):  # fixed noise: comparable across epochs
            torch.manual_seed(self.cfg.seed)
            for batch in loader:
                batch = _to_device(batch, self.device)
                loss, _ = self.policy.compute_loss(batch, teacher=self.ema.averaged_model)
                losses.append(loss.item())
                weights.append(len(batch["action"]))
        return float(np.average(losses, weights=weights))

    def validate_in_env(self, logger: MetricLogger) -> float:
        """Validation rollouts of the EMA policy, sampling as the evaluation does; recorded in
        ``selection`` (the next :meth:`save` writes ``best.pt`` if it is the best).
        ``evaluate_policy`` leaves the training RNG streams as they were, so the data order and
        the loss noise of a run do not depend on whether it validates."""
        policy = validation_policy(self.ema.averaged_model, self.cfg.select_policy_overrides)
        result = evaluate_policy(policy, self.env_runner, self.cfg.select_episodes,
                                 seed=validation_seed(self.cfg.seed), device=self.device,
                                 progress=False)
        success = float(result["success_rate"])
        self.selection.append({"step": self.global_step, "success_rate": success,
                               "num_env_steps": int(result.get("num_env_steps", 0))})
        logger.log({"select/success_rate": success}, self.global_step)
        log.info("step %d | validation success %.2f (best %.2f)", self.global_step, success,
                 best_record(self.selection)["success_rate"])
        return success

    def evaluate(self, progress: bool) -> dict[str, Any]:
        cfg = self.cfg
        video = self.out / "videos" / f"epoch_{self.epoch:04d}.mp4" if cfg.eval_video else None
        result = evaluate_policy(self.ema.averaged_model, self.env_runner, cfg.eval_episodes,
                                 seed=cfg.seed + EVAL_SEED_OFFSET, max_steps=cfg.eval_max_steps,
                                 device=self.device, video_path=video, progress=progress)
        path = self.out / "eval" / f"epoch_{self.epoch:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"epoch": self.epoch, "global_step": self.global_step,
                                    **result}, indent=2))
        return result

    def close(self) -> None:
        if self._owns_env and hasattr(self.env_runner, "close"):
            self.env_runner.close()


def run_pretraining(cfg: PretrainConfig, env_runner_factory: Callable[[], Any] | None = None,
                    progress: bool = True,
                    policy_factory: Callable[[dict, dict], Any] | None = None) -> dict[str, Any]:
    """Train (or resume) a policy on ``cfg.dataset_path``; return a summary dict.

    ``env_runner_factory()`` builds the evaluation env (default: :func:`make_env_runner` for
    ``cfg.task``); ``policy_factory(shape_meta, policy_config)`` builds the policy (default:
    ``ManiFlowPointcloudRLPolicy(shape_meta, **policy_config)``). Every configuration error is
    raised before the first training step.
    """
    run = _Run(cfg, env_runner_factory, policy_factory)
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    remove_stale_temp_files(run.ckpt_dir)          # left by saves a kill interrupted
    # a resumed run logs the steps after its checkpoint again: TensorBoard drops the old ones
    logger = MetricLogger(run.out / "tb", purge_step=run.global_step + 1)
    last_eval, checkpoint = None, None
    bar = tqdm(total=run.total_steps, initial=run.global_step, desc="pretrain",
               disable=not progress, dynamic_ncols=True)
    try:
        while not run.done():
            train_loss = run.train_epoch(logger, bar)
            run.epoch += 1
            record = {"epoch": run.epoch, "train_loss": train_loss}
            val = run.val_loss()
            if val is not None:
                record["val_loss"] = val
                logger.log({"val/loss": val}, run.global_step)
            if cfg.eval_every_epochs and (run.epoch % cfg.eval_every_epochs == 0 or run.done()):
                last_eval = run.evaluate(progress)
                record["success_rate"] = last_eval["success_rate"]
                logger.log({f"eval/{k}": last_eval[k] for k in
                            ("success_rate", "ci_low", "ci_high", "mean_return", "mean_length")},
                           run.global_step)
            logger.log({"train/epoch_loss": train_loss}, run.global_step)
            validated = validation_due(run.selection, run.global_step, cfg.select_every_steps,
                                       run.done())
            if validated:
                record["validation_success_rate"] = run.validate_in_env(logger)
            run.history.append(record)
            log.info("epoch %d | step %d | %s", run.epoch, run.global_step,
                     " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
            if validated or run.epoch % cfg.checkpoint_every_epochs == 0 or run.done():
                checkpoint = run.save()
            logger.flush()
    finally:
        bar.close()
        logger.close()
        run.close()
    if checkpoint is None and (run.ckpt_dir / "latest.pt").exists():
        checkpoint = run.ckpt_dir / "latest.pt"
    return {
        "output_dir": str(run.out), "checkpoint": None if checkpoint is None else str(checkpoint),
        "epochs": run.epoch, "global_step": run.global_step, "resumed_from_epoch": run.resumed_from,
        "train_loss": run.history[-1]["train_loss"] if run.history else None,
        "val_loss": run.history[-1].get("val_loss") if run.history else None,
        "history": run.history, "shape_meta": run.shape_meta, "selection": run.selection,
        "best_checkpoint": (str(run.ckpt_dir / "best.pt") if run.selection else None),
        "validation_best5_mean": (best_k_mean([r["success_rate"] for r in run.selection])
                                  if run.selection else None),
        "eval": None if last_eval is None else {k: v for k, v in last_eval.items()
                                                if k != "episodes"},
    }
