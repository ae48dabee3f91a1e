"""Compatibility re-export: the typed configs moved to :mod:`maniflow_rl.config` (below both
the pipeline and the command line). Import from there in new code.

    maniflow-rl finetune --checkpoint ckpt.pt ppo.learning_rate=3e-5 env.num_points=1024
"""

from maniflow_rl.config.loading import (PRESET_DIR, config_to_yaml, load_config,  # noqa: F401
                                        resolve_preset)
from maniflow_rl.config.run_config import DummyConfig, RunConfig  # noqa: F401
from maniflow_rl.config.sections import (FINETUNE_ALGORITHMS, EnvConfig,  # noqa: F401
                                         EvalConfig, FinetuneAlgorithmConfig, FinetuneConfig)
from maniflow_rl.rl.advantages import AdvantageConfig  # noqa: F401
from maniflow_rl.rl.dsrl.config import DSRLConfig  # noqa: F401
from maniflow_rl.rl.ppo.config import PPOConfig  # noqa: F401
