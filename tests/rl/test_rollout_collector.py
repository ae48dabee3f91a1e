"""ManiFlowRolloutCollector with a fake policy: shapes, chunk semantics, truncation, errors."""

import numpy as np
import pytest
import torch

from maniflow_rl.envs.dummy import ManiFlowDummyEnvRunner
from maniflow_rl.rl.rollout_collector import CollectorConfig, ManiFlowRolloutCollector

STATE_META = {"obs": {"state": {"shape": [3]}}, "action": {"shape": [2]}}


class FakePolicy:
    """The policy interface with deterministic outputs.

    ``get_value(obs) = 10 * state[-1, 0] + state[-2, 0]`` (uses both history frames);
    ``actions`` = ``expert_matrix @ state[-1, :3]`` when given, else zeros.
    """

    def __init__(self, shape_meta, n_obs_steps=2, n_action_steps=3, horizon=6,
                 num_inference_steps=2, expert_matrix=None):
        self.shape_meta = shape_meta
        self.n_obs_steps, self.n_action_steps, self.horizon = n_obs_steps, n_action_steps, horizon
        self.action_dim = shape_meta["action"]["shape"][0]
        self.num_inference_steps = num_inference_steps
        self.noise_method = "flow_sde"
        self.expert_matrix = expert_matrix
        self.modes = []

    def get_value(self, obs):
        state = obs["state"].float()
        return 10 * state[:, -1, 0] + state[:, -2, 0]

    def sample_actions(self, obs, mode="train"):
        self.modes.append(mode)
        B, K = obs["state"].shape[0], self.num_inference_steps
        Ca, Da = self.n_action_steps, self.action_dim
        actions = torch.zeros(B, Ca, Da)
        if self.expert_matrix is not None:
            target = obs["state"][:, -1, :3].float() @ torch.as_tensor(self.expert_matrix).float().T
            actions = target[:, None].expand(B, Ca, Da).clone()
        return {"actions": actions, "chains": torch.zeros(B, K + 1, self.horizon, Da),
                "denoise_inds": torch.zeros(B, K, dtype=torch.long),
                "logprobs": torch.full((B, Ca, Da), -1.0), "values": self.get_value(obs)}


class CountingEnvRunner:
    """Env i ends its episodes after ``lengths[i]`` steps (terminated, or truncated if
    ``truncate[i]``). state = [step in episode, env index, episodes finished]; reward = step."""

    def __init__(self, lengths=(4, 3), truncate=(False, True)):
        self.lengths, self.truncate = np.array(lengths), np.array(truncate)
        self.num_envs = len(lengths)

    def _obs(self):
        state = np.stack([self.t, np.arange(self.num_envs), self.episodes], axis=1)
        return {"state": state.astype(np.float32)}

    def reset(self):
        self.t = np.zeros(self.num_envs)
        self.episodes = np.zeros(self.num_envs)
        return self._obs()

    def step(self, actions):
        assert actions.shape == (self.num_envs, 2)
        self.t += 1
        rewards = self.t.astype(np.float32).copy()
        dones = self.t >= self.lengths
        final_obs = self._obs()
        self.t[dones] = 0
        self.episodes[dones] += 1
        return {"obs": self._obs(), "rewards": rewards, "dones": dones,
                "truncated": dones & self.truncate, "final_obs": final_obs}


class HoldingCountingEnvRunner(CountingEnvRunner):
    """CountingEnvRunner that holds the envs outside ``active`` (env-runner interface)."""

    accepts_active_mask = True

    def reset(self):
        self.held_steps = 0
        return super().reset()

    def step(self, actions, active=None):
        active = np.ones(self.num_envs, bool) if active is None else np.asarray(active, bool)
        self.held_steps += int((~active).sum())
        self.t += active
        rewards = np.where(active, self.t, 0).astype(np.float32)
        dones = active & (self.t >= self.lengths)
        final_obs = self._obs()
        self.t[dones] = 0
        self.episodes[dones] += 1
        return {"obs": self._obs(), "rewards": rewards, "dones": dones,
                "truncated": dones & self.truncate, "final_obs": final_obs}


def test_runner_that_holds_envs_starts_the_new_episode_at_the_next_chunk():
    runner = HoldingCountingEnvRunner()
    collector = ManiFlowRolloutCollector(FakePolicy(STATE_META), runner, CollectorConfig(
        max_steps_per_episode=100, action_chunk_size=3, obs_chunk_size=2))
    batch, stats = collector.collect(3)
    state = batch.obs["state"]
    # env 0 (terminates after 4 steps): chunk 1 ends at its first sub-step (reward 4), the env
    # is held for the 2 others; chunk 2 = the new episode's steps 1, 2, 3 (no leftover actions)
    assert runner.held_steps == 2
    assert batch.rewards[:, 0].tolist() == [6.0, 4.0, 6.0]
    assert batch.dones[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert state[2, 0].tolist() == [[0, 0, 1], [0, 0, 1]]   # reset frame repeated
    # env 1 (episodes of exactly one chunk) is never held: as with any runner
    assert batch.rewards[:, 1].tolist() == [6.0, 6.0, 6.0]
    assert batch.truncated[:, 1].tolist() == [1.0, 1.0, 1.0]
    assert sorted(stats["episode_lengths"]) == [3, 3, 3, 4]
    assert batch.last_values.tolist() == [32.0, 0.0]   # env 0: [step 2, step 3] frames
    # 3 chunks x 3 sub-steps x 2 envs budgeted; env 0's 2 held sub-steps never ran
    assert stats["env_steps"] == 18 and stats["executed_env_steps"] == 18 - runner.held_steps


class ChunkingCountingEnvRunner(HoldingCountingEnvRunner):
    """HoldingCountingEnvRunner with ``step_chunk`` (one request per chunk), counting requests."""

    def step(self, actions, active=None):
        self.requests += 1
        return super().step(actions, active)

    def step_chunk(self, actions, active=None):
        self.chunk_requests += 1
        stepping, outputs = np.array(active, bool), []
        for sub_step in range(actions.shape[1]):
            out = super().step(actions[:, sub_step], stepping.copy())
            stepping &= ~out["dones"]
            outputs.append(out)
        return outputs

    def reset(self):
        self.requests = self.chunk_requests = 0
        return super().reset()


def test_a_runner_with_step_chunk_gets_one_request_per_chunk_and_the_same_batch():
    from maniflow_rl.envs.base import runs_chunks

    config = CollectorConfig(max_steps_per_episode=100, action_chunk_size=3, obs_chunk_size=2)
    batches = {}
    for name, runner in (("per-step", HoldingCountingEnvRunner()),
                         ("chunks", ChunkingCountingEnvRunner())):
        batches[name] = ManiFlowRolloutCollector(FakePolicy(STATE_META), runner, config).collect(4)
    chunked = runner
    assert (chunked.chunk_requests, chunked.requests) == (4, 0)
    (a, a_stats), (b, b_stats) = batches["per-step"], batches["chunks"]
    for field in ("rewards", "dones", "truncated", "last_values"):
        assert torch.equal(torch.as_tensor(getattr(a, field)), torch.as_tensor(getattr(b, field)))
    assert torch.equal(torch.as_tensor(a.obs["state"]), torch.as_tensor(b.obs["state"]))
    assert a_stats["executed_env_steps"] == b_stats["executed_env_steps"] < a_stats["env_steps"]

    class OverridesStep(ChunkingCountingEnvRunner):   # e.g. a fault injector: per sub-step
        def step(self, actions, active=None):
            return super().step(actions, active)

    class Delegates:   # a wrapper reaching step_chunk through __getattr__: per sub-step
        accepts_active_mask = True

        def __init__(self, inner):
            self.inner = inner

        def step(self, actions, active=None):
            return self.inner.step(actions, active)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    assert runs_chunks(ChunkingCountingEnvRunner())
    assert not runs_chunks(OverridesStep()) and not runs_chunks(Delegates(chunked))
    assert not runs_chunks(HoldingCountingEnvRunner())


def test_runner_subclass_without_active_argument_is_not_held():
    class Wrapped(HoldingCountingEnvRunner):
        def step(self, actions):   # overrides step without ``active``
            return super().step(actions)

    collector = ManiFlowRolloutCollector(FakePolicy(STATE_META), Wrapped(), CollectorConfig(
        max_steps_per_episode=100, action_chunk_size=3, obs_chunk_size=2))
    batch, stats = collector.collect(3)
    assert batch.rewards[:, 0].tolist() == [6.0, 4.0, 7.0]   # leftover sub-steps ran
    assert stats["executed_env_steps"] == stats["env_steps"] == 18


def test_chunk_semantics_rewards_masking_history_and_truncation():
    """A runner that cannot hold envs: leftover sub-steps run in the new episode, masked."""
    policy = FakePolicy(STATE_META)
    collector = ManiFlowRolloutCollector(policy, CountingEnvRunner(), CollectorConfig(
        max_steps_per_episode=100, action_chunk_size=3, obs_chunk_size=2))
    batch, stats = collector.collect(3)
    state = batch.obs["state"]
    assert state.shape == (3, 2, 2, 3)
    # env 0 (terminates after 4 steps): chunk 0 = steps 1,2,3; chunk 1 ends at its first
    # sub-step (reward 4); the new episode's steps 1,2 are masked; chunk 2 = steps 3,4 -> done
    assert batch.rewards[:, 0].tolist() == [6.0, 4.0, 7.0]
    assert batch.dones[:, 0].tolist() == [0.0, 1.0, 1.0]
    assert batch.truncated[:, 0].tolist() == [0.0, 0.0, 0.0]
    # history after the mid-chunk reset continues with the masked sub-steps' frames
    assert state[2, 0].tolist() == [[1, 0, 1], [2, 0, 1]]
    # env 1 (truncated after exactly one chunk): every chunk is 1+2+3, ends truncated
    assert batch.rewards[:, 1].tolist() == [6.0, 6.0, 6.0]
    assert batch.truncated[:, 1].tolist() == [1.0, 1.0, 1.0]
    # first frame repeated at the start and after a reset at the end of a chunk
    assert state[0, 1].tolist() == [[0, 1, 0], [0, 1, 0]]
    assert state[1, 1].tolist() == [[0, 1, 1], [0, 1, 1]]
    # final history = [frame after step 2, final frame (step 3)] -> 10*3 + 2
    assert batch.final_values[:, 1].tolist() == [32.0, 32.0, 32.0]
    assert batch.final_values[:, 0].tolist() == [0.0, 0.0, 0.0]   # terminated: no bootstrap
    # last history: env 0 = [reset frame of episode 3, its step 1]; env 1 = reset frame twice
    assert batch.last_values.tolist() == [10.0, 0.0]
    assert batch.values[0].tolist() == [0.0, 0.0]
    # episode stats count every real sub-step (masked ones included)
    assert sorted(zip(stats["episode_lengths"], stats["episode_returns"])) == (
        [(3, 6.0)] * 3 + [(4, 10.0)] * 2)
    assert stats["env_steps"] == 3 * 3 * 2 and stats["sps"] > 0
    assert torch.equal(batch.group_ids, torch.tensor([0, 1]))
    assert torch.equal(batch.mask, torch.ones(3, 2))


def test_collector_enforces_max_steps_per_episode():
    env = ManiFlowDummyEnvRunner(STATE_META, num_envs=2, max_episode_steps=100)
    collector = ManiFlowRolloutCollector(FakePolicy(STATE_META), env, CollectorConfig(
        max_steps_per_episode=5, action_chunk_size=3, obs_chunk_size=2))
    batch, stats = collector.collect(3)
    # sub-step 5 is the 2nd sub-step of chunk 1 -> truncated there, bootstrap recorded
    assert batch.dones[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert batch.truncated[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert (batch.final_values[1] != 0).all() and (batch.final_values[[0, 2]] == 0).all()
    assert stats["episode_lengths"] == [5, 5]
    # the history restarts from the frame at truncation, then the masked sub-step's frame
    assert not torch.equal(batch.obs["state"][2, 0, 0], batch.obs["state"][2, 0, 1])


def test_shapes_on_dummy_env_with_all_modalities():
    shape_meta = {"obs": {"point_cloud": {"shape": [32, 6], "type": "point_cloud"},
                          "image": {"shape": [3, 8, 8], "type": "rgb"},
                          "state": {"shape": [5]}},
                  "action": {"shape": [4]}}
    env = ManiFlowDummyEnvRunner(shape_meta, num_envs=3, max_episode_steps=6)
    policy = FakePolicy(shape_meta, n_action_steps=4, horizon=8, num_inference_steps=3,
                        expert_matrix=env.target_matrix)
    collector = ManiFlowRolloutCollector(policy, env, group_size=3)
    batch, stats = collector.collect(4)
    T, N = 4, 3
    assert batch.obs["point_cloud"].shape == (T, N, 2, 32, 6)
    assert batch.obs["image"].shape == (T, N, 2, 3, 8, 8)
    assert batch.chains.shape == (T, N, 4, 8, 4)
    assert batch.denoise_inds.shape == (T, N, 3)
    assert batch.actions.shape == batch.logprobs.shape == (T, N, 4, 4)
    for name in ("values", "rewards", "dones", "truncated", "final_values", "mask"):
        assert getattr(batch, name).shape == (T, N)
    assert batch.last_values.shape == (N,) and batch.group_ids.tolist() == [0, 0, 0]
    # the expert fake policy solves the dummy task (reward ~1 per counted sub-step); the
    # 6-step episodes end at sub-step 2 of chunks 1 and 3, the envs are held for the rest
    counted_sub_steps = torch.tensor([4.0, 2.0, 4.0, 2.0])[:, None].expand(T, N)
    assert torch.allclose(batch.rewards, counted_sub_steps, atol=0.01)
    assert batch.dones[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert stats["episode_lengths"] == [6] * 6 and all(stats["episode_successes"])


def test_clear_errors():
    env = CountingEnvRunner()
    with pytest.raises(ValueError, match="action_chunk_size=8 but policy.n_action_steps=3"):
        ManiFlowRolloutCollector(FakePolicy(STATE_META), env, CollectorConfig())
    with pytest.raises(ValueError, match="obs_chunk_size"):
        ManiFlowRolloutCollector(FakePolicy(STATE_META), env, CollectorConfig(
            action_chunk_size=3, obs_chunk_size=1))
    missing = {"obs": {"state": {"shape": [3]}, "point_cloud": {"shape": [16, 3]}},
               "action": {"shape": [2]}}
    with pytest.raises(ValueError, match="missing key 'point_cloud'"):
        ManiFlowRolloutCollector(FakePolicy(missing), env).collect(1)
    wrong = {"obs": {"state": {"shape": [4]}}, "action": {"shape": [2]}}
    with pytest.raises(ValueError, match=r"\['state'\] has shape \(2, 3\), expected \(2, 4\)"):
        ManiFlowRolloutCollector(FakePolicy(wrong), env).collect(1)
