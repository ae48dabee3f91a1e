"""On-policy fine-tuning of the whole flow policy through its recorded denoising chains (PPO).

``config.py`` (PPOConfig), ``update.py`` (the clipped update over one rollout batch),
``trainer.py`` (rollout -> advantages -> update loop, checkpoints, evaluation), ``helpers.py``,
``demo_regularizer.py`` (optional behaviour-cloning term on the demos) and ``factory.py``
(the specification's ``create_maniflow_ppo_trainer``). Shared pieces (batch, advantages,
losses, the rollout collector) stay in ``maniflow_rl.rl``.
"""

from maniflow_rl.rl.ppo.config import PPOConfig
from maniflow_rl.rl.ppo.factory import create_maniflow_ppo_trainer
from maniflow_rl.rl.ppo.trainer import ManiFlowPPOTrainer

__all__ = ["PPOConfig", "ManiFlowPPOTrainer", "create_maniflow_ppo_trainer"]
