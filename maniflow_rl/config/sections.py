"""The sections of the run / fine-tune configs (``env``, ``eval``, ``finetune``, ``demos``,
``pretrain``, ``runtime``), each with a ``validate()`` that raises a one-line ``ValueError``.

They sit below both ``maniflow_rl.pipeline`` (which runs them) and ``maniflow_rl.cli`` (which
parses them); ``maniflow_rl.cli.config`` re-exports them for compatibility.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from maniflow_rl.envs.metaworld.tasks import REWARD_TYPES
from maniflow_rl.envs.robosuite.tasks import ACTION_MODES, ROBOSUITE_POLICY_OBS, is_robosuite_task
from maniflow_rl.rl.advantages import AdvantageConfig
from maniflow_rl.rl.dsrl.config import DSRLConfig
from maniflow_rl.rl.ppo.config import PPOConfig
from maniflow_rl.utils.config_dicts import require_choice, require_int
from maniflow_rl.utils.threads import AUTO, SAME, ThreadPolicy

FINETUNE_ALGORITHMS = ("ppo", "dsrl")
FINETUNE_SELECTIONS = ("best", "last")
POINT_CLOUD_SOURCES = ("camera", "geometry")
ENV_BACKENDS = ("multiprocessing", "ray")

# ``policy.obs`` (a run option, not a ManiFlowPolicyConfig field): what the policy observes.
# ``state`` is the sanity baseline of issue 10: MetaWorld's 39-d state (``full_state`` in the
# demos zarr and the envs' privileged observation) instead of the point cloud + agent_pos, to
# separate perception from capacity when a task fails.
POLICY_OBS_KEYS = {"point_cloud": ["point_cloud", "agent_pos"], "state": ["full_state"]}


def split_policy_obs(policy: dict, task: str = "") -> tuple[list[str], dict]:
    """``(observation keys, ManiFlowPolicyConfig fields)`` of a run's ``policy`` section; a
    robosuite ``task`` observes the specification's keys (``ROBOSUITE_POLICY_OBS``)."""
    policy = dict(policy)
    obs = policy.pop("obs", "point_cloud")
    require_choice("policy", "obs", obs, tuple(POLICY_OBS_KEYS))
    if is_robosuite_task(task) and obs in ROBOSUITE_POLICY_OBS:
        return list(ROBOSUITE_POLICY_OBS[obs]), policy
    return list(POLICY_OBS_KEYS[obs]), policy


# policy-config keys that may change between pretraining and fine-tuning: they only change how
# the denoising chain is sampled, not the weights' shapes (the flow_noise head is created fresh).
FINETUNE_POLICY_KEYS = ("noise_method", "noise_level", "noise_anneal", "noise_params",
                        "sigma_min", "sigma_max", "num_inference_steps", "sde_steps",
                        "noise_level_per_step", "chain_logprob")


@dataclass
class EnvConfig:
    """Point-cloud environment settings (passed to ``PointCloudEnvRunner``): MetaWorld's, or
    robosuite's for a ``robosuite/<task>`` (``num_points``, ``max_episode_steps``,
    ``reward_type`` and ``action_mode`` apply; the camera settings are the task's own)."""

    task: str = "metaworld/button-press-topdown-v3"
    point_cloud_source: str = "camera"  # "camera" (depth render, DP3 protocol) | "geometry"
    num_points: int = 512
    camera: str = "corner2"
    max_episode_steps: int = 200
    reward_type: str = "sparse"  # "sparse" (success, terminate on success) | "dense" (MetaWorld's
    #                              0..10) | "shaped" (sparse + potential difference of dense / 10)
    action_mode: str = "absolute"  # robosuite only: "absolute" (10-D pose, 6-D rotation, the
    #                                specification's) | "delta" (7-D OSC deltas)
    num_workers: int | None = None  # env worker processes; None = one per core
    backend: str = "multiprocessing"  # env workers: "multiprocessing" (0 workers: in-process)
    #                                   or "ray" (Ray actors; pip install maniflow-rl[distributed])
    ray_address: str | None = None  # backend=ray: None = local ray.init(), "auto" = the cluster
    #                                 of `ray start` on this machine, "host:port" = a remote one

    def env_kwargs(self) -> dict[str, Any]:
        common = {"num_points": self.num_points, "max_episode_steps": self.max_episode_steps,
                  "reward_type": self.reward_type}
        if is_robosuite_task(self.task):
            return {**common, "action_mode": self.action_mode}
        return {"point_cloud_source": self.point_cloud_source, "camera": self.camera, **common}

    def runner_kwargs(self) -> dict[str, Any]:
        """How ``PointCloudEnvRunner`` hosts the envs (worker backend and Ray address)."""
        return {"backend": self.backend, "ray_address": self.ray_address}

    def validate(self) -> "EnvConfig":
        """Check every value without starting an env (the task name is checked by
        ``RunConfig.validate``, which knows MetaWorld's task list)."""
        require_choice("env", "point_cloud_source", self.point_cloud_source,
                       POINT_CLOUD_SOURCES)
        require_choice("env", "reward_type", self.reward_type, REWARD_TYPES)
        require_choice("env", "action_mode", self.action_mode, ACTION_MODES)
        require_int("env", "num_points", self.num_points, 1)
        require_int("env", "max_episode_steps", self.max_episode_steps, 1)
        if self.num_workers is not None:
            require_int("env", "num_workers", self.num_workers, 0)
        require_choice("env", "backend", self.backend, ENV_BACKENDS)
        if self.backend == "ray" and self.num_workers == 0:
            raise ValueError("env.backend=ray needs env.num_workers >= 1 (or unset)")
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError("env.backend=ray needs Ray: pip install 'maniflow-rl[distributed]'")
        if self.ray_address is not None and (not isinstance(self.ray_address, str)
                                             or not self.ray_address):
            raise ValueError(f"env.ray_address must be 'auto' or 'host:port', "
                             f"got {self.ray_address!r}")
        if not isinstance(self.camera, str) or not self.camera:
            raise ValueError(f"env.camera must be a camera name, got {self.camera!r}")
        return self


@dataclass
class EvalConfig:
    episodes: int = 50
    seed: int = 100_000  # eval seeds never overlap training seeds
    num_envs: int = 2
    video_episodes: int = 2
    # the evaluations *during* fine-tuning (and their reference, the starting policy) run on
    # their own layouts: the run selects its fine-tuned checkpoint on them (finetune.select),
    # so the before/after evaluation on ``seed``'s layouts takes no part in the choice
    rl_seed: int = 300_000

    def validate(self) -> "EvalConfig":
        require_int("eval", "episodes", self.episodes, 1)
        require_int("eval", "num_envs", self.num_envs, 1)
        require_int("eval", "video_episodes", self.video_episodes, 0)
        require_int("eval", "seed", self.seed, 0)
        require_int("eval", "rl_seed", self.rl_seed, 0)
        clash = sorted({self.seed + i for i in range(self.num_envs)}
                       & {self.rl_seed + i for i in range(self.num_envs)})
        if clash:
            raise ValueError(f"eval.rl_seed={self.rl_seed} shares layouts with eval.seed="
                             f"{self.seed} (env seeds {clash}): the checkpoint would be "
                             f"selected on the episodes that then score it")
        return self


@dataclass
class RuntimeConfig:
    """How the run's processes use the machine's cores (``utils/threads.py``, README
    "Threads"): env / evaluation / data-loader workers and Ray env actors run 1 thread each."""

    torch_threads: int | str = AUTO   # main process: "auto" (its share of the cores) or an int
    rollout_torch_threads: int | str = SAME   # main process during PPO rollouts: "same" | int

    def thread_policy(self) -> ThreadPolicy:
        return ThreadPolicy(self.torch_threads, self.rollout_torch_threads)

    def validate(self) -> "RuntimeConfig":
        self.thread_policy().validate()
        return self


@dataclass
class FinetuneAlgorithmConfig:
    """Which fine-tuning algorithm runs: ``ppo`` (the ``ppo`` / ``advantage`` sections) or
    ``dsrl`` (the ``dsrl`` section: off-policy steering of the frozen policy's noise)."""

    algorithm: str = "ppo"
    # which fine-tuned policy `maniflow-rl run` evaluates and reports: "best" = the highest
    # success of the evaluations during RL (eval.rl_seed's layouts), the starting policy
    # included; "last" = the final checkpoint (pipeline/finetune_selection.py)
    select: str = "best"

    def validate(self) -> None:
        require_choice("finetune", "algorithm", self.algorithm, FINETUNE_ALGORITHMS)
        require_choice("finetune", "select", self.select, FINETUNE_SELECTIONS)


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
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> "FinetuneConfig":
        """Every section, before a checkpoint is read or an env process starts."""
        self.env.validate()
        self.eval.validate()
        self.runtime.validate()
        self.finetune.validate()
        check_finetune_policy_keys(self.policy, "finetune_policy")
        if self.finetune.algorithm == "dsrl":
            self.dsrl.validate()
            check_dsrl_demo_reward(self.env, self.dsrl, has_demos=bool(self.demos))
        else:
            self.ppo.validate()
            self.advantage.validate()
        return self


def check_dsrl_demo_reward(env: "EnvConfig", dsrl: DSRLConfig, has_demos: bool) -> None:
    """DSRL-NA puts the demos in its replay, rewarded as the env pays (sparse or shaped); a
    dense reward has no simulator-independent scale to rebuild them with (rl/dsrl/demos.py)."""
    if has_demos and dsrl.variant == "na" and env.reward_type == "dense":
        raise ValueError("env.reward_type=dense with finetune.algorithm=dsrl (variant na): the "
                         "demos in its replay cannot be paid the dense reward; use "
                         "env.reward_type=sparse or shaped")


@dataclass
class DemosStageConfig:
    episodes: int = 10
    seed: int = 0
    action_noise: float = 0.0    # std added to every executed expert action ("noisy demos")

    def validate(self) -> "DemosStageConfig":
        require_int("demos", "episodes", self.episodes, 1)
        require_int("demos", "seed", self.seed, 0)
        if not isinstance(self.action_noise, (int, float)) or not 0 <= self.action_noise <= 1:
            raise ValueError(f"demos.action_noise must be a number in [0, 1], "
                             f"got {self.action_noise!r}")
        return self


@dataclass
class PretrainStageConfig:
    """The subset of ``PretrainConfig`` a run sets; paths and task come from the run."""

    num_epochs: int = 300
    batch_size: int = 128
    lr: float = 1e-4
    warmup_steps: int = 200
    checkpoint_every_epochs: int = 25
    max_train_steps: int | None = None
    ema_decay: float = 0.9999
    seed: int = 0
    select_every_steps: int = 0   # >0: validation rollouts every N steps -> best.pt is used
    select_episodes: int = 20     # episodes per validation (validation seeds, never eval's)
    keep_epoch_checkpoints: bool = False   # epoch_XXXX.pt besides latest.pt / best.pt

    def validate(self) -> "PretrainStageConfig":
        for name in ("num_epochs", "batch_size", "checkpoint_every_epochs", "select_episodes"):
            require_int("pretrain", name, getattr(self, name), 1)
        require_int("pretrain", "warmup_steps", self.warmup_steps, 0)
        require_int("pretrain", "select_every_steps", self.select_every_steps, 0)
        if self.max_train_steps is not None:
            require_int("pretrain", "max_train_steps", self.max_train_steps, 1)
        if not self.lr > 0:
            raise ValueError(f"pretrain.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"pretrain.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        return self


def check_policy_keys(policy: dict, section: str = "policy", values: bool = True) -> None:
    """``ValueError`` naming the unknown ``section.*`` keys (ManiFlowPolicyConfig fields), with
    the closest known names; with ``values``, also any invalid value or combination
    (``ManiFlowPolicyConfig.validate`` on the defaults updated with ``policy``)."""
    import dataclasses
    import difflib

    from maniflow_rl.policy import ManiFlowPolicyConfig

    known = [f.name for f in dataclasses.fields(ManiFlowPolicyConfig)]
    unknown = sorted(set(policy) - set(known))
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hint = "; ".join(f"{section}.{k}: did you mean {section}.{m[0]}?"
                         for k, m in hints.items() if m)
        raise ValueError(f"unknown {section} option(s) {[f'{section}.{k}' for k in unknown]}"
                         + (f" ({hint})" if hint else f"; known: {known}"))
    if values:
        ManiFlowPolicyConfig.from_dict(dict(policy))


def check_finetune_policy_keys(overrides: dict, section: str = "finetune_policy") -> None:
    """Fine-tune-time policy overrides: only the sampling keys (FINETUNE_POLICY_KEYS). Names
    only: the values are checked against the checkpoint's config when it is loaded."""
    check_policy_keys(overrides, section, values=False)
    fixed = sorted(set(overrides) - set(FINETUNE_POLICY_KEYS))
    if fixed:
        raise ValueError(f"{section} {fixed} cannot change at fine-tune time (they change the "
                         f"weights' shapes); allowed: {list(FINETUNE_POLICY_KEYS)}")
