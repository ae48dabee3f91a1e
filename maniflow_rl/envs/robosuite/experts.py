"""Scripted experts for the robosuite tasks: waypoints from the simulator's object poses.

Each expert is a small state machine over phases ``(target position, yaw, gripper, until)``.
Every step it commands a pose ``max_step`` metres (and ``max_turn`` radians of yaw) closer to
the phase's target, with the gripper pointing down; a phase ends when its ``until`` test holds
(or after its step budget), then the next one starts from wherever the arm is. The commanded
pose goes out in the env's action mode: absolute (10-D, 6-D rotation) or delta (7-D OSC).

* Lift: above the cube -> down around it -> close -> lift 15 cm.
* Can: above the can -> down -> close -> lift -> above its target bin -> lower -> open.
* Square: above the nut's handle -> down -> close -> lift -> turn the nut square to the peg
  while carrying the nut's centre above the peg -> lower it over the peg -> open.

Yaw: the cube and the square nut are symmetric under quarter turns, so the gripper takes the
object yaw closest to its own modulo pi/2 (no needless spins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from maniflow_rl.envs.robosuite import rotation

# the controller's end-effector frame (robosuite's grip site) pointing down at yaw 0
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
GRIP_OPEN, GRIP_CLOSED = -1.0, 1.0


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def gripper_yaw(matrix: np.ndarray) -> float:
    """Yaw ``psi`` of a down-pointing gripper orientation ``yaw_matrix(psi) @ DOWN``."""
    relative = matrix @ DOWN.T
    return float(np.arctan2(relative[1, 0], relative[0, 0]))


def body_yaw(quat_wxyz: np.ndarray) -> float:
    w, x, y, z = quat_wxyz
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def nearest_quarter_turn(target: float, current: float) -> float:
    """``target + k pi/2`` closest to ``current``."""
    return current + (target - current + np.pi / 4) % (np.pi / 2) - np.pi / 4



@dataclass
class Phase:
    target: Callable[[], np.ndarray]      # position [3]
    yaw: Callable[[], float]
    gripper: float
    until: Callable[[], bool]
    max_steps: int = 80
    speed: float | None = None            # metres per step (None: the expert's max_step)


class WaypointExpert:
    """Follows ``phases()`` (built by a task subclass from the env's sim state)."""

    max_step = 0.02      # metres per step of the commanded position
    max_turn = 0.08      # radians of yaw per step
    lag_gain = 0.15      # integral correction of the controller's steady-state lag ...
    lag_window = 0.03    # ... learned while the arm is within this distance of the target
    max_lag = 0.04

    def __init__(self, env) -> None:
        self.env = env
        self.sim = env._rs.sim
        self.reset()

    def reset(self) -> None:
        self._phases: list[Phase] | None = None
        self._index = self._steps = 0
        self._command_pos = self._command_yaw = None
        self._lag = np.zeros(3)

    # --- sim state -----------------------------------------------------------------------
    def body_pos(self, body_id: int) -> np.ndarray:
        return np.array(self.sim.data.body_xpos[body_id])

    def body_quat(self, body_id: int) -> np.ndarray:
        return np.array(self.sim.data.body_xquat[body_id])

    def site_pos(self, name: str) -> np.ndarray:
        return np.array(self.sim.data.site_xpos[self.sim.model.site_name2id(name)])

    def eef(self) -> tuple[np.ndarray, float]:
        pos, matrix = self.env.eef_pose()
        return pos, gripper_yaw(matrix)

    def near(self, target: Callable[[], np.ndarray], tol: float = 0.01) -> Callable[[], bool]:
        return lambda: bool(np.linalg.norm(self.eef()[0] - target()) < tol)

    def settled_over(self, point: Callable[[], np.ndarray], goal: Callable[[], np.ndarray],
                     tol: float) -> Callable[[], bool]:
        """``point`` within ``tol`` of ``goal`` in xy and the arm (nearly) at rest."""
        previous = [None]

        def test() -> bool:
            pos = self.eef()[0]
            still = previous[0] is not None and np.linalg.norm(pos - previous[0]) < 0.002
            previous[0] = pos
            return bool(still and np.linalg.norm((point() - goal())[:2]) < tol)
        return test

    def waited(self, steps: int) -> Callable[[], bool]:
        return lambda: self._steps >= steps

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    # --- acting --------------------------------------------------------------------------
    def act(self) -> np.ndarray:
        if self._phases is None:
            self._phases = self.phases()
            self._command_pos, self._command_yaw = self.eef()
        phase = self._phases[min(self._index, len(self._phases) - 1)]
        if self._index < len(self._phases) - 1 and (phase.until() or
                                                    self._steps >= phase.max_steps):
            self._index, self._steps = self._index + 1, 0
            phase = self._phases[self._index]
            self._lag = np.zeros(3)   # a lag learned against a contact must not carry over
        self._steps += 1
        # OSC settles short of its command (gravity, a carried object): an integral term on
        # the remaining error near the target moves the command so the arm itself gets there
        target = phase.target()
        error = target - self.eef()[0]
        close = np.abs(error) < self.lag_window   # per axis: a descent keeps the xy term
        self._lag = np.clip(self._lag + self.lag_gain * error * close, -self.max_lag,
                            self.max_lag)
        step = target + self._lag - self._command_pos
        distance, speed = np.linalg.norm(step), phase.speed or self.max_step
        self._command_pos = self._command_pos + (step if distance <= speed
                                                 else step * speed / distance)
        turn = np.clip(phase.yaw() - self._command_yaw, -self.max_turn, self.max_turn)
        self._command_yaw = self._command_yaw + turn
        return self.to_action(self._command_pos, yaw_matrix(self._command_yaw) @ DOWN,
                              phase.gripper)

    def to_action(self, pos: np.ndarray, matrix: np.ndarray, gripper: float) -> np.ndarray:
        """A commanded world-frame pose in the env's action mode."""
        if self.env.action_mode == "absolute":
            return np.concatenate([pos, rotation.matrix_to_rotation_6d(matrix),
                                   [gripper]]).astype(np.float32)
        eef_pos, eef_matrix = self.env.eef_pose()
        delta_rot = rotation.matrix_to_axis_angle(matrix @ eef_matrix.T)
        return np.concatenate([np.clip((pos - eef_pos) / 0.05, -1, 1),
                               np.clip(delta_rot / 0.5, -1, 1), [gripper]]).astype(np.float32)


class LiftExpert(WaypointExpert):
    def phases(self) -> list[Phase]:
        cube = self.env._rs.cube_body_id
        pos = lambda dz: lambda: self.body_pos(cube) + [0.0, 0.0, dz]   # noqa: E731
        start_yaw = self.eef()[1]
        yaw = lambda: nearest_quarter_turn(body_yaw(self.body_quat(cube)), start_yaw)  # noqa
        return [Phase(pos(0.08), yaw, GRIP_OPEN, self.near(pos(0.08))),
                Phase(pos(0.0), yaw, GRIP_OPEN, self.near(pos(0.0), 0.012)),
                Phase(pos(0.0), yaw, GRIP_CLOSED, self.waited(12)),
                Phase(pos(0.2), yaw, GRIP_CLOSED, lambda: False, 200)]


class CanExpert(WaypointExpert):
    def phases(self) -> list[Phase]:
        rs = self.env._rs
        can = rs.obj_body_id[rs.obj_to_use]
        # the can's bin quadrant is 20 x 25 cm; its centre is at the arm's reach, so aim a few
        # centimetres towards the robot (still well inside the quadrant)
        goal = np.array(rs.target_bin_placements[rs.object_to_id[rs.obj_to_use.lower()]])
        goal[:2] += [-0.03, -0.05]
        start_yaw = self.eef()[1]
        yaw = lambda: start_yaw   # noqa: E731
        can_at = lambda dz: lambda: self.body_pos(can) + [0.0, 0.0, dz]   # noqa: E731
        carry_height = 1.0
        lifted = lambda: np.array([*self.body_pos(can)[:2], carry_height])   # noqa: E731
        above_goal = lambda: np.array([goal[0], goal[1], carry_height])   # noqa: E731
        lower_goal = lambda: np.array([goal[0], goal[1], goal[2] + 0.14])   # noqa: E731
        # carrying the can, the controller settles ~2-3 cm short of its command: loose tests
        return [Phase(can_at(0.08), yaw, GRIP_OPEN, self.near(can_at(0.08))),
                Phase(can_at(0.0), yaw, GRIP_OPEN, self.near(can_at(0.0), 0.012)),
                Phase(can_at(0.0), yaw, GRIP_CLOSED, self.waited(12)),
                Phase(lifted, yaw, GRIP_CLOSED, self.near(lifted, 0.04)),
                Phase(above_goal, yaw, GRIP_CLOSED, self.near(above_goal, 0.04), 150),
                Phase(lower_goal, yaw, GRIP_CLOSED, self.near(lower_goal, 0.04), 40),
                Phase(lower_goal, yaw, GRIP_OPEN, self.waited(8)),
                Phase(above_goal, yaw, GRIP_OPEN, lambda: False, 200)]   # away: success needs it


class SquareExpert(WaypointExpert):
    def phases(self) -> list[Phase]:
        rs = self.env._rs
        nut = rs.obj_body_id["SquareNut"]
        peg = self.body_pos(rs.peg1_body_id)
        handle = lambda dz: lambda: self.site_pos("SquareNut_handle_site") + [0, 0, dz]  # noqa
        start_yaw = self.eef()[1]
        grasp_yaw = nearest_quarter_turn(body_yaw(self.body_quat(nut)), start_yaw)
        yaw_grasp = lambda: grasp_yaw   # noqa: E731

        def yaw_square() -> float:   # turn the gripper so the nut's yaw becomes k pi/2
            nut_yaw, eef_yaw = body_yaw(self.body_quat(nut)), self.eef()[1]
            return eef_yaw + nearest_quarter_turn(0.0, nut_yaw) - nut_yaw

        def over_peg(height: float) -> Callable[[], np.ndarray]:
            def target() -> np.ndarray:   # gripper such that the nut's centre is above the peg
                offset = self.eef()[0] - self.site_pos("SquareNut_center_site")
                return np.array([peg[0] + offset[0], peg[1] + offset[1], height])
            return target

        lifted = lambda: np.array([*self.eef()[0][:2], 1.1])   # noqa: E731 (above the peg)
        center = lambda: self.site_pos("SquareNut_center_site")   # noqa: E731
        return [Phase(handle(0.08), yaw_grasp, GRIP_OPEN, self.near(handle(0.08))),
                Phase(handle(0.0), yaw_grasp, GRIP_OPEN, self.near(handle(0.0), 0.012)),
                Phase(handle(0.0), yaw_grasp, GRIP_CLOSED, self.waited(12)),
                Phase(lifted, yaw_grasp, GRIP_CLOSED, self.near(lifted, 0.02)),
                Phase(over_peg(1.1), yaw_square, GRIP_CLOSED,
                      self.settled_over(center, lambda: peg, 0.004), 150),
                Phase(over_peg(0.835), yaw_square, GRIP_CLOSED,
                      self.near(over_peg(0.835), 0.01), 60, speed=0.008),
                Phase(over_peg(0.835), yaw_square, GRIP_OPEN, lambda: False, 200)]


EXPERTS = {"robosuite/lift": LiftExpert, "robosuite/can": CanExpert,
           "robosuite/square": SquareExpert}


def make_expert(env) -> WaypointExpert:
    return EXPERTS[env.task](env)
