"""SimRobot and SimCamera: the tabletop scene behind the runtime's Robot and Camera interfaces.

They behave like drivers where it matters to the loop: commands are refused unless the robot
is active, `command` returns what was actually applied (clipped to the actuator ranges), and
deactivation holds the measured position with the gripper stopped where it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mujoco
import numpy as np
from vla_runtime.runtime.robot import Camera, Kinematics, Robot
from vla_runtime.runtime.sim.world import ARM_JOINTS, FINGER_TRAVEL, SimWorld
from vla_runtime.runtime.types import Frame, RobotState

logger = logging.getLogger(__name__)


class SimRobot(Robot):
    def __init__(self, world: SimWorld, name: str = "sim"):
        self.world = world
        self.name = name
        self.active = False
        self.commands_sent = 0  # commands that reached the simulated actuators
        lo = world.model.actuator_ctrlrange[world.arm_act, 0]
        hi = world.model.actuator_ctrlrange[world.arm_act, 1]
        self._ctrl_range = (lo, hi)  # rad, the servo's own clamp (the last line of defence)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return ARM_JOINTS

    @property
    def kinematics(self) -> Kinematics:
        return self.world.kinematics

    def activate(self) -> None:
        self.active = True

    def read_state(self, now: float) -> RobotState:
        w = self.world
        q = w.data.qpos[w.arm_qpos].copy()
        pos, rpy = w.kinematics.forward(q)
        return RobotState(q, pos, rpy, self._gripper_opening(), now)

    def command(self, joint_targets, gripper, now, period):
        if not self.active:
            raise RuntimeError(f"{self.name}: command refused while inactive; call activate() first")
        q = np.asarray(joint_targets, dtype=np.float64)
        if q.shape != (len(ARM_JOINTS),) or not np.all(np.isfinite(q)) or not np.isfinite(gripper):
            raise ValueError(f"{self.name}: command needs {len(ARM_JOINTS)} finite targets; nothing was sent")
        q = np.clip(q, *self._ctrl_range)
        g = float(np.clip(gripper, 0.0, 1.0))
        w = self.world
        w.data.ctrl[w.arm_act] = q
        w.data.ctrl[w.finger_act] = g * FINGER_TRAVEL
        w.step(period)
        self.commands_sent += 1
        return q, g

    def hold(self, now: float, period: float) -> None:
        """Servo to the measured joints and stop the fingers where they are (a held block stays held)."""
        w = self.world
        w.data.ctrl[w.arm_act] = w.data.qpos[w.arm_qpos]
        w.data.ctrl[w.finger_act] = w.data.qpos[w.finger_qpos]
        w.step(period)

    def deactivate(self) -> None:
        if self.active:
            w = self.world
            w.data.ctrl[w.arm_act] = w.data.qpos[w.arm_qpos]
            w.data.ctrl[w.finger_act] = w.data.qpos[w.finger_qpos]
        self.active = False

    def confirm_stop(self) -> str:
        state = "still active" if self.active else "inactive, actuators holding the measured pose"
        return f"{self.name}: {state} (read back from the simulator)"

    def close(self) -> None:
        self.deactivate()

    def _gripper_opening(self) -> float:
        w = self.world
        return float(np.clip(np.mean(w.data.qpos[w.finger_qpos]) / FINGER_TRAVEL, 0.0, 1.0))


@dataclass(frozen=True, kw_only=True)
class SimCameraOptions:
    """The robot file's [cameras.NAME] keys for kind = "sim"."""

    width: int = 224  # pixels of the offscreen render (16..640; the scene's framebuffer limits it)
    height: int = 224  # pixels (16..480)
    camera: str = "front"  # camera name in the MJCF scene

    def __post_init__(self):
        if not (16 <= self.width <= 640 and 16 <= self.height <= 480):
            raise ValueError(f"sim camera size {self.width}x{self.height} must be within 16..640 x 16..480 pixels")


class SimCamera(Camera):
    """Offscreen render of a named camera in the scene, in the loop's thread (rendering is the capture)."""

    def __init__(self, world: SimWorld, width: int = 224, height: int = 224, camera: str = "front"):
        SimCameraOptions(width=width, height=height, camera=camera)  # one home for the size rule
        self.world = world
        self.camera = camera
        try:
            world.model.camera(camera)
        except KeyError:
            names = [world.model.camera(i).name for i in range(world.model.ncam)]
            raise ValueError(f"the sim scene has no camera {camera!r}; use one of {names}") from None
        self._renderer = mujoco.Renderer(world.model, height, width)

    def read(self, now: float) -> Frame:
        self._renderer.update_scene(self.world.data, camera=self.camera)
        return Frame(self._renderer.render().copy(), now)

    def close(self) -> None:
        self._renderer.close()
