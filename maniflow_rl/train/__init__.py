"""Imitation pretraining: PretrainConfig / run_pretraining, EMA, LR schedule."""

from maniflow_rl.train.ema import EMAModel, ema_decay
from maniflow_rl.train.lr_schedule import cosine_warmup_factor, cosine_with_warmup
from maniflow_rl.train.pretrain import PretrainConfig, run_pretraining

__all__ = [
    "EMAModel",
    "PretrainConfig",
    "cosine_warmup_factor",
    "cosine_with_warmup",
    "ema_decay",
    "run_pretraining",
]
