"""ManiFlowDSRLTrainer: off-policy steering of a frozen ManiFlow policy through its initial
noise (DSRL, Wagenmaker et al. 2025, arXiv 2506.15799). The math is in ``losses.py``.

One vector step (one action chunk in every env; collection and updates run in the thread
policy's ``rollout`` / ``update`` phases, ``utils/threads.py``)::

    context, s = steered.features(obs)                    # frozen encoder, cached per state
    (critics read s plus the privileged critic_obs_keys, e.g. full_state; the actor reads s)
    w ~ pi(w | s)   (w ~ N(0, I) clipped to the bound during warm-up: the imitation policy)
    a = f(s, w)                                           # deterministic Euler chain from x_0 = w
    NA: M alias pairs (w_j, f(s, w_j)), w_j ~ pi(. | s) or N(0, I), to distill Q^W
    execute a; store (s, w, a, R, d, s') (n-step); then round(utd_ratio * N) gradient steps:
      critic   SAC: Q(s, w) by TD         NA: Q^A(s, a) by TD (demo chunks too)
      NA:      Q^W(s, w_j) <- mean_e Q^A(s, f(s, w_j))   (noise aliasing, on the pairs)
      actor    max_w Q(s, w) - alpha log pi          (Q = Q^W for NA)
      target   Polyak average of the noise-space critic; the TD target reads it:
               y = R + gamma_n (1 - d) [min_e Qbar(s', w') - alpha log pi(w'|s')]

Deliberate difference from the reference NA: its TD target evaluates Q^A(s', f(s', w')),
which needs the flow policy's chain on every sampled next state; here the target reads the
target copy of the distilled Q^W(s', w') (= Q^A(s', f(s', w')) up to distillation error), so
an update never runs the flow policy and the replay stores features, not observations.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from maniflow_rl.rl.checkpoint_names import LATEST_CHECKPOINT
from maniflow_rl.rl.dsrl.checkpointing import load_dsrl_checkpoint, save_dsrl_checkpoint
from maniflow_rl.rl.dsrl.config import DSRLConfig
from maniflow_rl.rl.dsrl.demos import prefill_demo_transitions
from maniflow_rl.rl.dsrl.networks import CriticEnsemble
from maniflow_rl.rl.dsrl.steered_policy import LatentSteeredPolicy
from maniflow_rl.rl.dsrl.update import dsrl_gradient_step
from maniflow_rl.rl.intervals import evaluation_due
from maniflow_rl.rl.nonfinite import NonFiniteTrainingError, skipped_updates_message
from maniflow_rl.rl.replay import ChunkReplayBuffer, NStepAccumulator
from maniflow_rl.rl.rollout_collector import ManiFlowRolloutCollector
from maniflow_rl.utils.run_files import append_metrics_row, open_run_logger
from maniflow_rl.utils import threads
from maniflow_rl.utils.config_dicts import config_from_dict
from maniflow_rl.utils.seeding import seed_everything

log = logging.getLogger("maniflow_rl")
CONSOLE_KEYS = ("rollout/return_mean", "rollout/success_rate", "eval/success_rate",
                "train/critic_loss", "train/q_mean", "train/alpha", "perf/sps")


class ManiFlowDSRLTrainer:
    """Latent-noise SAC (``variant='sac'``) or noise aliasing (``'na'``) on an env runner."""

    def __init__(self, policy, env_runner, config: DSRLConfig | dict | None = None,
                 eval_env_runner=None, eval_fn: Callable[..., dict] | None = None,
                 demo_dataset=None, device: str | torch.device | None = None,
                 demo_reward_type: str = "sparse"):
        self.config = cfg = (config if isinstance(config, DSRLConfig) else
                             config_from_dict(DSRLConfig, config or {})).validate()
        if getattr(env_runner, "num_envs", cfg.num_envs) != cfg.num_envs:
            raise ValueError(f"env_runner has {env_runner.num_envs} envs but "
                             f"DSRLConfig.num_envs={cfg.num_envs}")
        seed_everything(cfg.seed)
        self.device = torch.device(device or cfg.device)
        policy = policy.to(self.device).eval()
        for param in policy.parameters():
            param.requires_grad_(False)
        self.env_runner, self.eval_env_runner, self.eval_fn = env_runner, eval_env_runner, eval_fn
        self.collector = ManiFlowRolloutCollector(
            policy, env_runner, device=self.device, nonfinite_policy=cfg.nonfinite_policy,
            max_abs_env_value=cfg.max_abs_env_value, extra_obs_keys=cfg.critic_obs_keys)
        self.steered = LatentSteeredPolicy(policy, cfg.hidden_dims, cfg.noise_bound,
                                           cfg.eval_noise, cfg.residual_bound
                                           ).to(self.device).eval()
        self.actor, self.actor_dim = self.steered.actor, self.steered.feature_dim
        feat = self.actor_dim + self._privileged_dim()
        noise = self.steered.latent_dim   # the noise, then the residual (if any)
        chunk = policy.n_action_steps * policy.action_dim
        # the noise-space critic (SAC: the critic; NA: the distilled Q^W) and, for NA, Q^A
        self.noise_critic = CriticEnsemble(feat, noise, cfg.hidden_dims,
                                           cfg.num_critics).to(self.device)
        self.target_noise_critic = copy.deepcopy(self.noise_critic).requires_grad_(False)
        self.action_critic = (CriticEnsemble(feat, chunk, cfg.hidden_dims, cfg.num_critics)
                              .to(self.device) if cfg.variant == "na" else None)
        self.log_alpha = torch.tensor(math.log(max(cfg.alpha, 1e-8)), device=self.device,
                                      requires_grad=cfg.auto_alpha)
        self.optimizers = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_learning_rate),
            "noise_critic": torch.optim.Adam(self.noise_critic.parameters(),
                                             lr=cfg.critic_learning_rate),
            "alpha": torch.optim.Adam([self.log_alpha], lr=cfg.actor_learning_rate),
        }
        if self.action_critic is not None:
            self.optimizers["action_critic"] = torch.optim.Adam(self.action_critic.parameters(),
                                                                lr=cfg.critic_learning_rate)
        self.target_entropy = (-float(noise) if cfg.target_entropy is None
                               else float(cfg.target_entropy))
        self.chunk_discount = cfg.gamma ** policy.n_action_steps
        self.replay = ChunkReplayBuffer(cfg.buffer_size, feat, noise, chunk,
                                        cfg.num_alias_noises, seed=cfg.seed)
        self.nstep = NStepAccumulator(cfg.num_envs, cfg.nstep, self.chunk_discount)
        self._generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.global_step = self.vector_steps = self.gradient_steps = 0
        self.executed_env_steps = 0   # env steps really run (held envs excluded)
        self.skipped_updates = self.consecutive_skipped = 0
        self.history: list[dict[str, float]] = []
        self._episodes: list[dict[str, Any]] = []
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None
        self._pending: dict[str, float] = {}      # sums since the last log row
        self._timing = [0.0, 0.0, 0, 0]           # collect s, update s, updates, env steps
        self._logger = None   # MetricLogger, opened at the first log row
        if demo_dataset is not None and cfg.variant == "na":   # rewards as the env pays them
            self.add_demos(demo_dataset, reward_type=demo_reward_type)

    # ------------------------------------------------------------------ properties
    @property
    def policy(self):
        return self.steered.policy

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    @property
    def save_dir(self) -> Path:
        return Path(self.config.save_path)

    def predict_action(self, obs, generator: torch.Generator | None = None):
        """The deterministic action chunk (the actor's mean noise through the frozen policy)."""
        return self.steered.predict_action(obs, generator, deterministic=True)

    # ------------------------------------------------------------------ data
    def _privileged_dim(self) -> int:
        """Size of the privileged critic inputs (newest frame of ``critic_obs_keys``), read
        from the first observation (the envs are reset here instead of at the first step)."""
        if not self.config.critic_obs_keys:
            return 0
        obs = self.collector.observation()
        return sum(math.prod(obs[k].shape[2:]) for k in self.config.critic_obs_keys)

    def state_features(self, obs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context, features)``: the actor's features (frozen encoder + low-dim keys),
        then the newest frame of the privileged ``critic_obs_keys``, flattened."""
        context, features = self.steered.features(obs)
        privileged = [torch.as_tensor(np.asarray(obs[k]), dtype=features.dtype,
                                      device=self.device)[:, -1].flatten(1)
                      for k in self.config.critic_obs_keys]
        return context, torch.cat([features, *privileged], dim=-1)

    def actor_input(self, features: torch.Tensor) -> torch.Tensor:
        """What the actor reads of stored features: never the privileged part."""
        return features[..., :self.actor_dim]

    @torch.no_grad()
    def _aliases(self, context: torch.Tensor, features: torch.Tensor, count: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``M`` pairs per state ``(w_j, f(s, w_j))``: the first ``round(actor_alias_fraction
        * M)`` noises are the current actor's samples ``w_j ~ pi(. | s)`` (so Q^W is fitted
        where the actor goes), the rest ``w_j ~ N(0, I)`` clipped to the bound (where the
        imitation policy goes)."""
        cfg = self.config
        m = cfg.num_alias_noises
        from_actor = round(cfg.actor_alias_fraction * m)
        noise = self.steered.prior_latent(count * m, self._generator, self.device).view(
            count, m, -1)
        if from_actor:
            sampled = self.actor.sample(self.actor_input(features).repeat_interleave(
                from_actor, 0), self._generator)[0]
            noise[:, :from_actor] = sampled.view(count, from_actor, -1)
        noise = noise.flatten(0, 1)
        actions = self.steered.actions(context.repeat_interleave(m, 0), noise)
        return (noise.view(count, m, -1),
                self.steered.normalized_chunk(actions).view(count, m, -1))

    def add_demos(self, dataset, batch: int = 64, reward_type: str = "sparse") -> int:
        """Pre-fill the replay with the demonstrations as chunk transitions (NA), rewarded as
        the env's ``reward_type`` (sparse or shaped) would."""
        return prefill_demo_transitions(self, dataset, batch, reward_type)

    def _current(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cached is None:
            self._cached = self.state_features(self.collector.observation())
        return self._cached

    def collect_step(self) -> dict[str, float]:
        """One chunk in every env; its transitions go to the replay buffer."""
        cfg, n = self.config, self.config.num_envs
        context, features = self._current()
        with torch.no_grad():
            if self.global_step < cfg.warmup_steps:
                noise = self.steered.prior_latent(n, self._generator, self.device)
            else:
                noise = self.actor.sample(self.actor_input(features), self._generator)[0]
            actions = self.steered.actions(context, noise)
            if cfg.variant == "na":
                alias_noise, alias_action = self._aliases(context, features, n)
            else:   # SAC stores no aliases: zeros of the buffer's shapes
                alias_noise = torch.zeros(n, *self.replay.shapes["alias_noise"])
                alias_action = torch.zeros(n, *self.replay.shapes["alias_action"])
        outcome, finished = self.collector.execute(actions.cpu().numpy())
        self._cached = None
        next_features = self._current()[1].clone()   # cached: the next step's state
        if outcome.final_history_envs:   # time limits bootstrap from the final observation
            stacked = {k: torch.as_tensor(np.stack([h[k] for h in outcome.final_histories]))
                       for k in outcome.final_histories[0]}
            next_features[outcome.final_history_envs] = self.state_features(stacked)[1]
        step = {k: v.cpu().numpy() for k, v in (
            ("features", features), ("noise", noise), ("next_features", next_features),
            ("action", self.steered.normalized_chunk(actions)), ("alias_noise", alias_noise),
            ("alias_action", alias_action))}   # one device -> host copy per field, [N, ...]
        terminated = outcome.dones & ~outcome.truncated
        completed = []
        dropped = (outcome.dropped if outcome.dropped is not None
                   else np.zeros(n, dtype=bool))   # a bad env value (nonfinite_policy=drop)
        for env in range(n):   # per-env n-step streams
            if dropped[env]:
                self.nstep.discard(env)
                continue
            completed += self.nstep.push(env, {
                **{k: v[env] for k, v in step.items()}, "reward": float(outcome.rewards[env]),
                "discount": 0.0, "terminated": float(terminated[env]), "is_demo": 0.0},
                episode_ended=bool(outcome.dones[env]))
        if completed:
            self.replay.add({k: np.stack([c[k] for c in completed]).astype(np.float32)
                             for k in completed[0]})
        self.global_step += n * self.policy.n_action_steps
        self.executed_env_steps += int(outcome.executed_steps)
        self._episodes += finished
        dw = self.steered.noise_dim   # how far the deterministic noise is from N(0, I) draws
        with torch.no_grad():         # (~sqrt(Dw)); the residual's size in normalized units
            mean_latent = self.actor.mean_noise(self.actor_input(features))
        self._pending["actor/mean_noise_norm"] = float(mean_latent[:, :dw].norm(dim=1).mean())
        self._pending["actor/noise_norm"] = float(noise[:, :dw].norm(dim=1).mean())
        if self.steered.residual_dim:
            self._pending["actor/mean_residual_abs"] = float(mean_latent[:, dw:].abs().mean())
        return {"env_steps": float(n * self.policy.n_action_steps)}

    @property
    def num_vector_steps(self) -> int:
        """Vector steps of ``total_timesteps``: the run's last step (always evaluated)."""
        return math.ceil(self.config.total_timesteps
                         / (self.config.num_envs * self.policy.n_action_steps))

    # ------------------------------------------------------------------ training
    def train(self, num_vector_steps: int | None = None, progress: bool = True) -> list[dict]:
        """Collect and update until ``total_timesteps`` env steps (or ``num_vector_steps``)."""
        target = (self.num_vector_steps if num_vector_steps is None
                  else self.vector_steps + num_vector_steps)
        self._open_logger()
        bar = tqdm(total=target, initial=self.vector_steps, desc="DSRL", unit="step",
                   disable=not progress, dynamic_ncols=True)
        try:
            while self.vector_steps < target:
                self.train_step()
                bar.update(1)
        finally:
            bar.close()
            if self._logger is not None:
                self._logger.flush()
        return self.history

    def train_step(self) -> dict[str, float] | None:
        """One vector step of collection, then ``round(utd_ratio * num_envs)`` updates;
        logging, evaluation and checkpoints on their intervals."""
        cfg = self.config
        t0 = time.perf_counter()
        with threads.phase("rollout"):
            self.collect_step()
        t_collect = time.perf_counter() - t0
        sums: dict[str, float] = {}
        updates = 0
        if self.global_step >= cfg.warmup_steps and self.replay.size >= 1:
            demo_fraction = cfg.demo_fraction if cfg.variant == "na" else 0.0
            with threads.phase("update"):
                for _ in range(max(1, round(cfg.utd_ratio * cfg.num_envs))):
                    batch = self.replay.sample(cfg.batch_size, demo_fraction, self.device)
                    step_metrics = dsrl_gradient_step(self, batch)
                    self._count_skips(step_metrics.pop("skipped_updates"))
                    for key, value in step_metrics.items():
                        sums[key] = sums.get(key, 0.0) + value
                    updates += 1
            self.gradient_steps += updates
        t_update = time.perf_counter() - t0 - t_collect
        self.vector_steps += 1
        self._account(t_collect, t_update, updates, sums)
        evaluated = cfg.eval_episodes > 0 and evaluation_due(
            self.vector_steps, self.num_vector_steps, cfg.eval_interval)
        if evaluated:
            self._pending.update({f"eval/{k}": v for k, v in self.evaluate().items()
                                  if isinstance(v, (int, float))})
        flush = self.vector_steps % cfg.log_interval == 0 or evaluated   # evaluations: own row
        metrics = self._flush_metrics() if flush else None
        if self.vector_steps % cfg.save_interval == 0 or evaluated:   # evaluated: selectable
            self.save_checkpoint()
        return metrics

    def _count_skips(self, skipped: float) -> None:
        """Count optimizer steps skipped for a NaN / inf loss or gradient; stop the run after
        ``max_consecutive_skipped_updates`` gradient steps in a row with a skip."""
        self.skipped_updates += int(skipped)
        self.consecutive_skipped = self.consecutive_skipped + 1 if skipped else 0
        if self.consecutive_skipped >= self.config.max_consecutive_skipped_updates:
            latest = self.save_dir / LATEST_CHECKPOINT
            raise NonFiniteTrainingError(skipped_updates_message(
                self.consecutive_skipped, self.vector_steps, latest if latest.is_file() else None,
                config_name="DSRLConfig", step_name="vector step"))

    def _account(self, t_collect, t_update, updates, sums) -> None:
        """Accumulate timings and update diagnostics until the next log row."""
        pending, steps = self._pending, self.config.num_envs * self.policy.n_action_steps
        self._timing = [a + b for a, b in zip(self._timing, (t_collect, t_update, updates, steps))]
        for key, value in sums.items():
            pending[f"train/{key}"] = pending.get(f"train/{key}", 0.0) + value
        pending["_updates"] = pending.get("_updates", 0) + updates

    def _flush_metrics(self) -> dict[str, float]:
        pending, (t_collect, t_update, updates, steps) = self._pending, self._timing
        count = max(1, pending.pop("_updates", 0))
        metrics = {k: (v / count if k.startswith("train/") else v) for k, v in pending.items()}
        metrics.update({"vector_step": self.vector_steps, "global_step": self.global_step,
                        "executed_env_steps": self.executed_env_steps,
                        "train/gradient_steps": self.gradient_steps,
                        "train/skipped_updates": self.skipped_updates,
                        "train/utd": updates / max(1, steps / self.policy.n_action_steps),
                        "replay/size": self.replay.size, "replay/demos": self.replay.num_demos,
                        "perf/sps": steps / max(t_collect + t_update, 1e-9),
                        "perf/env_sps": steps / max(t_collect, 1e-9),
                        "perf/updates_per_s": updates / max(t_update, 1e-9),
                        "perf/learning_share": t_update / max(t_collect + t_update, 1e-9)})
        if self._episodes:
            metrics["rollout/return_mean"] = float(np.mean([e["return"] for e in self._episodes]))
            metrics["rollout/success_rate"] = float(np.mean([e["success"] for e in self._episodes]))
            metrics["rollout/num_episodes"] = float(len(self._episodes))
        self._episodes, self._pending, self._timing = [], {}, [0.0, 0.0, 0, 0]
        self.history.append(metrics)
        self._open_logger()
        self._logger.log(metrics, self.global_step)
        append_metrics_row(self.save_dir / "metrics.jsonl", metrics)
        self._logger.console(metrics, self.global_step, CONSOLE_KEYS)
        return metrics

    def _open_logger(self) -> None:
        """Open TensorBoard at the current step: on a resume, rows and events after the checkpoint
        are dropped (metrics.jsonl truncated, ``purge_step``), stale temp files removed."""
        if self._logger is None:
            self._logger = open_run_logger(self.save_dir, self.global_step, self.config.log_dir,
                                           self.config.to_dict())

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, num_episodes: int | None = None, policy=None) -> dict[str, Any]:
        """Seeded evaluation of the steered policy (``eval_noise``: the actor's mean noise, or
        draws from it) through the frozen policy; ``policy`` evaluates another one on the same
        envs and seeds (``policy=trainer.policy``: the imitation policy, noise ``N(0, I)``)."""
        num_episodes = num_episodes or self.config.eval_episodes
        runner = self.eval_env_runner or self.env_runner
        policy = self.steered if policy is None else policy
        if self.eval_fn is not None:
            result = self.eval_fn(policy, runner, num_episodes)
        else:
            from maniflow_rl.evaluation.evaluate import EVAL_SEED_OFFSET, evaluate_policy

            result = evaluate_policy(policy, runner, num_episodes,
                                     seed=self.config.seed + EVAL_SEED_OFFSET, progress=False)
        if runner is self.env_runner:   # its episodes restart: drop pending n-step chains
            self.collector.reset()
            self._cached = None
            self.nstep = NStepAccumulator(self.config.num_envs, self.config.nstep,
                                          self.chunk_discount)
        return result

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> dict[str, torch.nn.Module]:
        modules = {"actor": self.actor, "noise_critic": self.noise_critic,
                   "target_noise_critic": self.target_noise_critic}
        if self.action_critic is not None:
            modules["action_critic"] = self.action_critic
        return modules

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Atomically write ``dsrl_<vector step>.pt`` and ``latest.pt`` (learner state) and
        ``replay.npz`` beside them; nothing is written when a learner tensor is not finite."""
        return save_dsrl_checkpoint(self, path)

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Restore the learner, the replay buffer and the counters; the envs are re-seeded
        from ``(seed, global_step)`` so a resumed run does not replay its first layouts."""
        return load_dsrl_checkpoint(self, path)
