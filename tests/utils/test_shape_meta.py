"""The one shape_meta compatibility check used by pretraining, fine-tuning and resuming."""

from __future__ import annotations

import copy

import pytest

from maniflow_rl.utils.shape_meta import check_shape_meta_compatible

META = {"obs": {"point_cloud": {"shape": [512, 3]}, "agent_pos": {"shape": [9]}},
        "action": {"shape": [4]}}


def _check(provided, **kw):
    check_shape_meta_compatible(META, provided, required_name="the policy",
                                provided_name="the env", **kw)


def test_identical_and_superset_pass_but_superset_fails_when_exact():
    _check(copy.deepcopy(META), exact=True)
    wider = copy.deepcopy(META)
    wider["obs"]["image"] = {"shape": [3, 84, 84]}
    _check(wider)
    with pytest.raises(ValueError, match=r"observations \['image'\]"):
        _check(wider, exact=True)


def test_missing_key_names_the_key_and_what_is_there():
    provided = copy.deepcopy(META)
    del provided["obs"]["agent_pos"]
    with pytest.raises(ValueError, match=r"'agent_pos'.*does not provide.*\['point_cloud'\]"):
        _check(provided)


def test_wrong_obs_shape_gives_both_shapes_and_the_hint():
    provided = copy.deepcopy(META)
    provided["obs"]["point_cloud"]["shape"] = (256, 3)  # tuples compare equal to lists
    with pytest.raises(ValueError, match=r"expects \[512, 3\], the env has \[256, 3\] \(set N\)"):
        _check(provided, hint="set N")


def test_wrong_action_shape_fails_and_missing_action_is_not_checked():
    provided = copy.deepcopy(META)
    provided["action"]["shape"] = [7]
    with pytest.raises(ValueError, match=r"action shape mismatch.*\[4\].*\[7\]"):
        _check(provided)
    del provided["action"]
    _check(provided)
