"""One image convention on every path into the policy: uint8 pixels 0..255 (rescaled by the
encoder) or float in [0, 1]. The pretraining dataset, the evaluation loop and the RL collector
must hand the policy the same numbers for the same frames; a float image in 0..255 is refused.

(The bug this guards against: the dataset and the evaluation cast uint8 images to float 0..255,
which the encoder took as already scaled, while the collector passed uint8, which it divided by
255. A robosuite Can policy trained that way succeeded in 25 % of evaluation episodes and in 0 of
48 training-rollout episodes.)"""

import numpy as np
import pytest
import torch

from maniflow_policy_testlib import (POINT_CLOUD_SHAPE_META as POINT_META, SMALL_SEED_SHAPE_META,
                                   make_obs, make_policy)
from maniflow_rl.data import PointCloudSequenceDataset, ReplayBuffer
from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
from maniflow_rl.evaluation import evaluate_policy
from maniflow_rl.rl.rollout_collector import ManiFlowRolloutCollector

IMAGE = "robot0_eye_in_hand_image"
UINT8_META = {"obs": {**SMALL_SEED_SHAPE_META["obs"],
                      IMAGE: {"shape": [3, 16, 16], "type": "rgb", "dtype": "uint8"}},
              "action": SMALL_SEED_SHAPE_META["action"]}


def _obs_with_pixels(seed=0):
    obs = make_obs(SMALL_SEED_SHAPE_META, batch=3, seed=seed)
    pixels = torch.randint(0, 256, obs[IMAGE].shape, generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    return obs, pixels


def test_uint8_pixels_and_their_float_in_unit_range_give_the_same_features():
    policy = make_policy(SMALL_SEED_SHAPE_META).eval()
    obs, pixels = _obs_with_pixels()
    with torch.no_grad():
        ctx_u8, pooled_u8 = policy.encode_obs({**obs, IMAGE: pixels})
        ctx_f, pooled_f = policy.encode_obs({**obs, IMAGE: pixels.float() / 255.0})
        ctx_other, _ = policy.encode_obs({**obs, IMAGE: 1.0 - pixels.float() / 255.0})
    assert torch.allclose(ctx_u8, ctx_f, atol=1e-5) and torch.allclose(pooled_u8, pooled_f,
                                                                        atol=1e-5)
    assert not torch.allclose(ctx_u8, ctx_other, atol=1e-3)      # the image is read at all


def test_float_image_outside_unit_range_is_refused():
    policy = make_policy(SMALL_SEED_SHAPE_META)
    obs, pixels = _obs_with_pixels()
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\].*uint8"):
        policy.encode_obs({**obs, IMAGE: pixels.float()})         # 0..255 as float
    with pytest.raises(ValueError, match="float images must be in"):
        policy.sample_actions({**obs, IMAGE: pixels.float() - 128.0})


def test_dataset_gives_images_in_their_stored_uint8():
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.create_empty()
    for n in (6, 5):
        buffer.add_episode({
            "point_cloud": rng.standard_normal((n, 64, 6)).astype(np.float32),
            "state": rng.standard_normal((n, 9)).astype(np.float32),
            "img": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
            "action": rng.standard_normal((n, 10)).astype(np.float32)})
    ds = PointCloudSequenceDataset(buffer, horizon=4, n_obs_steps=2, n_action_steps=2)
    item = ds[3]
    assert item["obs"]["image"].dtype == torch.uint8
    assert item["obs"]["point_cloud"].dtype == torch.float32
    assert ds.get_normalizer_data()["image"].dtype == np.uint8


class RecordingPolicy(torch.nn.Module):
    """A real tiny policy that records the image tensors it is given."""

    def __init__(self, policy):
        super().__init__()
        self.policy, self.seen = policy, []
        for name in ("shape_meta", "n_obs_steps", "n_action_steps", "horizon", "action_dim"):
            setattr(self, name, getattr(policy, name))

    def predict_action(self, obs, generator=None):
        self.seen.append(obs[IMAGE])
        return self.policy.predict_action(obs, generator=generator)

    def sample_actions(self, obs, mode="train", generator=None):
        self.seen.append(obs[IMAGE])
        return self.policy.sample_actions(obs, mode=mode, generator=generator)

    def get_value(self, obs):
        return self.policy.get_value(obs)


def test_evaluation_and_collector_hand_the_policy_the_envs_uint8_pixels():
    base = make_policy(SMALL_SEED_SHAPE_META, n_action_steps=2).eval()
    policy = RecordingPolicy(base)
    runner = ManiFlowDummyEnvRunner(UINT8_META, num_envs=2, max_episode_steps=4)
    evaluate_policy(policy, runner, num_episodes=2, seed=0, progress=False)
    collector = ManiFlowRolloutCollector(policy, ManiFlowDummyEnvRunner(
        UINT8_META, num_envs=2, max_episode_steps=4))
    collector.collect(2)
    assert len(policy.seen) >= 4
    for images in policy.seen:
        assert images.dtype == torch.uint8 and int(images.max()) > 1


def test_version_1_checkpoint_of_an_image_policy_is_refused_others_load(tmp_path):
    """Version-1 image policies were pretrained on float 0..255 pixels: refused with a reason;
    version-1 policies without images, and any version-2 one, still load."""
    from maniflow_rl.utils.checkpoint import (CheckpointError, load_checkpoint_file,
                                              save_checkpoint_atomic)

    for meta, name in ((SMALL_SEED_SHAPE_META, "image"), (POINT_META, "points")):
        save_checkpoint_atomic({"kind": "pretrain", "shape_meta": meta}, tmp_path / f"{name}.pt")
        load_checkpoint_file(tmp_path / f"{name}.pt")                  # written now: version 2
        payload = torch.load(tmp_path / f"{name}.pt", weights_only=False)
        torch.save({**payload, "version": 1}, tmp_path / f"{name}_v1.pt")
    assert load_checkpoint_file(tmp_path / "points_v1.pt")["version"] == 1
    with pytest.raises(CheckpointError, match=r"image input.*robot0_eye_in_hand_image.*again"):
        load_checkpoint_file(tmp_path / "image_v1.pt")
