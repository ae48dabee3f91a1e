"""``RunConfig`` (``maniflow-rl run``; ``finetune`` reads its sections) and ``DummyConfig``
(``maniflow-rl dummy``). ``validate()`` checks every value before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maniflow_rl.config.sections import (DemosStageConfig, EnvConfig, EvalConfig,
                                         FinetuneAlgorithmConfig, FinetuneConfig,
                                         PretrainStageConfig, RuntimeConfig,
                                         check_dsrl_demo_reward, check_finetune_policy_keys,
                                         check_policy_keys, split_policy_obs)
from maniflow_rl.rl.advantages import AdvantageConfig
from maniflow_rl.rl.dsrl.config import DSRLConfig
from maniflow_rl.rl.ppo.config import PPOConfig


@dataclass
class RunConfig:
    run_dir: str | None = None  # default: runs/<task name>
    env: EnvConfig = field(default_factory=EnvConfig)
    demos: DemosStageConfig = field(default_factory=DemosStageConfig)
    policy: dict = field(default_factory=dict)  # ManiFlowPolicyConfig fields for pretraining,
    # and ``obs``: point_cloud (default) | state (the simulator's state, a sanity baseline)
    pretrain: PretrainStageConfig = field(default_factory=PretrainStageConfig)
    finetune_policy: dict = field(default_factory=dict)  # sampling overrides for fine-tuning
    finetune: FinetuneAlgorithmConfig = field(default_factory=FinetuneAlgorithmConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dsrl: DSRLConfig = field(default_factory=DSRLConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        return Path("runs") / self.env.task.split("/")[-1]

    def finetune_config(self) -> FinetuneConfig:
        return FinetuneConfig(env=self.env, finetune=self.finetune, dsrl=self.dsrl,
                              ppo=self.ppo, advantage=self.advantage,
                              policy=dict(self.finetune_policy), eval=self.eval,
                              demos=str(self.resolved_run_dir() / "demos.zarr"),
                              runtime=self.runtime)

    def validate(self) -> "RunConfig":
        """Every section (a ``ValueError`` naming the key), before any stage starts."""
        from maniflow_rl.envs.registry import resolve_env_task

        resolve_env_task(self.env.task)
        self.env.validate()
        self.demos.validate()
        self.pretrain.validate()
        self.eval.validate()
        self.runtime.validate()
        policy_fields = split_policy_obs(self.policy)[1]   # policy.obs: checked there
        check_policy_keys(policy_fields, "policy")
        check_finetune_policy_keys(self.finetune_policy, "finetune_policy")
        check_policy_keys({**policy_fields, **self.finetune_policy}, "finetune_policy")
        self.finetune.validate()
        self.ppo.validate()
        self.advantage.validate()
        self.dsrl.validate()
        if self.finetune.algorithm == "dsrl":   # the run always writes its demos
            check_dsrl_demo_reward(self.env, self.dsrl, has_demos=True)
        self._check_layout_seeds()
        return self

    def _check_layout_seeds(self) -> None:
        """Demos, validation rollouts and evaluations must never share a layout. An env's
        episode layouts are a function of its base seed (``derive_episode_seed``), so their
        base seeds must differ: demos ``demos.seed``, evaluation ``eval.seed + i``, validation
        ``pretrain.seed + VALIDATION_SEED_OFFSET + i`` (i < eval.num_envs)."""
        from maniflow_rl.train.checkpoint_selection import validation_seed

        envs = range(self.eval.num_envs)
        evaluation = {self.eval.seed + i for i in envs}
        if self.demos.seed in evaluation:
            raise ValueError(f"demos.seed={self.demos.seed} is an evaluation seed (eval.seed="
                             f"{self.eval.seed} + env index): the demos would be test layouts")
        during_rl = {self.eval.rl_seed + i for i in envs}
        if self.demos.seed in during_rl:
            raise ValueError(f"demos.seed={self.demos.seed} is a seed of the evaluations during "
                             f"RL (eval.rl_seed={self.eval.rl_seed} + env index)")
        if self.pretrain.select_every_steps:
            validation = {validation_seed(self.pretrain.seed) + i for i in envs}
            clash = sorted(validation & (evaluation | during_rl | {self.demos.seed}))
            if clash:
                raise ValueError(f"pretrain validation seeds {sorted(validation)} overlap the "
                                 f"evaluation seeds (eval.seed={self.eval.seed}, eval.rl_seed="
                                 f"{self.eval.rl_seed}) or demos.seed="
                                 f"{self.demos.seed} at {clash}: change eval.seed or "
                                 f"pretrain.seed")


def dummy_ppo_defaults() -> PPOConfig:
    """PPO settings of ``maniflow-rl dummy``: small rollouts, quick learning rates."""
    return PPOConfig(total_timesteps=10**9, num_envs=8, num_steps_per_rollout=8, batch_size=32,
                     learning_rate=1e-3, critic_learning_rate=3e-3, log_interval=5,
                     eval_interval=10**6)


def dummy_policy_defaults() -> dict:
    """Policy of ``maniflow-rl dummy``: short horizon, 4 denoising steps."""
    return {"horizon": 8, "n_action_steps": 4, "n_obs_steps": 2, "num_inference_steps": 4}


@dataclass
class DummyConfig:
    """``maniflow-rl dummy``: PPO on the synthetic env; ``ppo.*``, ``advantage.*``,
    ``policy.*``, ``runtime.*`` overrides like every other command."""

    ppo: PPOConfig = field(default_factory=dummy_ppo_defaults)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    policy: dict = field(default_factory=dummy_policy_defaults)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> "DummyConfig":
        self.runtime.validate()
        check_policy_keys(self.policy, "policy")
        self.ppo.validate()
        self.advantage.validate()
        return self
