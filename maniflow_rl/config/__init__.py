"""Typed configs of the run / fine-tune / dummy commands and their loading (YAML presets +
``key=value`` overrides). Used by ``maniflow_rl.pipeline`` and ``maniflow_rl.cli``; the YAML
presets themselves live in ``maniflow_rl/configs/``."""

from maniflow_rl.config.loading import (PRESET_DIR, check_override_syntax, config_to_yaml,
                                        load_config, load_yaml_mapping, resolve_preset)
from maniflow_rl.config.run_config import DummyConfig, RunConfig
from maniflow_rl.config.sections import (FINETUNE_ALGORITHMS, FINETUNE_POLICY_KEYS,
                                         POINT_CLOUD_SOURCES, DemosStageConfig, EnvConfig,
                                         EvalConfig, FinetuneAlgorithmConfig, FinetuneConfig,
                                         PretrainStageConfig, RuntimeConfig,
                                         check_finetune_policy_keys, check_policy_keys)

__all__ = ["PRESET_DIR", "check_override_syntax", "config_to_yaml", "load_config",
           "load_yaml_mapping", "resolve_preset", "DummyConfig", "RunConfig",
           "FINETUNE_ALGORITHMS", "FINETUNE_POLICY_KEYS", "POINT_CLOUD_SOURCES",
           "DemosStageConfig", "EnvConfig", "EvalConfig", "FinetuneAlgorithmConfig",
           "FinetuneConfig", "PretrainStageConfig", "RuntimeConfig",
           "check_finetune_policy_keys", "check_policy_keys"]
