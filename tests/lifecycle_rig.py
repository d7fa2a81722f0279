"""A servo arm and jaw on a simulated bus (a real pty), run by the real control loop.

Shared by the lifecycle, bus-resilience and signal tests. The policy is a small joint-space
reach (no model: these tests are about the robot side of the loop), and the camera hands out
one still image stamped with the time it is read.
"""

from __future__ import annotations

import time

import numpy as np
from vla_runtime.drivers.arm import JointCalibration, ServoArm, ServoArmConfig
from vla_runtime.drivers.dynamixel import protocol as dxl
from vla_runtime.drivers.dynamixel.bus import DynamixelBus
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.feetech import protocol as ft
from vla_runtime.drivers.feetech.bus import FeetechBus
from vla_runtime.drivers.feetech.sim import FeetechSim
from vla_runtime.drivers.gripper_servo import ServoGripper, ServoGripperConfig
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.simdevice import FaultConfig
from vla_runtime.drivers.transport import SerialConfig, SerialTransport
from vla_runtime.runtime.loop import ControlLoop, LoopConfig
from vla_runtime.runtime.manifest import SafetyDefaults
from vla_runtime.runtime.robot import Camera, DriverRobot, StopConfig
from vla_runtime.runtime.safety import ActionSafety, SafetyLimits
from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig
from vla_runtime.runtime.types import ActionChunk, Frame, Policy

FAMILIES = {
    "dynamixel": (DynamixelSim, DynamixelBus, dxl.decode_status),
    "feetech": (FeetechSim, FeetechBus, ft.decode),
}
ARM_IDS = (1, 2, 3, 4, 5)
JAW_ID = 6
LIMIT = 1.5  # rad, every joint
MAX_VELOCITY = 2.0  # rad/s, every joint


class StillCamera(Camera):
    """One grey image, stamped with the time it is read (the loop only checks its age)."""

    def read(self, now: float) -> Frame:
        return Frame(np.full((32, 32, 3), 128, np.uint8), now)


class ReachPolicy(Policy):
    """Joint targets a little past the measured pose and a closing jaw; the first call may be slow."""

    def __init__(self, warmup_s: float = 0.0, on_infer=None):
        self.warmup_s = warmup_s
        self.on_infer = on_infer  # called with the call number before each inference
        self.calls = 0

    def infer(self, frame, task, state=None):
        if self.on_infer is not None:
            self.on_infer(self.calls)
        if self.calls == 0 and self.warmup_s:
            time.sleep(self.warmup_s)  # what a real model's first inference (allocation, compilation) costs
        self.calls += 1
        q = np.asarray(state.joint_positions)
        steps = np.array([q + 0.02 * (i + 1) for i in range(4)])  # [4, 5] rad
        actions = np.concatenate([steps, np.full((4, 1), 0.2)], axis=1)  # + jaw opening
        return ActionChunk(actions, tuple(f"j{i}" for i in ARM_IDS) + ("gripper",), frame.t_capture)


class ServoRig:
    """Simulator + production drivers + loop; `sim.servos[id]` shows what the servos really did."""

    def __init__(self, family: str = "dynamixel", faults: FaultConfig | None = None, watchdog_s: float = 0.5,
                 timeout: float = 0.02, retries: int = 2):  # fmt: skip
        sim_cls, bus_cls, decode = FAMILIES[family]
        self.sim = sim_cls(ids=(*ARM_IDS, JAW_ID), faults=faults).start()
        self.transport = SerialTransport(SerialConfig(self.sim.port))
        self.bus = bus_cls(Link(self.transport, decode, LinkConfig(timeout=timeout, retries=retries)))
        joints = tuple(JointCalibration(name=f"j{i}", id=i, min=-LIMIT, max=LIMIT) for i in ARM_IDS)
        self.arm = ServoArm(self.bus, ServoArmConfig(joints=joints, watchdog_s=watchdog_s))
        self.jaw = ServoGripper(
            self.bus, ServoGripperConfig(id=JAW_ID, open_ticks=2600, closed_ticks=2000, watchdog_s=watchdog_s)
        )
        self.robot = DriverRobot("servo-rig", self.arm, self.jaw)
        n = len(ARM_IDS)
        self.limits = SafetyLimits.from_sources(SafetyDefaults(), {}, (-LIMIT,) * n, (LIMIT,) * n, (MAX_VELOCITY,) * n)
        self.safety = ActionSafety(self.limits, "joint_position", n + 1, None, n)

    def run(self, policy: Policy, steps: int, rate: float = 20.0, stop: StopConfig | None = None, max_misses=1000):
        self.scheduler = Scheduler(SchedulerConfig(rate, spin_s=0.0, max_consecutive_misses=max_misses))
        config = LoopConfig(steps, 1, False, self.limits.max_consecutive_rejects, stop=stop or StopConfig())
        loop = ControlLoop(config, policy, self.robot, StillCamera(), self.safety, self.scheduler)
        return loop.run("reach")

    def torque(self) -> dict[int, bool]:
        return {i: s.torque for i, s in sorted(self.sim.servos.items())}

    def close(self) -> None:
        self.robot.close()
        self.sim.stop()
