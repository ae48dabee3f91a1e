"""Typed configuration dataclasses from plain dicts (the Python API accepts either), shared by
``PPOConfig``, ``DSRLConfig``, the run sections and the trainers: unknown keys fail with the
valid ones listed; ``require_int`` / ``require_choice`` give the validators' messages."""

from __future__ import annotations

import dataclasses
from typing import Any


def config_from_dict(cls, values: dict[str, Any] | None):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys with a clear message."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}")
    return cls(**values)


def as_config(cls, value):
    """``value`` as a ``cls`` instance: None -> defaults, a dict -> :func:`config_from_dict`."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return config_from_dict(cls, value)
    raise TypeError(f"expected {cls.__name__} or dict, got {type(value).__name__}")


def require_int(section: str, name: str, value: Any, minimum: int) -> None:
    """``ValueError`` naming ``section.name`` unless ``value`` is an int >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{section}.{name} must be an integer >= {minimum}, got {value!r}")


def require_choice(section: str, name: str, value: Any, choices: tuple) -> None:
    """``ValueError`` naming ``section.name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{section}.{name} must be one of {choices}, got {value!r}")
