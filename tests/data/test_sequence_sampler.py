"""Sequence windows at episode edges, validation split, and the torch dataset built on them."""

import numpy as np
import pytest
import torch

from maniflow_rl.data import (PointCloudSequenceDataset, ReplayBuffer, SequenceSampler,
                              create_indices, get_val_mask)


def naive_create_indices(episode_ends, sequence_length, pad_before, pad_after, episode_mask):
    """diffusion_policy's per-window loop, verbatim in plain Python."""
    pad_before = min(max(pad_before, 0), sequence_length - 1)
    pad_after = min(max(pad_after, 0), sequence_length - 1)
    rows = []
    for i, end_idx in enumerate(episode_ends):
        if not episode_mask[i]:
            continue
        start_idx = episode_ends[i - 1] if i > 0 else 0
        length = end_idx - start_idx
        for idx in range(-pad_before, length - sequence_length + pad_after + 1):
            b_start = max(idx, 0) + start_idx
            b_end = min(idx + sequence_length, length) + start_idx
            s_start = b_start - (idx + start_idx)
            s_end = sequence_length - ((idx + sequence_length + start_idx) - b_end)
            rows.append([b_start, b_end, s_start, s_end])
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def test_hand_computed_windows_at_episode_edges():
    ends = np.array([3, 7])                      # episodes [0, 1, 2] and [3, 4, 5, 6]
    indices = create_indices(ends, sequence_length=4, pad_before=1, pad_after=2)
    np.testing.assert_array_equal(indices, [
        [0, 3, 1, 4], [0, 3, 0, 3], [1, 3, 0, 2],
        [3, 6, 1, 4], [3, 7, 0, 4], [4, 7, 0, 3], [5, 7, 0, 2]])
    buffer = ReplayBuffer({"x": np.arange(7)}, ends)
    sampler = SequenceSampler(buffer, 4, pad_before=1, pad_after=2)
    windows = [sampler.sample_sequence(i)["x"].tolist() for i in range(len(sampler))]
    assert windows == [[0, 0, 1, 2], [0, 1, 2, 2], [1, 2, 2, 2],        # edge frames repeated
                       [3, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 6], [5, 6, 6, 6]]


def test_no_padding_and_short_episodes():
    assert create_indices(np.array([2]), 4).shape == (0, 4)   # episode shorter than a window
    np.testing.assert_array_equal(create_indices(np.array([4, 9]), 4),
                                  [[0, 4, 0, 4], [4, 8, 0, 4], [5, 9, 0, 4]])


def test_matches_naive_implementation():
    rng = np.random.default_rng(0)
    for _ in range(200):
        ends = np.cumsum(rng.integers(1, 12, size=rng.integers(1, 6)))
        seq, pb, pa = int(rng.integers(1, 9)), int(rng.integers(0, 10)), int(rng.integers(0, 10))
        mask = rng.random(len(ends)) < 0.7
        np.testing.assert_array_equal(create_indices(ends, seq, pb, pa, mask),
                                      naive_create_indices(ends, seq, pb, pa, mask))


def test_key_first_k_reads_only_leading_frames():
    buffer = ReplayBuffer({"o": np.arange(6, dtype=np.float32), "a": np.arange(6)}, np.array([6]))
    sampler = SequenceSampler(buffer, 4, pad_before=1, pad_after=1, key_first_k={"o": 2})
    first = sampler.sample_sequence(0)
    assert first["o"][:2].tolist() == [0, 0] and first["a"].tolist() == [0, 0, 1, 2]
    assert np.isnan(first["o"][3])               # never-read frames are NaN, not silently 0


def test_val_mask():
    mask = get_val_mask(10, 0.2, seed=0)
    assert mask.sum() == 2 and np.array_equal(mask, get_val_mask(10, 0.2, seed=0))
    assert get_val_mask(10, 0.0).sum() == 0
    assert get_val_mask(2, 0.9).sum() == 1       # always keeps a training episode


# ---------------------------------------------------------------- PointCloudSequenceDataset
def _dataset_buffer(lengths=(10, 7, 12), n_points=16):
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.create_empty()
    for n in lengths:
        buffer.add_episode({
            "point_cloud": rng.standard_normal((n, n_points, 6)).astype(np.float32),
            "state": rng.standard_normal((n, 9)).astype(np.float32),
            "img": rng.integers(0, 255, (n, 8, 10, 3), dtype=np.uint8),
            "action": rng.standard_normal((n, 4)).astype(np.float32)})
    return buffer


def test_dataset_items_and_shape_meta():
    buffer = _dataset_buffer()
    ds = PointCloudSequenceDataset(buffer, horizon=8, n_obs_steps=2, n_action_steps=4,
                                   point_cloud_channels=3)
    assert ds.shape_meta == {
        "obs": {"point_cloud": {"shape": [16, 3], "type": "point_cloud"},
                "agent_pos": {"shape": [9], "type": "low_dim"},
                "image": {"shape": [3, 8, 10], "type": "rgb"}},
        "action": {"shape": [4]}}
    expected = create_indices(buffer.episode_ends, 8, pad_before=1, pad_after=3)
    assert len(ds) == len(expected)
    item = ds[0]                                 # first window: starts one frame before ep 0
    assert item["obs"]["point_cloud"].shape == (2, 16, 3)
    assert item["obs"]["agent_pos"].shape == (2, 9)
    assert item["obs"]["image"].shape == (2, 3, 8, 10)
    assert item["action"].shape == (8, 4)
    assert item["obs"]["image"].dtype == torch.uint8             # pixels as stored, 0..255
    assert all(v.dtype == torch.float32 for k, v in item["obs"].items() if k != "image")
    np.testing.assert_array_equal(item["obs"]["agent_pos"][0], buffer["state"][0])
    np.testing.assert_array_equal(item["obs"]["agent_pos"][1], buffer["state"][0])
    np.testing.assert_array_equal(item["obs"]["image"][1].numpy(),
                                  np.moveaxis(buffer["img"][0], -1, 0))
    np.testing.assert_array_equal(item["obs"]["point_cloud"][1], buffer["point_cloud"][0, :, :3])
    np.testing.assert_array_equal(item["action"][1:], buffer["action"][:7])


def test_dataset_obs_keys_split_and_normalizer_data():
    buffer = _dataset_buffer()
    ds = PointCloudSequenceDataset(buffer, 8, 2, 4, val_ratio=0.34, seed=1,
                                   obs_keys=["point_cloud", "agent_pos"])
    val = ds.get_validation_dataset()
    assert set(ds.shape_meta["obs"]) == {"point_cloud", "agent_pos"}
    assert set(ds[0]["obs"]) == {"point_cloud", "agent_pos"}
    assert len(ds) + len(val) == len(create_indices(buffer.episode_ends, 8, 1, 3))
    assert ds.val_mask.sum() == 1 and not (ds.train_mask & ds.val_mask).any()
    data = ds.get_normalizer_data()
    n_train_steps = int(buffer.episode_lengths[ds.train_mask].sum())
    assert data["action"].shape == (n_train_steps, 4)
    assert data["point_cloud"].shape == (n_train_steps, 16, 6)
    assert data["agent_pos"].dtype == np.float32


def test_dataset_errors(tmp_path):
    buffer = _dataset_buffer()
    with pytest.raises(ValueError, match="n_action_steps"):
        PointCloudSequenceDataset(buffer, horizon=8, n_obs_steps=2, n_action_steps=8)
    with pytest.raises(ValueError, match="not found"):
        PointCloudSequenceDataset(buffer, 8, 2, 4, obs_keys=["depth"])
    with pytest.raises(ValueError, match="not found"):
        PointCloudSequenceDataset(tmp_path / "nothing.zarr", 8, 2, 4)


def test_dataset_from_path_loads_only_used_arrays(tmp_path):
    buffer = _dataset_buffer(lengths=(9, 9))
    buffer.add_episode({**buffer.get_episode(0, copy=True)})
    path = buffer.save_to_path(tmp_path / "d.zarr")
    ds = PointCloudSequenceDataset(path, 8, 2, 4, obs_keys=["agent_pos"])
    assert sorted(ds.replay_buffer.keys()) == ["action", "state"]
    assert ds.replay_buffer.n_episodes == 3
