"""ReplayBuffer: DP3 zarr layout round trips, reading foreign files, clear errors."""

import numpy as np
import pytest
import zarr

from maniflow_rl.data import ReplayBuffer, ReplayBufferError


def _episode(rng, length, n_points=5):
    return {"point_cloud": rng.standard_normal((length, n_points, 3)).astype(np.float32),
            "state": rng.standard_normal((length, 9)).astype(np.float32),
            "action": rng.standard_normal((length, 4)).astype(np.float32)}


def _filled(lengths=(3, 5, 2), seed=0):
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer.create_empty()
    episodes = [_episode(rng, n) for n in lengths]
    for ep in episodes:
        buffer.add_episode(ep)
    return buffer, episodes


def test_add_episode_and_accessors():
    buffer, episodes = _filled((3, 5, 2))
    assert buffer.n_episodes == 3 and buffer.n_steps == 10 and len(buffer) == 10
    np.testing.assert_array_equal(buffer.episode_ends, [3, 8, 10])
    np.testing.assert_array_equal(buffer.episode_lengths, [3, 5, 2])
    assert sorted(buffer.keys()) == ["action", "point_cloud", "state"]
    assert buffer["point_cloud"].shape == (10, 5, 3)
    for i, ep in enumerate(episodes):
        got = buffer.get_episode(i)
        for k in ep:
            np.testing.assert_array_equal(got[k], ep[k])
    np.testing.assert_array_equal(buffer.get_episode(-1)["action"], episodes[-1]["action"])
    with pytest.raises(IndexError):
        buffer.get_episode(3)


def test_many_appends_keep_data():  # geometric growth path
    buffer, episodes = _filled([7] * 20, seed=1)
    np.testing.assert_array_equal(buffer["state"], np.concatenate([e["state"] for e in episodes]))


def test_zarr_round_trip(tmp_path):
    buffer, episodes = _filled()
    path = buffer.save_to_path(tmp_path / "demo.zarr")
    root = zarr.open_group(str(path), mode="r")
    assert root.metadata.zarr_format == 2                       # readable by DP3 / ManiFlow
    loaded = ReplayBuffer.copy_from_path(path)
    np.testing.assert_array_equal(loaded.episode_ends, buffer.episode_ends)
    for k in buffer.keys():
        np.testing.assert_array_equal(loaded[k], buffer[k])
        assert loaded[k].dtype == buffer[k].dtype
    only = ReplayBuffer.copy_from_path(path, keys=["action"])
    assert only.keys() == ["action"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_reads_dp3_layout_written_with_plain_zarr(tmp_path, zarr_format):
    """The layout DP3's MetaWorld demo script writes (data/*, meta/episode_ends)."""
    rng = np.random.default_rng(0)
    root = zarr.open_group(str(tmp_path / "dp3.zarr"), mode="w", zarr_format=zarr_format)
    data, meta = root.create_group("data"), root.create_group("meta")
    arrays = {"point_cloud": rng.standard_normal((9, 16, 6)).astype(np.float32),
              "img": rng.integers(0, 255, (9, 8, 8, 3), dtype=np.uint8),
              "state": rng.standard_normal((9, 9)).astype(np.float32),
              "action": rng.standard_normal((9, 4)).astype(np.float32)}
    for k, v in arrays.items():
        data.create_array(k, data=v, chunks=(4,) + v.shape[1:])
    meta.create_array("episode_ends", data=np.array([4, 9], dtype=np.int64))
    buffer = ReplayBuffer.copy_from_path(tmp_path / "dp3.zarr")
    assert buffer.n_episodes == 2
    np.testing.assert_array_equal(buffer.get_episode(1)["img"], arrays["img"][4:])
    lazy = ReplayBuffer.open_zarr(tmp_path / "dp3.zarr")
    assert lazy.backend == "zarr"
    np.testing.assert_array_equal(lazy["state"][2:5], arrays["state"][2:5])


def test_lazy_zarr_append(tmp_path):
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.open_zarr(tmp_path / "new.zarr", mode="w")
    episodes = [_episode(rng, 4), _episode(rng, 3)]
    for ep in episodes:
        buffer.add_episode(ep)
    loaded = ReplayBuffer.copy_from_path(tmp_path / "new.zarr")
    np.testing.assert_array_equal(loaded.episode_ends, [4, 7])
    np.testing.assert_array_equal(loaded["action"], np.concatenate([e["action"] for e in episodes]))


def test_clear_errors(tmp_path):
    with pytest.raises(ReplayBufferError, match="not found"):
        ReplayBuffer.copy_from_path(tmp_path / "missing.zarr")
    (tmp_path / "junk.zarr").write_text("not a zarr store")
    with pytest.raises(ReplayBufferError):
        ReplayBuffer.copy_from_path(tmp_path / "junk.zarr")

    root = zarr.open_group(str(tmp_path / "no_meta.zarr"), mode="w", zarr_format=2)
    root.create_group("data").create_array("action", data=np.zeros((5, 2), np.float32))
    with pytest.raises(ReplayBufferError, match="meta/episode_ends"):
        ReplayBuffer.copy_from_path(tmp_path / "no_meta.zarr")

    root.create_group("meta").create_array("episode_ends", data=np.array([2, 4]))
    with pytest.raises(ReplayBufferError, match="inconsistent lengths"):
        ReplayBuffer.copy_from_path(tmp_path / "no_meta.zarr")
    with pytest.raises(ReplayBufferError, match="keys"):
        ReplayBuffer.copy_from_path(tmp_path / "no_meta.zarr", keys=["point_cloud"])

    buffer, _ = _filled((3,))
    with pytest.raises(ReplayBufferError, match="inconsistent lengths"):
        buffer.add_episode({"point_cloud": np.zeros((2, 5, 3)), "state": np.zeros((3, 9)),
                            "action": np.zeros((3, 4))})
    with pytest.raises(ReplayBufferError, match="differ"):
        buffer.add_episode({"action": np.zeros((3, 4))})
    with pytest.raises(ReplayBufferError, match="per-step shape"):
        buffer.add_episode({"point_cloud": np.zeros((2, 7, 3)), "state": np.zeros((2, 9)),
                            "action": np.zeros((2, 4))})
    with pytest.raises(ReplayBufferError, match="strictly increasing"):
        ReplayBuffer({"a": np.zeros(4)}, np.array([3, 2]))
