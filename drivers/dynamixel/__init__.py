"""ROBOTIS Dynamixel Protocol 2.0: codec, control table, bus and a pty simulator."""

from __future__ import annotations

from vla_runtime.drivers.arm import ServoArmOptions as ARM_OPTIONS
from vla_runtime.drivers.gripper_servo import ServoGripperOptions as GRIPPER_OPTIONS

__all__ = ["ARM_OPTIONS", "GRIPPER_OPTIONS", "make_arm", "make_gripper"]


def make_arm(spec):
    """Robot-description factory: `[arm] driver = "dynamixel"` (ARM_OPTIONS keys) and [[arm.joints]]."""
    from vla_runtime.drivers.arm import make_servo_arm

    return make_servo_arm("dynamixel", spec)


def make_gripper(spec):
    """Robot-description factory: `[gripper] driver = "dynamixel"` (GRIPPER_OPTIONS keys)."""
    from vla_runtime.drivers.gripper_servo import make_servo_gripper

    return make_servo_gripper("dynamixel", spec)
