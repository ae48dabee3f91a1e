"""The PPO training loop: rollout -> advantages -> PPO update, with logging, evaluation and
atomic, resumable checkpoints.

One iteration (one "rollout" in the seed's wording)::

    policy.set_noise_progress(iteration)                 # flow_sde noise annealing
    if GRPO: env_runner.seed(group_layout_seeds(seed, iteration, ...)); fresh episodes
    batch, stats = collector.collect(num_steps_per_rollout)   # RolloutBatch [T, N]
    batch = advantage_calculator.calculate(batch)        # fills advantages / returns / mask
    metrics = ppo_update(policy, optimizer, batch, config)
    lr_scheduler.step(); log / eval / save every *_interval (and save after each evaluation)

The rollout and the update run inside ``utils/threads.phase`` (torch threads of the installed
``runtime`` policy; nothing without one).

Faults and restarts: bad env values are caught by the collector (``PPOConfig.nonfinite_policy``),
non-finite minibatch steps are skipped by the update and ``max_consecutive_skipped_updates`` of
them in a row stop the run (:class:`NonFiniteTrainingError`); a checkpoint is only written when
every weight is finite. When logging starts (after a resume: at the checkpoint's step),
``metrics.jsonl`` is cut back to that step, TensorBoard purges the later steps, temp files of
interrupted saves are deleted, and a resumed run re-seeds its envs from ``(seed, global_step)``.

Data-parallel (launched by ``torchrun``, ``utils/distributed.py``): ``config.num_envs`` counts
the envs of all ranks; each rank's ``env_runner`` holds ``num_envs / world_size`` of them
(rank-distinct seeds: ``rank_seed``), advantages are computed per rank (normalised globally),
the update all-reduces gradients, metrics are reduced over the ranks, and rank 0 alone
evaluates, logs and writes checkpoints (which hold every rank's RNG state).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from maniflow_rl.rl.advantages import AdvantageConfig, ManiFlowAdvantageCalculator
from maniflow_rl.rl.checkpoint_names import LATEST_CHECKPOINT, ppo_checkpoint_path
from maniflow_rl.rl.intervals import evaluation_due
from maniflow_rl.rl.nonfinite import NonFiniteTrainingError, skipped_updates_message
from maniflow_rl.rl.ppo.config import PPOConfig
from maniflow_rl.utils.config_dicts import as_config
from maniflow_rl.rl.ppo.demo_regularizer import DemoRegularizer
from maniflow_rl.rl.ppo.helpers import (  # noqa: F401  (re-exported: public names)
    CONSOLE_KEYS, CRITIC_NAME_MARKERS, check_env_count, check_grpo_setup,
    denoising_step_diagnostics, lr_multiplier, make_optimizer, policy_autocast, rank_state_of,
    rollout_metrics, split_actor_critic_parameters)
from maniflow_rl.rl.ppo.update import consecutive_skipped_updates, ppo_update
from maniflow_rl.rl.rollout_collector import (CollectorConfig, ManiFlowRolloutCollector,
                                              group_layout_seeds)
from maniflow_rl.utils import distributed as dp
from maniflow_rl.utils import threads
from maniflow_rl.utils.checkpoint import (assert_finite_state, load_checkpoint_file,
                                          load_policy_weights, save_checkpoint_atomic)
from maniflow_rl.utils.logger import MetricLogger
from maniflow_rl.utils.run_files import METRICS_FILE, append_metrics_row, open_run_logger
from maniflow_rl.utils.seeding import (get_rng_state, reseed_env_runner_for_resume,
                                       resume_env_seed, seed_everything, set_rng_state)
from maniflow_rl.utils.shape_meta import check_shape_meta_compatible

log = logging.getLogger("maniflow_rl")

class ManiFlowPPOTrainer:
    """PPO fine-tuning of a chain-recording flow policy on an env runner."""

    def __init__(self, policy, env_runner, config: PPOConfig | dict | None = None,
                 advantage_config: AdvantageConfig | dict | None = None,
                 collector_config: CollectorConfig | dict | None = None,
                 eval_env_runner=None, device: str | torch.device | None = None,
                 eval_fn: Callable[..., dict] | None = None,
                 demo_dataset: torch.utils.data.Dataset | None = None,
                 demo_teacher: torch.nn.Module | None = None,
                 imitation_checkpoint: dict[str, str] | None = None):
        """``demo_dataset`` (windows ``{'obs', 'action'}`` as in pretraining) is required when
        ``config.bc_coef > 0``: see :mod:`maniflow_rl.rl.ppo.demo_regularizer`. Its teacher is
        ``demo_teacher`` (the imitation policy), by default a copy of ``policy`` as given.
        ``imitation_checkpoint`` (``checkpoint_identity`` of the imitation checkpoint) is stored
        in every checkpoint, so a continued run can anchor to the same imitation policy."""
        self.config = as_config(PPOConfig, config).validate()
        self.advantage_config = as_config(AdvantageConfig, advantage_config)
        self.advantage_config.validate()
        self.local_num_envs = dp.local_num_envs(self.config.num_envs,  # before joining
                                                dp.dist_info_from_env().world_size)
        self.dist = dp.init_distributed(device or self.config.device)
        self.device = dp.rank_device(device or self.config.device, self.dist)
        self.policy = policy.to(self.device)
        self.env_runner = env_runner
        self.eval_env_runner = eval_env_runner
        check_env_count(env_runner, self.config.num_envs, self.dist.world_size)
        if collector_config is None:
            collector_config = CollectorConfig(action_chunk_size=policy.n_action_steps,
                                               obs_chunk_size=policy.n_obs_steps)
        self.collector_config = as_config(CollectorConfig, collector_config)
        self.collector = ManiFlowRolloutCollector(
            self.policy, env_runner, self.collector_config, device=self.device,
            group_size=self.advantage_config.group_size,
            nonfinite_policy=self.config.nonfinite_policy,
            max_abs_env_value=self.config.max_abs_env_value)
        self.advantage_calculator = ManiFlowAdvantageCalculator(
            self.advantage_config, all_reduce=dp.all_reduce_sum if self.dist.enabled else None)
        self.fresh_episode_rollouts = self.advantage_config.advantage_type == "grpo"
        if self.fresh_episode_rollouts:
            check_grpo_setup(self.env_runner, self.config, self.advantage_config.group_size,
                             self.local_num_envs, self.collector_config.max_steps_per_episode,
                             self.policy.n_action_steps)
        self.actor_params, self.critic_params = split_actor_critic_parameters(self.policy)
        self.optimizer = make_optimizer(self.actor_params, self.critic_params, self.config)
        self.eval_fn = eval_fn
        self.demo_regularizer = None
        if self.config.bc_coef > 0:
            if demo_dataset is None:
                raise ValueError("PPOConfig.bc_coef > 0 needs demo_dataset (the demonstrations)")
            teacher = self.policy if demo_teacher is None else demo_teacher.to(self.device)
            self.demo_regularizer = DemoRegularizer(demo_dataset, teacher,
                                                    self.config.bc_batch_size, self.rank_seed)
        self.imitation_checkpoint = imitation_checkpoint
        self.iteration = 0
        self.global_step = 0
        self.executed_env_steps = 0   # env steps really run (held / idle envs excluded)
        self.history: list[dict[str, float]] = []
        self.consecutive_skipped_updates = 0
        self._generator = torch.Generator().manual_seed(self.rank_seed)
        self._logger: MetricLogger | None = None
        self.grad_sync = dp.data_parallel_sync(self.device)
        dp.broadcast_module_state(self.policy)   # every rank starts from rank 0's weights
        seed_everything(self.rank_seed)

    @property
    def rank_seed(self) -> int:
        """Seed of this rank's sampling noise and envs (``config.seed`` on rank 0)."""
        return dp.rank_seed(self.config.seed, self.dist.rank)

    # ------------------------------------------------------------------ sizes
    @property
    def env_steps_per_iteration(self) -> int:
        return self.config.rollout_size * self.policy.n_action_steps

    @property
    def num_iterations(self) -> int:
        return max(1, math.ceil(self.config.total_timesteps / self.env_steps_per_iteration))

    @property
    def save_dir(self) -> Path:
        return Path(self.config.save_path)

    # ------------------------------------------------------------------ training
    def train(self, num_iterations: int | None = None, progress: bool = True) -> list[dict]:
        """Train until ``total_timesteps`` env steps (or ``num_iterations`` more iterations)."""
        target = self.num_iterations if num_iterations is None else self.iteration + num_iterations
        self._open_logger()
        bar = tqdm(total=target, initial=self.iteration, desc="PPO", unit="it",
                   disable=not (progress and self.dist.is_main), dynamic_ncols=True)
        try:
            while self.iteration < target:
                metrics = self.train_iteration()
                bar.update(1)
                bar.set_postfix({k.split("/")[-1]: f"{metrics[k]:.3g}" for k in
                                 ("rollout/return_mean", "rollout/success_rate") if k in metrics})
        finally:
            bar.close()
            if self._logger is not None:
                self._logger.flush()
        return self.history

    def train_iteration(self) -> dict[str, float]:
        """One rollout + advantage + PPO update (+ logging / eval / checkpoint as scheduled)."""
        self._open_logger()
        cfg = self.config
        self._set_lr()
        if hasattr(self.policy, "set_noise_progress"):
            self.policy.set_noise_progress(self.iteration)
        t0 = time.perf_counter()
        self.policy.eval()
        if self.fresh_episode_rollouts:   # every group attempts one new layout per rollout
            seeds = group_layout_seeds(cfg.seed, self.iteration, cfg.num_envs,
                                       self.advantage_config.group_size)  # global env order
            self.env_runner.seed(seeds[dp.rank_env_slice(cfg.num_envs, self.dist.rank,
                                                         self.dist.world_size)])
        with policy_autocast(cfg.autocast, self.device), threads.phase("rollout"):
            batch, stats = self.collector.collect(cfg.num_steps_per_rollout,
                                                  fresh_episodes=self.fresh_episode_rollouts)
        t_rollout = time.perf_counter() - t0
        batch = self.advantage_calculator.calculate(batch)
        t1 = time.perf_counter()
        self.policy.train()
        critic_only = self.iteration < cfg.critic_warmup_iterations
        bc = None if self.demo_regularizer is None else \
            (lambda: self.demo_regularizer.loss(self.policy))
        with policy_autocast(cfg.autocast, self.device), threads.phase("update"):
            update_metrics = ppo_update(self.policy, self.optimizer, batch, cfg,
                                        generator=self._generator, critic_only=critic_only,
                                        actor_params=self.actor_params,
                                        critic_params=self.critic_params, bc_loss_fn=bc,
                                        sync=self.grad_sync)
        t_update = time.perf_counter() - t1
        env_steps = int(stats.get("env_steps",
                                  self.env_steps_per_iteration // self.dist.world_size))
        if self.dist.enabled:   # every rank counts the env steps of all ranks
            env_steps = int(dp.all_reduce_sum(torch.tensor([env_steps], device=self.device))[0])
        self.global_step += env_steps
        self.iteration += 1
        self.consecutive_skipped_updates = consecutive_skipped_updates(
            self.consecutive_skipped_updates, update_metrics["skipped_updates"],
            update_metrics.pop("trailing_skipped_updates"), update_metrics["num_minibatches"])
        metrics = self._collect_metrics(stats, update_metrics, batch, critic_only,
                                        env_steps, t_rollout, t_update)
        if self.consecutive_skipped_updates >= cfg.max_consecutive_skipped_updates:
            self._record(metrics)
            message = skipped_updates_message(self.consecutive_skipped_updates, self.iteration,
                                              self._last_checkpoint())
            log.error(message)
            raise NonFiniteTrainingError(message)
        if self.dist.enabled:
            metrics = dp.reduce_metric_dicts(dp.all_gather_objects(metrics))
            metrics["perf/sps"] = env_steps / max(metrics["perf/rollout_seconds"]
                                                  + metrics["perf/update_seconds"], 1e-9)
            metrics["perf/rollout_sps"] = env_steps / max(metrics["perf/rollout_seconds"], 1e-9)
        self.executed_env_steps += int(metrics.get("rollout/executed_env_steps", env_steps))
        metrics["executed_env_steps"] = self.executed_env_steps
        evaluated = cfg.eval_episodes > 0 and evaluation_due(
            self.iteration, self.num_iterations, cfg.eval_interval)
        if evaluated:
            metrics.update({f"eval/{k}": v for k, v in self.evaluate().items()
                            if isinstance(v, (int, float))})
        self._record(metrics)
        # an evaluated policy is always kept: `maniflow-rl run` may select it (finetune.select)
        if self.iteration % cfg.save_interval == 0 or self.iteration == self.num_iterations \
                or evaluated:
            self.save_checkpoint()
        return metrics

    def _collect_metrics(self, stats, update_metrics, batch, critic_only, env_steps,
                         t_rollout, t_update) -> dict[str, float]:
        metrics: dict[str, float] = {"iteration": self.iteration, "global_step": self.global_step}
        metrics.update({f"train/{k}": v for k, v in update_metrics.items()})
        metrics["train/consecutive_skipped_updates"] = float(self.consecutive_skipped_updates)
        metrics.update(rollout_metrics(stats, batch, self.policy.executed_slice))
        metrics["train/critic_warmup"] = float(critic_only)
        for group in self.optimizer.param_groups:
            metrics[f"train/lr_{group.get('name', 'group')}"] = group["lr"]
        if hasattr(self.policy, "current_noise_level"):
            metrics["policy/noise_level"] = float(self.policy.current_noise_level())
        metrics["perf/rollout_seconds"] = t_rollout
        metrics["perf/update_seconds"] = t_update
        metrics["perf/sps"] = env_steps / max(t_rollout + t_update, 1e-9)
        metrics["perf/rollout_sps"] = env_steps / max(t_rollout, 1e-9)
        return metrics

    def _record(self, metrics: dict[str, float]) -> None:
        self.history.append(metrics)
        if not self.dist.is_main:   # rank 0 alone logs
            return
        self._logger.log(metrics, self.global_step)
        append_metrics_row(self.save_dir / METRICS_FILE, metrics)
        if self.iteration % self.config.log_interval == 0:
            self._logger.console(metrics, self.global_step, CONSOLE_KEYS)

    def _set_lr(self) -> None:
        cfg = self.config
        factor = lr_multiplier(cfg.lr_schedule, self.iteration, self.num_iterations,
                               cfg.lr_warmup_iterations)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def _open_logger(self) -> None:
        """Open the logger; first make the run folder describe this run up to ``global_step``
        (``utils/run_files.prepare_run_dir``) and purge later TensorBoard steps."""
        if self._logger is None and self.dist.is_main:
            self._logger = open_run_logger(self.save_dir, self.global_step, self.config.log_dir,
                                           self.config.to_dict(), self.config.wandb_project,
                                           self.config.wandb_run_name)

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, num_episodes: int | None = None, policy=None) -> dict[str, Any]:
        """Deterministic evaluation (no sampling noise) of the trained policy, or of ``policy``
        on the same envs and seeds. Uses ``eval_env_runner`` when given; otherwise the training
        envs, whose episodes then restart at the next rollout.
        Data-parallel: rank 0 evaluates, every rank returns its result."""
        if self.dist.enabled:
            result = self._evaluate(num_episodes, policy) if self.dist.is_main else None
            return dp.broadcast_object(result)
        return self._evaluate(num_episodes, policy)

    def _evaluate(self, num_episodes: int | None = None, policy=None) -> dict[str, Any]:
        num_episodes = num_episodes or self.config.eval_episodes
        runner = self.eval_env_runner or self.env_runner
        policy = self.policy if policy is None else policy
        policy.eval()
        if self.eval_fn is not None:
            result = self.eval_fn(policy, runner, num_episodes)
        else:
            from maniflow_rl.evaluation.evaluate import EVAL_SEED_OFFSET, evaluate_policy

            result = evaluate_policy(policy, runner, num_episodes,
                                     seed=self.config.seed + EVAL_SEED_OFFSET, progress=False)
        if runner is self.env_runner:
            self.collector.reset()
        return result

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "kind": "ppo",
            "shape_meta": self.policy.shape_meta,
            "policy_config": self.policy.get_config(),
            "policy_state_dict": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ppo_config": self.config.to_dict(),
            "advantage_config": dataclasses.asdict(self.advantage_config),
            "collector_config": dataclasses.asdict(self.collector_config),
            "iteration": self.iteration,
            "global_step": self.global_step,
            "executed_env_steps": self.executed_env_steps,
            "history": self.history,
            "rng": get_rng_state(),
            "trainer_generator": self._generator.get_state(),
            "imitation_checkpoint": self.imitation_checkpoint,
            "world_size": self.dist.world_size,
            "rank_states": dp.all_gather_objects(self._rank_state()),   # every rank's RNGs
        }

    def _rank_state(self) -> dict[str, Any]:
        return {"rng": get_rng_state(), "trainer_generator": self._generator.get_state()}

    def _last_checkpoint(self) -> Path | None:
        latest = self.save_dir / LATEST_CHECKPOINT
        return latest if latest.is_file() else None

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Atomically write ``checkpoint_<iteration>.pt`` (and ``latest.pt``) under save_path.

        Refuses (:class:`~maniflow_rl.utils.checkpoint.NonFiniteStateError`) before writing
        anything if a weight or optimizer statistic is NaN / inf: the files already there stay.
        Data-parallel: every rank calls it (it gathers the ranks' RNG states); rank 0 writes."""
        where = f"refusing to save the PPO checkpoint of iteration {self.iteration} " \
                f"(the previous checkpoints are left as they are): "
        assert_finite_state(self.policy, where + "the policy")
        assert_finite_state(self.optimizer.state_dict()["state"], where + "the optimizer state")
        payload = self.checkpoint_payload()
        target = Path(path) if path is not None else \
            ppo_checkpoint_path(self.save_dir, self.iteration)
        if not self.dist.is_main:
            return target
        save_checkpoint_atomic(payload, target)
        if path is None:
            save_checkpoint_atomic(payload, self.save_dir / LATEST_CHECKPOINT)
        return target

    def load_checkpoint(self, path: str | Path, resume: bool = True) -> dict[str, Any]:
        """Load a PPO checkpoint (weights, optimizer, counters, RNG: training continues from the
        saved step) or a pretraining checkpoint (EMA weights if present: fine-tuning starts)."""
        payload = load_checkpoint_file(path, map_location=self.device,
                                       expected_kind=("ppo", "pretrain"))
        if payload.get("shape_meta") is not None:
            check_shape_meta_compatible(self.policy.shape_meta, payload["shape_meta"], exact=True,
                                        required_name="this policy",
                                        provided_name=f"checkpoint {path}")
        load_policy_weights(self.policy, payload)
        if payload["kind"] == "pretrain":
            return payload
        if resume:
            self.optimizer.load_state_dict(payload["optimizer"])
            for group in self.optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
            self.iteration = int(payload["iteration"])
            self.global_step = int(payload["global_step"])
            self.executed_env_steps = int(payload.get("executed_env_steps", self.global_step))
            self.history = list(payload.get("history", []))
            self._restore_rank_state(payload)
            self.consecutive_skipped_updates = 0
            self.close()   # the next _open_logger cuts metrics.jsonl / TensorBoard to this step
            if not self.fresh_episode_rollouts:   # GRPO seeds every rollout from iteration
                # new layouts, not the run's first ones: seed from (seed, global_step)
                reseed_env_runner_for_resume(self.env_runner, self.rank_seed, self.global_step)
            self.collector.vector_steps = self.global_step // max(1, self.config.num_envs)
            self.collector.reset()
            if self.imitation_checkpoint is None:
                self.imitation_checkpoint = payload.get("imitation_checkpoint")
        return payload

    def _restore_rank_state(self, payload: dict[str, Any]) -> None:
        """This rank's RNG streams as saved; a rank the checkpoint did not have (more ranks
        now) starts fresh streams from ``(rank_seed, global_step)``."""
        state = rank_state_of(payload, self.dist.rank)
        if state is None:
            seed_everything(resume_env_seed(self.rank_seed, self.global_step))
            return
        set_rng_state(state.get("rng"))
        if state.get("trainer_generator") is not None:
            self._generator.set_state(state["trainer_generator"])
