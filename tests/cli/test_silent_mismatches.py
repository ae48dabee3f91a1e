"""Mismatches that used to pass silently get a warning or a clear error (issue 12, item 7): a
camera-trained checkpoint fine-tuned on geometry point clouds, a zarr point cloud of an unknown
channel layout cut to xyz, a point cloud stored without its point axis."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from cli_testlib import TINY_FINETUNE, metaworld_checkpoint

from maniflow_rl.cli.main import main as cli_main
from maniflow_rl.data import ReplayBuffer
from maniflow_rl.data.dataset import infer_shape_meta
from maniflow_rl.data.replay_buffer import ReplayBufferError
from maniflow_rl.utils.shape_meta import env_mismatch_warnings


def _dataset(path, cloud_shape, length=12):
    buffer = ReplayBuffer.create_empty()
    rng = np.random.default_rng(0)
    for _ in range(2):
        buffer.add_episode({"point_cloud": rng.normal(size=(length, *cloud_shape)).astype("f4"),
                            "state": rng.normal(size=(length, 3)).astype("f4"),
                            "action": rng.uniform(-1, 1, (length, 2)).astype("f4")})
    return buffer.save_to_path(path)


def test_unknown_channel_layout_cut_to_xyz_warns(tmp_path, caplog):
    buffer = ReplayBuffer.open_zarr(str(_dataset(tmp_path / "c7.zarr", (16, 7))))
    with caplog.at_level(logging.WARNING, logger="maniflow_rl"):
        meta = infer_shape_meta(buffer, point_cloud_channels=3)
    assert meta["obs"]["point_cloud"]["shape"] == [16, 3]
    assert "7 channels" in caplog.text and "4 are dropped" in caplog.text
    caplog.clear()
    buffer = ReplayBuffer.open_zarr(str(_dataset(tmp_path / "c6.zarr", (16, 6))))
    with caplog.at_level(logging.WARNING, logger="maniflow_rl"):
        infer_shape_meta(buffer, point_cloud_channels=3)   # xyz + rgb -> xyz: the DP3 default
    assert caplog.text == ""


def test_point_cloud_without_point_axis_is_named(tmp_path, capsys):
    dataset = _dataset(tmp_path / "flat.zarr", (3,))
    with pytest.raises(ReplayBufferError, match=r"\[T, N, C\].*\[24, 3\] \(rank 2\)"):
        infer_shape_meta(ReplayBuffer.open_zarr(str(dataset)), point_cloud_channels=3)
    assert cli_main(["pretrain", "--dataset", str(dataset), "--out", str(tmp_path / "p"),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "[T, N, C]" in err and "got [3]" not in err and "Traceback" not in err


def test_env_mismatch_warnings():
    payload = {"train_config": {"env_kwargs": {"point_cloud_source": "camera",
                                               "camera": "corner2"}}}
    same = {"point_cloud_source": "camera", "camera": "corner2"}
    assert env_mismatch_warnings(payload, same) == []
    [message] = env_mismatch_warnings(payload, {**same, "point_cloud_source": "geometry"})
    assert "env.point_cloud_source='camera'" in message and "'geometry'" in message
    [message] = env_mismatch_warnings(payload, {**same, "camera": "corner3"})
    assert "env.camera" in message
    assert env_mismatch_warnings({}, same) == []       # nothing recorded: nothing to compare


def test_finetune_warns_when_the_point_cloud_source_differs(tmp_path, caplog):
    pytest.importorskip("metaworld")
    checkpoint = metaworld_checkpoint(tmp_path / "camera.pt", point_cloud_source="camera")
    with caplog.at_level(logging.WARNING, logger="maniflow_rl"):
        assert cli_main(["finetune", "--checkpoint", str(checkpoint), "--out",
                         str(tmp_path / "ft"), "--no-progress", *TINY_FINETUNE,
                         "ppo.total_timesteps=8"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("point_cloud_source='camera'" in w and "'geometry'" in w for w in warnings)
