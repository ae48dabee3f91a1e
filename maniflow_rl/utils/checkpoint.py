"""Atomic checkpoint files with validated loading.

Every checkpoint maniflow-rl writes is a ``torch.save`` dict with at least::

    {"format": "maniflow_rl", "version": 1, "kind": "pretrain" | "ppo", ...}

Writes go to a temporary file in the same folder, are flushed and fsynced, then renamed over the
target, so a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

CHECKPOINT_FORMAT = "maniflow_rl"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a maniflow-rl checkpoint."""


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """``write(f)`` into a temp file beside ``path``, fsync, then rename it over ``path``: a
    crash never leaves a half-written file under the final name. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint_atomic(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save ``payload`` (plus format/version tags) to ``path`` atomically; return the path."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    return write_atomic(path, lambda f: torch.save(payload, f))


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu",
                         expected_kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint_atomic`.

    Raises :class:`CheckpointError` with a readable message if the file does not exist, cannot be
    unpickled (truncated / corrupt), is not a maniflow-rl checkpoint, or has an unexpected kind.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # zipfile / pickle / EOF errors
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupt): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a maniflow-rl checkpoint")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload['version']}, newer than this maniflow-rl "
            f"({CHECKPOINT_VERSION}); upgrade maniflow-rl"
        )
    if expected_kind is not None:
        kinds = (expected_kind,) if isinstance(expected_kind, str) else tuple(expected_kind)
        if payload.get("kind") not in kinds:
            raise CheckpointError(
                f"{path} is a '{payload.get('kind')}' checkpoint, expected one of {kinds}"
            )
    return payload


# parameters a fine-tuning policy may have that an imitation checkpoint lacks (created fresh)
FRESH_PARAMETER_PREFIXES = ("noise_head", "value_head", "critic")


def load_policy_weights(policy, payload: dict[str, Any], use_ema: bool = True) -> list[str]:
    """Load a checkpoint's weights into ``policy``; return the names left at initialisation.

    Pretraining checkpoints give their EMA weights when ``use_ema``. Parameters that only exist
    for fine-tuning (the flow_noise head, the value head / critic encoder) may be missing and keep
    their initialisation; any other mismatch raises :class:`CheckpointError`.
    """
    state = payload.get("ema_state_dict") if use_ema and payload.get("kind") == "pretrain" else None
    state = state if state is not None else payload.get("policy_state_dict")
    if state is None:
        raise CheckpointError("checkpoint has no policy weights ('policy_state_dict')")
    result = policy.load_state_dict(state, strict=False)
    bad_missing = [k for k in result.missing_keys if not k.startswith(FRESH_PARAMETER_PREFIXES)]
    if bad_missing or result.unexpected_keys:
        raise CheckpointError(f"checkpoint weights do not fit the policy: missing {bad_missing}, "
                              f"unexpected {list(result.unexpected_keys)}")
    return list(result.missing_keys)


def checkpoint_identity(path: str | os.PathLike) -> dict[str, str]:
    """``{"path": absolute path, "sha256": digest of the file}``: which checkpoint, exactly."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest()}
