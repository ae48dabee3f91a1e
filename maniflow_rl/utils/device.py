"""Device selection shared by every entry point."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("maniflow_rl")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None: CUDA when available, else CPU. An explicit ``cuda`` on a machine without a
    GPU falls back to CPU with a warning (the seed's Quick Start asks for ``cuda``)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("device=%s requested but CUDA is not available; using CPU", device)
        return torch.device("cpu")
    return device
