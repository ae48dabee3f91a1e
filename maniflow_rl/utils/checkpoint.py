"""Atomic checkpoint files with validated loading.

Every checkpoint maniflow-rl writes is a ``torch.save`` dict with at least::

    {"format": "maniflow_rl", "version": 2, "kind": "pretrain" | "ppo" | "dsrl", ...}

Writes go to a temporary file in the same folder (``.<name>.<8 random chars>.tmp``), are
flushed and fsynced, then renamed over the target, so a crash never leaves a half-written
checkpoint under the final name; :func:`remove_stale_temp_files` deletes the temp files a killed
write leaves behind. A payload with a non-finite floating-point tensor (NaN / inf weights) is
never written: :func:`assert_finite_state` raises :class:`NonFiniteStateError` first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping

import numpy as np
import torch

from maniflow_rl.utils.output_dir import is_no_space_error, no_space_error

log = logging.getLogger("maniflow_rl")

CHECKPOINT_FORMAT = "maniflow_rl"
# 2: image observations reach the policy as uint8 0..255 or float in [0, 1] on every path. A
# version-1 policy with an image input was pretrained on float 0..255 pixels (the old dataset
# path) and cannot be used with today's scaling, so loading one fails (load_checkpoint_file).
CHECKPOINT_VERSION = 2
IMAGE_CONVENTION_VERSION = 2


# write_atomic's temp files: mkstemp(prefix=".<name>.", suffix=".tmp") adds 8 characters from
# [a-z0-9_]; remove_stale_temp_files deletes only names of exactly this form
TEMP_SUFFIX = ".tmp"
TEMP_FILE_PATTERN = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a maniflow-rl checkpoint."""


class NonFiniteStateError(RuntimeError):
    """A model / optimizer state holds NaN or inf values; it is not saved."""


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """``write(f)`` into a temp file beside ``path``, fsync, then rename it over ``path``: a
    crash never leaves a half-written file under the final name. A full disk raises
    ``OSError(ENOSPC)`` naming ``path`` (the temp file is removed). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_no_space_error(exc):   # torch says "enforce fail at inline_container.cc"
            raise no_space_error(path) from exc
        raise
    return path


def is_temp_file_name(name: str) -> bool:
    """True for the names :func:`write_atomic` gives its temp files (``.<name>.<8>.tmp``)."""
    return TEMP_FILE_PATTERN.match(name) is not None


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files interrupted atomic writes left in ``directory`` (not recursive).

    Only regular files whose name matches :data:`TEMP_FILE_PATTERN` (what :func:`write_atomic`
    creates) are removed; anything else, symlinks included, is left alone. Call it when a run
    starts, before it writes: a temp file of a write in progress would be removed too. Returns
    the removed paths (empty if the folder does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in sorted(directory.iterdir()):
        if is_temp_file_name(entry.name) and entry.is_file() and not entry.is_symlink():
            size = entry.stat().st_size
            entry.unlink()
            removed.append(entry)
            log.info("removed %s (%d bytes) left by an interrupted save", entry, size)
    return removed


def nonfinite_tensors(state: Any, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    """Yield ``(name, num_nan, num_inf)`` for every floating-point tensor / array in ``state``
    (an ``nn.Module``, a state dict, or nested dicts / lists / tuples) that is not all finite.
    Integer, bool and non-array values (Python floats in histories) are not inspected."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if isinstance(state, torch.Tensor):
        if (state.is_floating_point() or state.is_complex()) and state.numel():
            finite = torch.isfinite(state)
            if not bool(finite.all()):
                num_nan = int(torch.isnan(state).sum())
                yield prefix or "<tensor>", num_nan, int((~finite).sum()) - num_nan
    elif isinstance(state, np.ndarray):
        if np.issubdtype(state.dtype, np.inexact) and state.size and not np.isfinite(state).all():
            num_nan = int(np.isnan(state).sum())
            yield prefix or "<array>", num_nan, int((~np.isfinite(state)).sum()) - num_nan
    elif isinstance(state, Mapping):
        for key, value in state.items():
            yield from nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            yield from nonfinite_tensors(value, f"{prefix}[{index}]")


def assert_finite_state(state: Any, what: str) -> None:
    """Raise :class:`NonFiniteStateError` naming ``what`` and the first bad tensors if ``state``
    (module, state dict or nested containers, see :func:`nonfinite_tensors`) holds NaN / inf.
    Call it before saving: a non-finite model must never replace a good checkpoint."""
    bad = list(nonfinite_tensors(state))
    if bad:
        shown = ", ".join(f"'{name}' ({nan} NaN, {inf} inf)" for name, nan, inf in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteStateError(f"{what} has non-finite values in {len(bad)} tensor(s): "
                                  f"{shown}{more}")


def save_checkpoint_atomic(payload: dict[str, Any], path: str | os.PathLike,
                           check_finite: bool = True) -> Path:
    """Save ``payload`` (plus format/version tags) to ``path`` atomically; return the path.

    With ``check_finite`` (default) a payload holding a NaN / inf floating-point tensor is
    refused with :class:`NonFiniteStateError` before anything is written, so the file already
    at ``path`` stays as it was."""
    if check_finite:
        assert_finite_state(payload, f"refusing to write checkpoint {path}: its payload")
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
    if payload.get("version", 0) < IMAGE_CONVENTION_VERSION and _image_keys(payload):
        raise CheckpointError(
            f"{path} (checkpoint version {payload.get('version', 0)}) is a policy with image "
            f"input(s) {_image_keys(payload)} written before images were scaled the same way "
            f"on every path: it was pretrained on float 0..255 pixels, and this maniflow-rl "
            f"reads uint8 pixels as 0..255 / 255. Its actions would not be the ones it was "
            f"trained for; pretrain it again (e.g. `maniflow-rl run` with a new --out)")
    if expected_kind is not None:
        kinds = (expected_kind,) if isinstance(expected_kind, str) else tuple(expected_kind)
        if payload.get("kind") not in kinds:
            raise CheckpointError(
                f"{path} is a '{payload.get('kind')}' checkpoint, expected one of {kinds}"
            )
    return payload


def _image_keys(payload: Mapping[str, Any]) -> list[str]:
    """The ``rgb`` observation keys of a checkpoint's ``shape_meta`` (none without one)."""
    obs = (payload.get("shape_meta") or {}).get("obs", {})
    return [k for k, spec in obs.items() if isinstance(spec, Mapping)
            and spec.get("type") == "rgb"]


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
