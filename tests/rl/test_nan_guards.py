"""NaN guards (issue 12, item 1), through the Python API: bad env values are caught at the step
(error, or dropped and counted), non-finite minibatch steps are skipped, a non-finite model is
never saved, and too many skipped steps in a row stop the run with latest.pt intact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maniflow_rl import ManiFlowDummyEnvRunner, create_maniflow_ppo_trainer
from maniflow_rl.rl.env_input_guard import NonFiniteEnvInputError
from maniflow_rl.rl.nonfinite import NonFiniteTrainingError
from maniflow_rl.utils.checkpoint import NonFiniteStateError, load_checkpoint_file

SHAPE_META = {"obs": {"point_cloud": {"shape": [64, 3], "type": "point_cloud"},
                      "agent_pos": {"shape": [4]}},
              "action": {"shape": [2]}}
TINY_POLICY = {"horizon": 4, "n_action_steps": 2, "n_obs_steps": 1, "num_inference_steps": 2,
               "n_emb": 32, "n_layer": 1, "n_head": 2, "noise_method": "flow_noise"}


class FaultyEnvRunner:
    """Wraps an env runner; ``faults`` maps a 1-based ``step()`` call number to
    ``(env, key, value)``: ``rewards[env]`` (key ``'reward'``) or the last element of
    ``obs[key][env]`` becomes ``value`` at that step."""

    def __init__(self, inner, faults):
        self.inner, self.faults, self.steps = inner, dict(faults), 0
        self.returned = []      # the obs of every step, as returned
        self.num_envs, self.shape_meta = inner.num_envs, inner.shape_meta
        self.max_episode_steps = inner.max_episode_steps

    def seed(self, seeds):
        self.inner.seed(seeds)

    def reset(self):
        return self.inner.reset()

    def step(self, actions):
        out = self.inner.step(actions)
        self.steps += 1
        if self.steps in self.faults:
            env, key, value = self.faults[self.steps]
            if key == "reward":
                out["rewards"] = np.array(out["rewards"], dtype=np.float32)
                out["rewards"][env] = value
            else:
                out["obs"] = {k: np.array(v) for k, v in out["obs"].items()}
                out["obs"][key].reshape(self.num_envs, -1)[env, -1] = value
        self.returned.append({k: np.array(v) for k, v in out["obs"].items()})
        return out


def _trainer(tmp_path, faults=None, **ppo):
    cfg = dict(total_timesteps=10_000, num_envs=4, num_steps_per_rollout=8, batch_size=16,
               learning_rate=1e-3, critic_learning_rate=3e-3, update_epochs=2,
               save_interval=1000, log_interval=1000, eval_interval=1000, eval_episodes=0,
               save_path=str(tmp_path / "ckpt"), seed=0)
    cfg.update(ppo)
    runner = FaultyEnvRunner(ManiFlowDummyEnvRunner(SHAPE_META, num_envs=4, seed=0), faults or {})
    return create_maniflow_ppo_trainer(shape_meta=SHAPE_META, ppo_config=cfg,
                                       policy_config=TINY_POLICY, env_runner=runner)


def _state(module):
    """The parameters (buffers such as noise-schedule counters move with every rollout)."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True)


def _optimizer_tensors(optimizer):
    return {(pid, name): t.clone() for pid, st in optimizer.state_dict()["state"].items()
            for name, t in st.items() if torch.is_tensor(t)}


# --------------------------------------------------------------------- bad env values: error
@pytest.mark.parametrize("key, value, what, detail", [
    ("reward", float("nan"), "reward", "NaN"),
    ("reward", float("inf"), "reward", "inf"),
    ("point_cloud", float("nan"), "observation 'point_cloud'", "NaN"),
    ("agent_pos", 1e30, "observation 'agent_pos'", r"\|x\| = 1e\+30 > max_abs_env_value"),
])
def test_bad_env_value_is_an_error_naming_env_key_and_step(tmp_path, key, value, what, detail):
    trainer = _trainer(tmp_path, faults={5: (2, key, value)})
    before = _state(trainer.policy)
    with pytest.raises(NonFiniteEnvInputError,
                       match=rf"env 2 returned a bad {what} from step\(\) at env step 5: {detail}"):
        trainer.train_iteration()
    _assert_same_state(before, _state(trainer.policy))
    assert not (tmp_path / "ckpt" / "latest.pt").exists()


def test_max_abs_env_value_threshold_is_configurable(tmp_path):
    trainer = _trainer(tmp_path, faults={3: (0, "agent_pos", 1e30)}, max_abs_env_value=None)
    trainer.train_iteration()     # 1e30 is finite: accepted when the magnitude check is off
    trainer = _trainer(tmp_path, faults={3: (0, "agent_pos", 50.0)}, max_abs_env_value=10.0)
    with pytest.raises(NonFiniteEnvInputError, match=r"\|x\| = 50 > max_abs_env_value=10"):
        trainer.train_iteration()
    with pytest.raises(ValueError, match="nonfinite_policy must be one of"):
        _trainer(tmp_path, nonfinite_policy="ignore")
    with pytest.raises(ValueError, match="max_abs_env_value must be > 0"):
        _trainer(tmp_path, max_abs_env_value=0.0)


# --------------------------------------------------------------------- bad env values: drop
FAULTS = {3: (1, "reward", float("nan")), 8: (2, "point_cloud", float("nan")),
          12: (0, "agent_pos", 1e30)}


def test_drop_mode_masks_the_decision_points_and_keeps_the_batch_finite(tmp_path):
    trainer = _trainer(tmp_path, faults=FAULTS, nonfinite_policy="drop")
    batch, stats = trainer.collector.collect(8)
    assert stats["nonfinite_dropped"] == 3 and trainer.collector.nonfinite_dropped == 3
    # n_action_steps = 2: env step s belongs to decision point (s - 1) // 2
    expected = torch.ones(8, 4)
    expected[1, 1] = expected[3, 2] = expected[5, 0] = 0.0
    torch.testing.assert_close(batch.mask, expected)
    for key, value in batch.obs.items():
        assert torch.isfinite(value).all() and value.abs().max() < 1e6, key
    assert torch.isfinite(batch.rewards).all()
    # the bad point-cloud frame (step 8, env 2) was replaced by env 2's previous frame (step 7)
    returned = trainer.env_runner.returned
    assert np.isnan(returned[7]["point_cloud"][2]).any()
    np.testing.assert_array_equal(batch.obs["point_cloud"][4, 2, -1].numpy(),
                                  returned[6]["point_cloud"][2])
    np.testing.assert_array_equal(batch.obs["point_cloud"][4, 1, -1].numpy(),
                                  returned[7]["point_cloud"][1])


def test_drop_mode_outcome_tells_off_policy_consumers_what_was_dropped(tmp_path):
    trainer = _trainer(tmp_path, faults={1: (3, "reward", float("nan"))}, nonfinite_policy="drop")
    outcome, _ = trainer.collector.execute(np.zeros((4, 2, 2), dtype=np.float32))
    assert outcome.dropped.tolist() == [False, False, False, True]
    assert outcome.nonfinite_dropped == 1 and np.isfinite(outcome.rewards).all()


def test_drop_mode_trains_through_faults_with_finite_weights_and_counts_them(tmp_path):
    trainer = _trainer(tmp_path, faults=FAULTS, nonfinite_policy="drop", save_interval=1)
    trainer.train(num_iterations=2, progress=False)
    assert [h["rollout/nonfinite_dropped"] for h in trainer.history] == [3.0, 0.0]
    for name, value in trainer.policy.state_dict().items():
        assert torch.isfinite(value).all(), name
    payload = load_checkpoint_file(tmp_path / "ckpt" / "latest.pt")
    assert payload["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in payload["policy_state_dict"].values())


# --------------------------------------------------------------------- non-finite updates
def test_nan_loss_skips_the_step_and_leaves_weights_and_optimizer_untouched(tmp_path,
                                                                          monkeypatch):
    trainer = _trainer(tmp_path)
    trainer.train_iteration()                     # a normal update: optimizer state exists
    weights, opt_state = _state(trainer.policy), _optimizer_tensors(trainer.optimizer)
    steps = {pid: st["step"].clone() for pid, st in trainer.optimizer.state_dict()["state"].items()}
    import maniflow_rl.rl.ppo.update as ppo_update_module
    monkeypatch.setattr(ppo_update_module, "value_loss",
                        lambda values, *a, **k: values.sum() * float("nan"))
    metrics = trainer.train_iteration()
    assert metrics["train/skipped_updates"] == 4.0          # 32 samples / 16 x 2 epochs
    assert metrics["train/num_minibatches"] == 0.0
    assert metrics["train/consecutive_skipped_updates"] == 4.0
    _assert_same_state(weights, _state(trainer.policy))
    after = trainer.optimizer.state_dict()["state"]
    for (pid, name), tensor in opt_state.items():
        torch.testing.assert_close(after[pid][name], tensor, rtol=0, atol=0)
    assert all(torch.equal(after[pid]["step"], step) for pid, step in steps.items())
    monkeypatch.undo()
    metrics = trainer.train_iteration()           # finite again: steps resume, count resets
    assert metrics["train/skipped_updates"] == 0.0
    assert metrics["train/consecutive_skipped_updates"] == 0.0


def test_nan_gradient_with_finite_loss_skips_the_step(tmp_path):
    trainer = _trainer(tmp_path)
    weights = _state(trainer.policy)
    param = trainer.actor_params[0]
    handle = param.register_hook(lambda grad: grad * float("nan"))
    metrics = trainer.train_iteration()
    handle.remove()
    assert metrics["train/skipped_updates"] == 4.0 and "train/policy_loss" not in metrics
    _assert_same_state(weights, _state(trainer.policy))
    assert trainer.optimizer.state_dict()["state"] == {}   # Adam never stepped


def test_consecutive_skipped_updates_stop_the_run_with_latest_intact(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, save_interval=1, max_consecutive_skipped_updates=6)
    trainer.train_iteration()
    latest = tmp_path / "ckpt" / "latest.pt"
    import maniflow_rl.rl.ppo.update as ppo_update_module
    monkeypatch.setattr(ppo_update_module, "value_loss",
                        lambda values, *a, **k: values.sum() * float("nan"))
    trainer.train_iteration()                      # 4 skipped (< 6): weights still finite
    assert load_checkpoint_file(latest)["iteration"] == 2
    saved = latest.read_bytes()
    with pytest.raises(NonFiniteTrainingError, match=r"8 optimizer steps in a row were "
                                                     r"skipped .*/ckpt/latest\.pt, is intact"):
        trainer.train(progress=False)
    assert trainer.iteration == 3 and latest.read_bytes() == saved
    assert not (tmp_path / "ckpt" / "checkpoint_3.pt").exists()
    payload = load_checkpoint_file(latest)
    assert all(torch.isfinite(v).all() for v in payload["policy_state_dict"].values())


# --------------------------------------------------------------------- checkpoints
def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = _trainer(tmp_path, save_interval=1)
    trainer.train_iteration()
    ckpt_dir = tmp_path / "ckpt"
    saved = {p.name: p.read_bytes() for p in ckpt_dir.glob("*.pt")}
    assert set(saved) == {"checkpoint_1.pt", "latest.pt"}
    name, param = next(iter(trainer.policy.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteStateError, match=rf"refusing to save .*'{name}' \(1 NaN, 0 inf\)"):
        trainer.save_checkpoint()
    with pytest.raises(NonFiniteStateError, match="refusing"):
        trainer.save_checkpoint(tmp_path / "elsewhere.pt")
    assert {p.name: p.read_bytes() for p in ckpt_dir.glob("*.pt")} == saved
    assert not (tmp_path / "elsewhere.pt").exists() and not list(ckpt_dir.glob(".*.tmp"))
