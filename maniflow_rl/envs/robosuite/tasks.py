"""The robosuite tasks we wrap, their names and per-task settings.

Names: ``robosuite/lift``, ``robosuite/can``, ``robosuite/square`` (robomimic's names for
robosuite's ``Lift``, ``PickPlaceCan`` and ``NutAssemblySquare`` with one Panda arm).
``max_episode_steps`` follows robomimic's rollout horizons for its proficient-human datasets
(Lift 400 would be generous for a scripted expert; these are the limits its policies get).
``workspace_bounds`` is the point cloud's crop box in world metres: the table top and the
space above it where the objects and the gripper move (the table surface itself is cut off,
as DP3 does, so the points fall on what can move).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

ROBOSUITE_PREFIX = "robosuite/"
ACTION_MODES = ("absolute", "delta")   # 10-D absolute pose (6-D rotation) | 7-D delta OSC pose
# what a policy observes on robosuite (``policy.obs``): the specification's shape_meta keys, or
# the privileged state (the sanity baseline, as on MetaWorld)
ROBOSUITE_POLICY_OBS = {
    "point_cloud": ("point_cloud", "robot0_eye_in_hand_image", "robot0_eef_pos",
                    "robot0_eef_quat", "robot0_gripper_qpos"),
    "state": ("full_state",)}


@dataclass(frozen=True)
class RobosuiteTask:
    name: str                 # our name, e.g. "robosuite/lift"
    env_name: str             # robosuite's environment class
    max_episode_steps: int    # at control_freq = 20 Hz
    workspace_bounds: tuple   # ((xmin, ymin, zmin), (xmax, ymax, zmax)) in world metres
    cameras: tuple            # depth cameras fused into the point cloud


TASKS = {
    "lift": RobosuiteTask("robosuite/lift", "Lift", 200,
                          ((-0.35, -0.35, 0.805), (0.35, 0.35, 1.3)), ("agentview", "sideview")),
    # the can's bin only, inside its walls (bin1 at y -0.25, 0.39 x 0.49 m): with both bins in
    # the box the can got 4-6 of 1,024 points and none of the encoder's 64 point tokens, and
    # imitation never found it; here ~70 points and 7-9 tokens (the rest: the gripper). The
    # target bin is fixed, so proprioception locates it; over it the crop is empty.
    "can": RobosuiteTask("robosuite/can", "PickPlaceCan", 400,
                         ((-0.08, -0.48, 0.84), (0.28, -0.02, 1.3)), ("agentview", "birdview")),
    "square": RobosuiteTask("robosuite/square", "NutAssemblySquare", 400,
                            ((-0.35, -0.35, 0.825), (0.4, 0.35, 1.3)), ("agentview", "sideview")),
}


def is_robosuite_task(name: str) -> bool:
    return isinstance(name, str) and name.lower().startswith(ROBOSUITE_PREFIX)


def resolve_robosuite_task(name: str) -> RobosuiteTask:
    """``robosuite/lift`` (or ``lift``, any case) -> its :class:`RobosuiteTask`; a ``ValueError``
    naming the close matches for anything else."""
    key = name.lower().removeprefix(ROBOSUITE_PREFIX).strip()
    if key in TASKS:
        return TASKS[key]
    close = difflib.get_close_matches(key, list(TASKS), n=3)
    hint = f"; did you mean {', '.join(ROBOSUITE_PREFIX + c for c in close)}?" if close else ""
    raise ValueError(f"unknown robosuite task {name!r} (known: "
                     f"{', '.join(t.name for t in TASKS.values())}){hint}")
