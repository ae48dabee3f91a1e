"""Typed configuration dataclasses from plain dicts (the Python API accepts either), shared by
``PPOConfig``, ``DSRLConfig`` and the trainers: unknown keys fail with the valid ones listed."""

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
