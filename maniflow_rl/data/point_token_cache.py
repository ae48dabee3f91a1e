"""Point-token cache: every stored point-cloud frame cut once to the points the encoder keeps.

The encoder keeps ``num_point_tokens`` points of each frame, picked by farthest point sampling
on the normalized xyz (or a fixed stride): deterministic given the frame and the normalizer,
so the pick is the same in every epoch, and computing it at every training step (for the
student and again for the EMA teacher) cost ~30 % of a pretraining step on CPU. Cut once when
the dataset is built, the frames are ``[T, k, C]``; the encoder takes a cloud of exactly
``num_point_tokens`` (< N) points as already sampled (``PointNetTokenizer.forward``), so the
tokens are the ones the full frames give, in the same order
(``tests/data/test_point_token_cache.py``). Clouds of at most ``num_point_tokens`` points are
left as they are (the encoder samples them as before).

The cut frames stay in raw units (the normalizer is per-channel affine, so normalizing the kept
points equals keeping the normalized points). Augmentations that move points (jitter) apply
after the cut, as they would to the tokens of the full cloud.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def presample_point_cloud(policy, obs_key: str, frames: np.ndarray,
                          chunk: int = 1024) -> np.ndarray:
    """Raw frames ``[T, N, C]`` -> the raw points ``[T, k, C]`` that ``policy``'s encoder keeps
    (``k = min(num_point_tokens, N)``), picked on the normalized xyz as the encoder does."""
    tokenizer = policy.obs_encoder.tokenizers[obs_key]
    if frames.shape[1] <= tokenizer.num_tokens:     # nothing to cut: the encoder samples it
        return np.asarray(frames, dtype=np.float32)
    kept = []
    for start in range(0, len(frames), chunk):
        raw = torch.as_tensor(frames[start:start + chunk], dtype=torch.float32,
                              device=policy.device)
        xyz = policy.normalizer.normalize(obs_key, raw)[..., :3]
        idx = tokenizer.sample_indices(xyz)
        kept.append(torch.gather(raw, 1, idx.unsqueeze(-1).expand(-1, -1, raw.shape[-1]))
                    .cpu().numpy())
    return np.concatenate(kept) if kept else np.asarray(frames, dtype=np.float32)[:, :0]


def cache_dataset_point_tokens(dataset, policy) -> None:
    """Cut ``dataset``'s point clouds to ``policy``'s point tokens (its normalizer fitted)."""
    dataset.cache_point_tokens(lambda key, frames: presample_point_cloud(policy, key, frames))
