"""One compatibility check for ``shape_meta`` dicts (dataset, policy, env, checkpoint).

A ``shape_meta`` is ``{"obs": {key: {"shape": [...], ...}}, "action": {"shape": [...]}}``.
"""

from __future__ import annotations

__all__ = ["check_shape_meta_compatible", "checkpoint_env_kwargs", "env_mismatch_warnings"]


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


# env settings that change what the point cloud looks like without changing its shape
POINT_CLOUD_ENV_KEYS = ("point_cloud_source", "camera")


def checkpoint_env_kwargs(payload: dict) -> dict:
    """The env settings a checkpoint was trained with (pretraining ``train_config.env_kwargs``,
    or a fine-tuning checkpoint's ``env_config``); empty when it recorded none."""
    train = payload.get("train_config") or {}
    recorded = train.get("env_kwargs") if isinstance(train, dict) else None
    if not recorded:
        recorded = payload.get("env_config") or {}
    return dict(recorded) if isinstance(recorded, dict) else {}


def env_mismatch_warnings(payload: dict, env_kwargs: dict) -> list[str]:
    """One message per point-cloud setting (source, camera) that differs between the checkpoint's
    training env and ``env_kwargs``: same shapes, different data, so nothing else notices."""
    trained = checkpoint_env_kwargs(payload)
    keys = [k for k in POINT_CLOUD_ENV_KEYS if k in trained and k in env_kwargs
            and trained[k] != env_kwargs[k]]
    if "camera" in keys and "geometry" in (trained.get("point_cloud_source"),
                                          env_kwargs.get("point_cloud_source")):
        keys.remove("camera")   # geometry clouds use no camera
    return [f"the checkpoint was trained with env.{k}={trained[k]!r} but this run uses "
            f"env.{k}={env_kwargs[k]!r}: the point clouds will differ from the training data "
            f"(set env.{k}={trained[k]} to match)" for k in keys]
