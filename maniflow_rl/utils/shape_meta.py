"""One compatibility check for ``shape_meta`` dicts (dataset, policy, env, checkpoint).

A ``shape_meta`` is ``{"obs": {key: {"shape": [...], ...}}, "action": {"shape": [...]}}``.
"""

from __future__ import annotations

__all__ = ["check_shape_meta_compatible"]


def _shape(meta: dict | None) -> list | None:
    return None if meta is None else list(meta["shape"])


def check_shape_meta_compatible(required: dict, provided: dict, *, required_name: str,
                                provided_name: str, exact: bool = False, hint: str = "") -> None:
    """Raise ``ValueError`` unless ``provided`` supplies every observation and the action of
    ``required`` with the same shapes (``exact``: and no observation keys beyond them).

    ``required_name``/``provided_name`` name the two sides in the message, e.g. ``"the policy"``
    and ``"env metaworld/reach-v3"``; ``hint`` is appended (what to change to fix it).
    """
    suffix = f" ({hint})" if hint else ""
    provided_obs = provided.get("obs", {})
    for key, meta in required["obs"].items():
        got = provided_obs.get(key)
        if got is None:
            raise ValueError(f"shape mismatch for observation '{key}': {required_name} reads it, "
                             f"{provided_name} does not provide it (it has "
                             f"{sorted(provided_obs)}){suffix}")
        if _shape(got) != _shape(meta):
            raise ValueError(f"shape mismatch for observation '{key}': {required_name} expects "
                             f"{_shape(meta)}, {provided_name} has {_shape(got)}{suffix}")
    extra = sorted(set(provided_obs) - set(required["obs"]))
    if exact and extra:
        raise ValueError(f"shape mismatch: {provided_name} has observations {extra} that "
                         f"{required_name} does not{suffix}")
    if "action" in provided and _shape(provided["action"]) != _shape(required["action"]):
        raise ValueError(f"action shape mismatch: {required_name} expects "
                         f"{_shape(required['action'])}, {provided_name} has "
                         f"{_shape(provided['action'])}{suffix}")
