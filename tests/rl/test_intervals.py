"""When the trainers evaluate (rl/intervals.py), and the shared non-finite stop message."""

import pytest

from maniflow_rl.rl.intervals import evaluation_due
from maniflow_rl.rl.nonfinite import skipped_updates_message


def _due(last, interval):
    return [s for s in range(1, last + 1) if evaluation_due(s, last, interval)]


def test_interval_evaluations_and_the_last_step():
    # Can's DSRL run: 625 vector steps, every 156 -> 624 is one step before the last: skipped
    assert _due(625, 156) == [156, 312, 468, 625]
    assert _due(660, 156) == [156, 312, 468, 660]   # 624 is 36 steps before: < 156 // 4 = 39
    assert _due(663, 156) == [156, 312, 468, 624, 663]   # 39 steps before: kept
    # PPO's small intervals keep every multiple (interval // 4 <= 1)
    assert _due(20, 6) == [6, 12, 18, 20]
    assert _due(9, 4) == [4, 8, 9]
    assert _due(12, 6) == [6, 12]
    assert _due(3, 1) == [1, 2, 3]


def test_bad_interval_and_stop_message():
    with pytest.raises(ValueError, match="eval_interval must be >= 1"):
        evaluation_due(1, 10, 0)
    ppo = skipped_updates_message(10, 7, None)
    assert ppo.startswith("training stopped at iteration 7: 10 optimizer steps")
    assert "no checkpoint was written" in ppo and "PPOConfig.max_consecutive" in ppo
    dsrl = skipped_updates_message(10, 42, "run/latest.pt", config_name="DSRLConfig",
                                   step_name="vector step")
    assert dsrl.startswith("training stopped at vector step 42:")
    assert "run/latest.pt, is intact" in dsrl and "DSRLConfig.max_consecutive" in dsrl
