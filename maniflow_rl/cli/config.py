"""Typed command-line configs: dataclasses merged with a YAML preset and ``key=value``
overrides through OmegaConf (Hydra's config engine), so a typo is an error, not a silent no-op.

    maniflow-rl finetune --checkpoint ckpt.pt ppo.learning_rate=3e-5 env.num_points=1024
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from maniflow_rl.rl.advantages import AdvantageConfig
from maniflow_rl.rl.dsrl.config import DSRLConfig
from maniflow_rl.rl.ppo_config import PPOConfig

FINETUNE_ALGORITHMS = ("ppo", "dsrl")

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class EnvConfig:
    """MetaWorld point-cloud environment settings (passed to ``MetaWorldEnvRunner``)."""

    task: str = "metaworld/button-press-topdown-v3"
    point_cloud_source: str = "camera"  # "camera" (depth render, DP3 protocol) | "geometry"
    num_points: int = 512
    camera: str = "corner2"
    max_episode_steps: int = 200
    reward_type: str = "sparse"  # "sparse" (success, terminate on success) | "dense"
    num_workers: int | None = None  # env worker processes; None = one per core

    def env_kwargs(self) -> dict[str, Any]:
        return {"point_cloud_source": self.point_cloud_source, "num_points": self.num_points,
                "camera": self.camera, "max_episode_steps": self.max_episode_steps,
                "reward_type": self.reward_type}


@dataclass
class EvalConfig:
    episodes: int = 50
    seed: int = 100_000  # eval seeds never overlap training seeds
    num_envs: int = 2
    video_episodes: int = 2


@dataclass
class FinetuneAlgorithmConfig:
    """Which fine-tuning algorithm runs: ``ppo`` (the ``ppo`` / ``advantage`` sections) or
    ``dsrl`` (the ``dsrl`` section: off-policy steering of the frozen policy's noise)."""

    algorithm: str = "ppo"

    def validate(self) -> None:
        if self.algorithm not in FINETUNE_ALGORITHMS:
            raise ValueError(f"finetune.algorithm must be one of {FINETUNE_ALGORITHMS}, "
                             f"got {self.algorithm!r}")


@dataclass
class FinetuneConfig:
    """``maniflow-rl finetune``: PPO or DSRL on MetaWorld from a pretrained checkpoint."""

    env: EnvConfig = field(default_factory=EnvConfig)
    finetune: FinetuneAlgorithmConfig = field(default_factory=FinetuneAlgorithmConfig)
    dsrl: DSRLConfig = field(default_factory=DSRLConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    policy: dict = field(default_factory=dict)  # overrides at fine-tune time (noise_*, K)
    eval: EvalConfig = field(default_factory=EvalConfig)
    demos: str | None = None   # demo zarr for the BC term (ppo.bc_coef > 0)


def resolve_preset(name_or_path: str | None) -> Path | None:
    """A YAML path, or the name of a preset shipped in ``maniflow_rl/configs`` (task name)."""
    if not name_or_path:
        return None
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = name_or_path.split("/")[-1].removesuffix(".yaml")
    for candidate in (PRESET_DIR / f"{stem}.yaml", PRESET_DIR / f"{stem.removesuffix('-v3')}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {name_or_path!r} is neither a file nor a preset; presets: "
                            f"{available}")


def load_config(cls, preset: str | Path | list | tuple | None = None,
                overrides: list[str] | None = None):
    """``cls`` defaults <- YAML preset(s), in order <- ``key=value`` overrides; returns a ``cls``.

    ``preset`` may be a list: later presets override earlier ones (a task preset holds only what
    differs from ``default.yaml``)."""
    cfg = OmegaConf.structured(cls)
    presets = [] if preset is None else list(preset) if isinstance(preset, (list, tuple)) \
        else [preset]
    try:
        for item in presets:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(resolve_preset(str(item))))
        bad = [o for o in overrides or [] if "=" not in o]
        if bad:
            raise ValueError(f"overrides must look like key=value, got {bad}")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ValueError(f"bad config: {exc}") from exc
    return OmegaConf.to_object(cfg)


def config_to_yaml(config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
