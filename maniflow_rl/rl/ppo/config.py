"""Typed configuration of the PPO trainer (the seed's ``PPOConfig``, made complete).

Units, so that every number means one thing:

- ``total_timesteps`` counts **env steps** (simulator sub-steps), as CleanRL and SB3 do.
- ``num_steps_per_rollout`` counts **decision points per env** per rollout; each decision point
  executes ``n_action_steps`` env steps. A rollout therefore has
  ``num_envs * num_steps_per_rollout`` PPO samples and
  ``num_envs * num_steps_per_rollout * n_action_steps`` env steps.
- ``batch_size`` is the PPO **minibatch** size in samples; it must divide the rollout size.
- ``save_interval``, ``log_interval``, ``eval_interval`` count **rollouts** (PPO iterations);
  the last iteration is always evaluated (``rl/intervals.py``).

Faults: ``nonfinite_policy`` / ``max_abs_env_value`` decide what a NaN, inf or ``|x| >
max_abs_env_value`` reward or observation from the envs does (``"error"``: stop with a message
naming env, key and step; ``"drop"``: drop that transition and count it,
``rollout/nonfinite_dropped``). A minibatch whose loss or gradient is not finite is skipped
(``train/skipped_updates``); ``max_consecutive_skipped_updates`` skipped in a row stop the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from maniflow_rl.rl.env_input_guard import DEFAULT_MAX_ABS_ENV_VALUE, validate_guard_settings
from maniflow_rl.utils.config_dicts import config_from_dict, require_choice

LOGPROB_LEVELS = ("chunk", "action", "dim")
LR_SCHEDULES = ("constant", "linear", "cosine")
AUTOCAST_MODES = ("none", "bf16")
VALUE_LOSS_TYPES = ("mse", "huber")


@dataclass
class PPOConfig:
    # --- budget and batch (seed fields) ---
    total_timesteps: int = 1_000_000
    num_envs: int = 8
    num_steps_per_rollout: int = 32
    batch_size: int = 64
    # --- optimisation (seed fields) ---
    learning_rate: float = 1e-5
    clip_range: float = 0.2
    entropy_coef: float = 0.0
    # --- PPO details ---
    update_epochs: int = 4
    critic_learning_rate: float = 1e-4
    value_coef: float = 0.5
    max_grad_norm: float = 1.0            # actor gradient-norm clip
    critic_max_grad_norm: float = 1.0     # critic gradient-norm clip (clipped separately)
    target_kl: float | None = None
    logprob_level: str = "chunk"
    dual_clip: float | None = None
    clip_range_value: float | None = None
    value_loss_type: str = "mse"
    huber_delta: float = 1.0
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_warmup_iterations: int = 0
    critic_warmup_iterations: int = 0
    # --- demo-augmented update (DAPG-style anchor to the demonstrations; 0 = off) ---
    bc_coef: float = 0.0          # loss += bc_coef * consistency-flow loss on a demo minibatch
    bc_batch_size: int = 64
    # --- logging / checkpoints / evaluation (seed fields) ---
    wandb_project: str | None = None
    wandb_run_name: str | None = None
    save_interval: int = 100
    save_path: str = "checkpoints/maniflow_ppo"
    log_interval: int = 10
    eval_interval: int = 50
    eval_episodes: int = 10
    log_dir: str | None = None  # TensorBoard folder; default: <save_path>/tb
    # --- faults (NaN guards) ---
    nonfinite_policy: str = "error"       # bad env reward/observation: "error" | "drop"
    max_abs_env_value: float | None = DEFAULT_MAX_ABS_ENV_VALUE   # |x| above: bad (None: off)
    max_consecutive_skipped_updates: int = 10   # non-finite loss/grad steps in a row -> stop
    # --- run ---
    seed: int = 0
    device: str = "cpu"
    autocast: str = "none"   # "bf16": policy networks under bf16 autocast (rollout and update;
    #                          log-probs stay float32); meant for CUDA, off by default
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "PPOConfig":
        """Raise ``ValueError`` with a readable message for inconsistent values."""
        positive_ints = ("total_timesteps", "num_envs", "num_steps_per_rollout", "batch_size",
                         "update_epochs", "save_interval", "log_interval", "eval_interval",
                         "max_consecutive_skipped_updates")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"PPOConfig.{name} must be a positive integer, got {value!r}")
        try:   # nonfinite_policy's choices and max_abs_env_value's sign
            validate_guard_settings(self.nonfinite_policy, self.max_abs_env_value)
        except ValueError as exc:
            raise ValueError(f"PPOConfig.{exc}") from None
        if self.bc_coef < 0 or self.bc_batch_size < 1:
            raise ValueError(f"PPOConfig.bc_coef must be >= 0 and bc_batch_size >= 1, got "
                             f"{self.bc_coef}, {self.bc_batch_size}")
        if not (self.max_grad_norm > 0 and self.critic_max_grad_norm > 0):
            raise ValueError(f"PPOConfig.max_grad_norm and critic_max_grad_norm must be > 0, got "
                             f"{self.max_grad_norm}, {self.critic_max_grad_norm}")
        if self.eval_episodes < 0:
            raise ValueError("PPOConfig.eval_episodes must be >= 0")
        if not 0 < self.clip_range < 1:
            raise ValueError(f"PPOConfig.clip_range must be in (0, 1), got {self.clip_range}")
        if self.learning_rate < 0 or self.critic_learning_rate < 0:
            raise ValueError("learning rates must be >= 0")
        require_choice("PPOConfig", "logprob_level", self.logprob_level, LOGPROB_LEVELS)
        require_choice("PPOConfig", "autocast", self.autocast, AUTOCAST_MODES)
        require_choice("PPOConfig", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        require_choice("PPOConfig", "value_loss_type", self.value_loss_type, VALUE_LOSS_TYPES)
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"PPOConfig.dual_clip must be > 1 (or None), got {self.dual_clip}")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError("PPOConfig.target_kl must be > 0 (or None)")
        rollout_size = self.num_envs * self.num_steps_per_rollout
        if self.batch_size > rollout_size or rollout_size % self.batch_size != 0:
            raise ValueError(
                f"PPOConfig.batch_size={self.batch_size} does not fit the rollout: a rollout has "
                f"num_envs * num_steps_per_rollout = {self.num_envs} * "
                f"{self.num_steps_per_rollout} = {rollout_size} samples, and batch_size must "
                f"divide it (e.g. {_divisors_hint(rollout_size)})"
            )
        return self

    @property
    def rollout_size(self) -> int:
        return self.num_envs * self.num_steps_per_rollout

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "PPOConfig":
        return config_from_dict(cls, values)


def _divisors_hint(n: int) -> str:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return ", ".join(str(d) for d in divisors[-4:])
