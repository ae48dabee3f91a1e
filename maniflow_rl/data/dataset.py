"""Torch dataset of (observation history, action horizon) windows from a DP3/ManiFlow zarr file."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from maniflow_rl.data.replay_buffer import ReplayBuffer, ReplayBufferError
from maniflow_rl.data.sequence_sampler import SequenceSampler, downsample_mask, get_val_mask

log = logging.getLogger("maniflow_rl")

#: zarr ``data/`` key -> policy observation key (keys missing in the zarr file are skipped)
DEFAULT_KEY_MAP: dict[str, str] = {"point_cloud": "point_cloud", "state": "agent_pos",
                                   "img": "image"}
ACTION_KEY = "action"


def key_map_for(obs_keys) -> dict[str, str]:
    """``DEFAULT_KEY_MAP`` plus every other observation key stored under its own name (the
    robosuite keys, ``full_state``)."""
    return {**DEFAULT_KEY_MAP, **{k: k for k in obs_keys if k not in DEFAULT_KEY_MAP.values()}}


def obs_type(obs_key: str) -> str:
    """shape_meta type of an observation key: point_cloud, rgb or low_dim."""
    if obs_key == "point_cloud":
        return "point_cloud"
    if obs_key == "image" or obs_key.endswith("image") or obs_key.startswith("rgb"):
        return "rgb"
    return "low_dim"


# point-cloud channel layouts whose first channels are xyz: xyz, xyz + rgb (DP3)
KNOWN_POINT_CLOUD_CHANNELS = (3, 6)


def check_point_cloud_shape(zarr_key: str, array_shape: tuple) -> None:
    """A stored point cloud is ``[T, N, C]`` (N points of C channels per step)."""
    if len(array_shape) != 3:
        raise ReplayBufferError(
            f"data/{zarr_key} must be stored as [T, N, C] (T steps, N points, C channels), got "
            f"an array of shape {list(array_shape)} (rank {len(array_shape)})")


def point_cloud_channels_used(zarr_key: str, stored: int, requested: int) -> int:
    """``requested`` channels of a cloud stored with ``stored``: an error if there are fewer, a
    warning when channels of an unknown layout (not xyz / xyz+rgb) are dropped."""
    if stored < requested:
        raise ReplayBufferError(f"data/{zarr_key} has {stored} channels, {requested} requested")
    if stored > requested and stored not in KNOWN_POINT_CLOUD_CHANNELS:
        log.warning("data/%s has %d channels per point (not xyz or xyz+rgb); only the first "
                    "%d are used, %d are dropped", zarr_key, stored, requested,
                    stored - requested)
    return requested


def infer_shape_meta(replay_buffer: ReplayBuffer, key_map: Mapping[str, str] | None = None,
                     obs_keys: list[str] | None = None,
                     point_cloud_channels: int | None = None) -> dict[str, Any]:
    """``{'obs': {key: {'shape', 'type'}}, 'action': {'shape'}}`` of the data, policy layout.

    Images stored HWC (DP3 ``img``) are reported CHW, as the policy and the envs see them.
    """
    resolved = resolve_key_map(replay_buffer, key_map, obs_keys)
    obs = {}
    for zarr_key, obs_key in resolved.items():
        shape = tuple(int(s) for s in replay_buffer[zarr_key].shape[1:])
        kind = obs_type(obs_key)
        if kind == "rgb":
            if len(shape) != 3:
                raise ReplayBufferError(f"image key {zarr_key} must be [T, H, W, C], got {shape}")
            if shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
                shape = (shape[2], shape[0], shape[1])  # HWC -> CHW
        elif kind == "point_cloud":
            check_point_cloud_shape(zarr_key, replay_buffer[zarr_key].shape)
            if point_cloud_channels is not None:
                shape = shape[:-1] + (point_cloud_channels_used(zarr_key, shape[-1],
                                                                point_cloud_channels),)
        obs[obs_key] = {"shape": list(shape), "type": kind}
    if ACTION_KEY not in replay_buffer:
        raise ReplayBufferError(f"dataset has no '{ACTION_KEY}' array (keys: "
                                f"{replay_buffer.keys()})")
    return {"obs": obs, "action": {"shape": list(replay_buffer[ACTION_KEY].shape[1:])}}


def resolve_key_map(replay_buffer: ReplayBuffer, key_map: Mapping[str, str] | None,
                    obs_keys: list[str] | None) -> dict[str, str]:
    """zarr key -> obs key for the keys present in the data (and in ``obs_keys`` if given)."""
    key_map = dict(DEFAULT_KEY_MAP if key_map is None else key_map)
    resolved = {z: o for z, o in key_map.items() if z in replay_buffer}
    if obs_keys is not None:
        missing = [o for o in obs_keys if o not in resolved.values()]
        if missing:
            raise ReplayBufferError(
                f"observation keys {missing} not found in the dataset (data/ keys "
                f"{replay_buffer.keys()}, key_map {key_map})")
        resolved = {z: o for z, o in resolved.items() if o in obs_keys}
    if not resolved:
        raise ReplayBufferError(f"no observation key of key_map {key_map} is in the dataset "
                                f"(data/ keys {replay_buffer.keys()})")
    return resolved


def load_replay_buffer(zarr_path: str | os.PathLike, key_map: Mapping[str, str] | None = None,
                       obs_keys: list[str] | None = None) -> ReplayBuffer:
    """Read into memory only the arrays a dataset uses (its observation keys and ``action``)."""
    lazy = ReplayBuffer.open_zarr(zarr_path)
    if ACTION_KEY not in lazy:
        raise ReplayBufferError(f"{zarr_path}: no '{ACTION_KEY}' array (keys: {lazy.keys()})")
    keys = list(resolve_key_map(lazy, key_map, obs_keys)) + [ACTION_KEY]
    return ReplayBuffer.copy_from_path(zarr_path, keys=keys)


class PointCloudSequenceDataset(torch.utils.data.Dataset):
    """Windows of ``horizon`` frames; item = ``{'obs': {key: [To, *shape]}, 'action': [H, Da]}``.

    ``zarr_path`` may be a path or an already loaded :class:`ReplayBuffer`. Observations are
    float32 in raw units, except images: CHW in their stored dtype (uint8 0..255, what the
    encoder and the env runners use; a float32 image would have to be in [0, 1], see
    ``obs_encoder.py``); only the first ``n_obs_steps`` frames of
    each window are returned. Windows are padded at episode edges by repeating the edge frame
    (``pad_before = n_obs_steps - 1``, ``pad_after = n_action_steps - 1``).
    """

    def __init__(self, zarr_path: str | os.PathLike | ReplayBuffer, horizon: int,
                 n_obs_steps: int, n_action_steps: int,
                 key_map: Mapping[str, str] | None = None, val_ratio: float = 0.0,
                 seed: int = 0, max_train_episodes: int | None = None,
                 obs_keys: list[str] | None = None, point_cloud_channels: int | None = None):
        if not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"need 1 <= n_obs_steps ({n_obs_steps}) <= horizon ({horizon})")
        if not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
            raise ValueError(f"n_action_steps ({n_action_steps}) must be in [1, horizon - "
                             f"n_obs_steps + 1] = [1, {horizon - n_obs_steps + 1}]")
        if isinstance(zarr_path, ReplayBuffer):
            self.replay_buffer = zarr_path
        else:
            self.replay_buffer = load_replay_buffer(zarr_path, key_map, obs_keys)
        self.zarr_path = None if isinstance(zarr_path, ReplayBuffer) else str(zarr_path)
        self.key_map = resolve_key_map(self.replay_buffer, key_map, obs_keys)
        self.shape_meta = infer_shape_meta(self.replay_buffer, self.key_map, None,
                                           point_cloud_channels)
        self.point_cloud_channels = point_cloud_channels
        self._channels_last = {  # images stored HWC in the zarr file (DP3) -> CHW
            o: self.shape_meta["obs"][o]["type"] == "rgb"
            and list(self.replay_buffer[z].shape[1:]) != self.shape_meta["obs"][o]["shape"]
            for z, o in self.key_map.items()}
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps

        n_episodes = self.replay_buffer.n_episodes
        if n_episodes == 0:
            raise ReplayBufferError(f"dataset {zarr_path} has no episodes")
        val_mask = get_val_mask(n_episodes, val_ratio, seed)
        self.train_mask = downsample_mask(~val_mask, max_train_episodes, seed)
        self.val_mask = val_mask
        self.sampler = self._make_sampler(self.train_mask)
        if len(self.sampler) == 0:
            raise ReplayBufferError(f"dataset {zarr_path}: no training windows of horizon "
                                    f"{horizon} (episodes too short?)")

    def _make_sampler(self, mask: np.ndarray) -> SequenceSampler:
        return SequenceSampler(
            self.replay_buffer, self.horizon, pad_before=self.n_obs_steps - 1,
            pad_after=self.n_action_steps - 1, keys=list(self.key_map) + [ACTION_KEY],
            key_first_k={z: self.n_obs_steps for z in self.key_map}, episode_mask=mask)

    def get_validation_dataset(self) -> PointCloudSequenceDataset:
        """The same dataset over the validation episodes (empty when ``val_ratio == 0``)."""
        val = copy.copy(self)
        val.sampler = self._make_sampler(self.val_mask)
        val.train_mask = self.val_mask
        return val

    def __len__(self) -> int:
        return len(self.sampler)

    def _to_obs(self, obs_key: str, frames: np.ndarray, dtype=None) -> np.ndarray:
        """Frames ``[T, ...]`` of one key in the policy layout (CHW images, cut point clouds),
        as ``dtype`` (default :meth:`_obs_dtype`: images as stored, the rest float32)."""
        dtype = self._obs_dtype(obs_key, frames) if dtype is None else dtype
        if self._channels_last[obs_key]:
            frames = np.moveaxis(frames, -1, 1)  # [T, H, W, C] -> [T, C, H, W]
        elif (self.shape_meta["obs"][obs_key]["type"] == "point_cloud"
              and self.point_cloud_channels is not None):
            frames = frames[..., : self.point_cloud_channels]
        return np.ascontiguousarray(frames, dtype=dtype)

    def _obs_dtype(self, obs_key: str, frames: np.ndarray) -> np.dtype:
        """Images keep their stored dtype (uint8: 0..255); everything else is float32."""
        return (frames.dtype if self.shape_meta["obs"][obs_key]["type"] == "rgb"
                else np.dtype(np.float32))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        sample = self.sampler.sample_sequence(idx)
        obs = {o: torch.from_numpy(self._to_obs(o, sample[z][: self.n_obs_steps]))
               for z, o in self.key_map.items()}
        action = torch.from_numpy(np.asarray(sample[ACTION_KEY], dtype=np.float32))
        return {"obs": obs, "action": action}

    def cache_point_tokens(self, presample: Callable[[str, np.ndarray], np.ndarray]) -> None:
        """Cut every point-cloud frame once to the points the encoder keeps:
        ``presample(obs_key, frames [T, N, C]) -> [T, k, C]`` (raw units, in pick order; see
        ``data/point_token_cache.py``). Shared with :meth:`get_validation_dataset`'s copies.
        Fit the normalizer first: :meth:`get_normalizer_data` then returns the cut clouds."""
        for z, o in self.key_map.items():
            if self.shape_meta["obs"][o]["type"] == "point_cloud":
                frames = self._to_obs(o, np.asarray(self.replay_buffer[z]))
                self.replay_buffer.replace_array(z, presample(o, frames))

    def get_normalizer_data(self) -> dict[str, np.ndarray]:
        """Every frame of the training episodes, per obs key (policy layout) and ``'action'``.

        Low-dim keys, point clouds and actions are float32; images keep their stored dtype
        (uint8, CHW) to save memory.
        """
        slices = [self.replay_buffer.episode_slice(i) for i in np.nonzero(self.train_mask)[0]]
        rows = np.concatenate([np.arange(s.start, s.stop) for s in slices])
        data = {}
        for z, o in self.key_map.items():
            frames = np.asarray(self.replay_buffer[z][:])[rows]
            data[o] = self._to_obs(o, frames)
        data[ACTION_KEY] = np.asarray(self.replay_buffer[ACTION_KEY][:], dtype=np.float32)[rows]
        return data
