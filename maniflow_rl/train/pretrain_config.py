"""``PretrainConfig``: every setting of an imitation pretraining run (``train/pretrain.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PretrainConfig:
    dataset_path: str
    output_dir: str
    task: str | None = None               # e.g. "metaworld/button-press" (for evaluation)
    num_epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-3
    warmup_steps: int = 500
    min_lr_ratio: float = 0.0
    grad_clip_norm: float | None = None
    ema_decay: float = 0.9999             # maximum EMA decay
    ema_power: float | None = 0.75        # EMA warm-up power (None: constant ema_decay)
    eval_every_epochs: int = 0            # 0: no evaluation in the env (evaluation seeds)
    select_every_steps: int = 0           # >0: roll out on validation seeds every N steps and
    select_episodes: int = 20             # keep checkpoints/best.pt (checkpoint_selection.py)
    select_policy_overrides: dict = field(default_factory=dict)   # their sampling (e.g. K)
    eval_episodes: int = 20
    eval_num_envs: int = 1
    eval_max_steps: int | None = None
    eval_video: bool = False
    checkpoint_every_epochs: int = 10
    keep_epoch_checkpoints: bool = True
    seed: int = 0
    device: str = "auto"                  # "auto" | "cpu" | "cuda" | "cuda:N"
    num_workers: int = 0
    cache_point_tokens: bool = True       # cut each stored cloud once to the encoder's points
    policy_config: dict = field(default_factory=dict)   # ManiFlowPolicyConfig overrides
    max_train_steps: int | None = None    # stop after this many optimizer steps in total
    val_ratio: float = 0.0
    max_train_episodes: int | None = None
    obs_keys: list[str] | None = field(default_factory=lambda: ["point_cloud", "agent_pos"])
    key_map: dict | None = None           # zarr key -> obs key (default DEFAULT_KEY_MAP)
    point_cloud_channels: int | None = 3  # xyz only (None: every stored channel)
    env_kwargs: dict = field(default_factory=dict)
    resume: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` / ``FileNotFoundError`` for a config that cannot run."""
        if not Path(self.dataset_path).exists():
            raise FileNotFoundError(f"dataset not found: {self.dataset_path}")
        positive = ("num_epochs", "batch_size", "eval_episodes", "eval_num_envs",
                    "checkpoint_every_epochs", "select_episodes")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_every_epochs", "num_workers", "select_every_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise ValueError(f"max_train_steps must be >= 1, got {self.max_train_steps}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr}, "
                             f"{self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.val_ratio < 1:
            raise ValueError(f"val_ratio must be in [0, 1), got {self.val_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}
