"""Demonstration data: zarr replay buffer (DP3 layout), sequence windows, torch dataset."""

from maniflow_rl.data.dataset import (
    DEFAULT_KEY_MAP,
    PointCloudSequenceDataset,
    infer_shape_meta,
    load_replay_buffer,
)
from maniflow_rl.data.replay_buffer import ReplayBuffer, ReplayBufferError
from maniflow_rl.data.sequence_sampler import (
    SequenceSampler,
    create_indices,
    downsample_mask,
    get_val_mask,
)

__all__ = [
    "DEFAULT_KEY_MAP",
    "PointCloudSequenceDataset",
    "ReplayBuffer",
    "ReplayBufferError",
    "SequenceSampler",
    "create_indices",
    "downsample_mask",
    "get_val_mask",
    "infer_shape_meta",
    "load_replay_buffer",
]
