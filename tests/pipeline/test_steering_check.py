"""``check_steering_authority``: how far the frozen policy's chunk moves with the initial
noise, on the run's demos, before a DSRL run (a warning when it hardly moves)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from maniflow_rl.data.replay_buffer import ReplayBuffer
from maniflow_rl.pipeline.steering_check import (AUTHORITY_FILE, check_steering_authority,
                                                 steering_authority)
from maniflow_rl.policy import ManiFlowPointcloudRLPolicy

SHAPE_META = {"obs": {"point_cloud": {"shape": [8, 3], "type": "point_cloud"},
                      "agent_pos": {"shape": [2]}}, "action": {"shape": [3]}}
TINY = dict(horizon=4, n_action_steps=2, n_obs_steps=2, num_inference_steps=2, n_emb=32,
            n_layer=1, n_head=2, num_point_tokens=4)


def _demos(tmp_path):
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.create_empty()
    for n in (12, 9):
        buffer.add_episode({"point_cloud": rng.normal(size=(n, 8, 3)).astype(np.float32),
                            "state": rng.normal(size=(n, 2)).astype(np.float32),
                            "action": rng.normal(size=(n, 3)).astype(np.float32)})
    return buffer.save_to_path(tmp_path / "demos.zarr")


def _policy():
    torch.manual_seed(0)
    return ManiFlowPointcloudRLPolicy(SHAPE_META, **TINY).eval()


def test_a_policy_that_ignores_its_noise_has_no_authority_and_is_flagged(tmp_path, caplog):
    policy = _policy()
    # a chunk that depends on the observation only: nothing for DSRL to choose
    policy.actions_from_noise = lambda context, noise: {
        "action": context[:, :policy.n_action_steps, :3]}
    with caplog.at_level(logging.WARNING, logger="maniflow_rl"):
        result = check_steering_authority(policy, _demos(tmp_path), tmp_path / "out")
    assert result["within"] == pytest.approx(0.0, abs=1e-6) and result["between"] > 0
    assert result["low"] and "DSRL can only choose" in caplog.text
    stored = json.loads((tmp_path / "out" / AUTHORITY_FILE).read_text())
    assert stored == result


def test_authority_grows_with_the_noise_scale_and_is_read_back_once_stored(tmp_path):
    policy, demos = _policy(), _demos(tmp_path)
    spread = steering_authority(policy, demos, [0.0, 0.5, 1.0], num_states=6, noises=5)
    within = [spread["by_noise_scale"][s]["within"] for s in ("0.0", "0.5", "1.0")]
    assert spread["states"] == 6 and within[0] == pytest.approx(0.0, abs=1e-6)
    assert within[0] < within[1] < within[2]
    first = check_steering_authority(policy, demos, tmp_path / "out")
    policy.actions_from_noise = lambda *a: pytest.fail("measured twice")
    assert check_steering_authority(policy, demos, tmp_path / "out") == first
    assert check_steering_authority(policy, None, tmp_path / "other") is None
