"""Typed configuration of the off-policy latent-steering trainer (DSRL).

Shared with :class:`~maniflow_rl.rl.ppo.config.PPOConfig` (same meaning): ``total_timesteps``
(env steps), ``num_envs``, ``save_path``, ``save_interval`` / ``eval_interval`` /
``log_interval`` (here counted in **vector steps**, one chunk in every env), ``eval_episodes``,
``device``, ``seed``. The last vector step is always evaluated; an interval evaluation less
than a quarter interval before it is skipped (``rl/intervals.py``).

Units: a transition is one executed action chunk (``Ca = n_action_steps`` env steps);
``gamma`` is the per-env-step discount, so a transition is discounted by ``gamma ** Ca``
(``gamma ** (Ca * n)`` for an n-step transition). ``utd_ratio`` counts gradient steps per
collected transition: each vector step adds ``num_envs`` transitions and runs
``round(utd_ratio * num_envs)`` gradient steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from maniflow_rl.rl.env_input_guard import DEFAULT_MAX_ABS_ENV_VALUE, validate_guard_settings
from maniflow_rl.utils.config_dicts import require_choice

DSRL_VARIANTS = ("na", "sac")


@dataclass
class DSRLConfig:
    variant: str = "na"                 # "na": noise aliasing (Q^A + distilled Q^W) | "sac"
    # --- budget (PPOConfig's meaning) ---
    total_timesteps: int = 100_000
    num_envs: int = 8
    warmup_steps: int = 2_000           # env steps with w ~ N(0, I) (the imitation policy)
    # --- updates ---
    utd_ratio: float = 0.5              # gradient steps per collected transition
    batch_size: int = 256
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    gamma: float = 0.99                 # per env step; a chunk transition: gamma ** Ca
    nstep: int = 1                      # n-step transitions (in chunks)
    tau: float = 0.005                  # Polyak rate of the target critics
    num_critics: int = 2
    hidden_dims: tuple = (256, 256, 256)   # LayerNorm MLPs (the reference: 3 x 2048 on a GPU)
    noise_bound: float = 1.5            # w = noise_bound * tanh(u)
    residual_bound: float = 0.0         # > 0: the actor also adds r = residual_bound * tanh(v)
                                        # to the executed chunk (normalized action space;
                                        # Policy Decorator / ResFiT style); 0: noise only
    alpha: float = 0.001                # entropy temperature (fixed unless auto_alpha); the
                                        # entropy of w sums H * Da dims (64 on MetaWorld), Q of
                                        # a 0/1 reward is <= 1: alpha * dim(w) << 1
    auto_alpha: bool = False
    actor_regularizer: str = "entropy"  # "entropy" (SAC) | "prior_kl": alpha KL(pi || N(0, I))
    eval_noise: str = "mean"            # evaluation: the actor's "mean" noise or a "sample"
    backup_entropy: bool = False        # -alpha log pi in the TD target (off: with a 0/1
                                        # reward the entropy of 64-dim noise inflates Q)
    target_entropy: float | None = 0.0  # with auto_alpha; None = -dim(w)
    critic_obs_keys: tuple = ()         # privileged env observation keys the critics also
                                        # read (MetaWorld: ("full_state",)); never the actor
    num_alias_noises: int = 4           # NA: (w, f(s, w)) pairs stored per state
    actor_alias_fraction: float = 0.5   # NA: share of them with w ~ pi(. | s), rest N(0, I)
    distill_steps: int = 1              # NA: Q^W distillation steps per gradient step
    # --- replay ---
    buffer_size: int = 200_000
    demo_fraction: float = 0.25         # share of each batch drawn from demos (NA, if any)
    # --- bad values (PPOConfig's meaning) ---
    nonfinite_policy: str = "error"     # NaN / inf / huge env value: "error" | "drop" it
    max_abs_env_value: float | None = DEFAULT_MAX_ABS_ENV_VALUE
    max_consecutive_skipped_updates: int = 10   # NaN / inf loss or gradient steps in a row
    # --- logging / checkpoints / evaluation (PPOConfig's meaning, in vector steps) ---
    save_interval: int = 50
    save_path: str = "checkpoints/maniflow_dsrl"
    log_interval: int = 10
    eval_interval: int = 100
    eval_episodes: int = 10
    log_dir: str | None = None
    seed: int = 0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.hidden_dims, list):
            self.hidden_dims = tuple(self.hidden_dims)
        if isinstance(self.critic_obs_keys, (list, str)):
            self.critic_obs_keys = ((self.critic_obs_keys,) if isinstance(self.critic_obs_keys, str)
                                    else tuple(self.critic_obs_keys))

    def validate(self) -> "DSRLConfig":
        """Raise ``ValueError`` naming the field for any inconsistent value."""
        require_choice("DSRLConfig", "variant", self.variant, DSRL_VARIANTS)
        for name in ("total_timesteps", "num_envs", "batch_size", "nstep", "num_critics",
                     "num_alias_noises", "buffer_size", "save_interval", "log_interval",
                     "eval_interval", "max_consecutive_skipped_updates"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DSRLConfig.{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_episodes", "distill_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"DSRLConfig.{name} must be >= 0")
        try:
            validate_guard_settings(self.nonfinite_policy, self.max_abs_env_value)
        except ValueError as exc:
            raise ValueError(f"DSRLConfig.{exc}") from None
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"need 0 <= gamma <= 1 and 0 < tau <= 1, got {self.gamma}, "
                             f"{self.tau}")
        if not (self.utd_ratio > 0 and self.noise_bound > 0 and self.alpha >= 0):
            raise ValueError("utd_ratio and noise_bound must be > 0 and alpha >= 0")
        if self.residual_bound < 0:
            raise ValueError(f"DSRLConfig.residual_bound must be >= 0 (0: no residual), "
                             f"got {self.residual_bound}")
        if self.actor_regularizer not in ("entropy", "prior_kl"):
            raise ValueError(f"DSRLConfig.actor_regularizer must be 'entropy' or 'prior_kl', "
                             f"got {self.actor_regularizer!r}")
        if self.actor_regularizer == "prior_kl" and self.auto_alpha:
            raise ValueError("DSRLConfig.auto_alpha tunes alpha to a target entropy; it does not "
                             "apply to actor_regularizer='prior_kl' (set a fixed alpha)")
        if self.eval_noise not in ("mean", "sample"):
            raise ValueError(f"DSRLConfig.eval_noise must be 'mean' or 'sample', "
                             f"got {self.eval_noise!r}")
        if not 0.0 <= self.actor_alias_fraction <= 1.0:
            raise ValueError(f"DSRLConfig.actor_alias_fraction must be in [0, 1], "
                             f"got {self.actor_alias_fraction}")
        if not 0.0 <= self.demo_fraction < 1.0:
            raise ValueError(f"DSRLConfig.demo_fraction must be in [0, 1), "
                             f"got {self.demo_fraction}")
        if self.actor_learning_rate <= 0 or self.critic_learning_rate <= 0:
            raise ValueError("learning rates must be > 0")
        if not self.hidden_dims or any(int(h) < 1 for h in self.hidden_dims):
            raise ValueError(f"DSRLConfig.hidden_dims must be positive ints, "
                             f"got {self.hidden_dims!r}")
        if self.buffer_size < self.batch_size:
            raise ValueError("DSRLConfig.buffer_size must be >= batch_size")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        out["critic_obs_keys"] = list(self.critic_obs_keys)
        return out
