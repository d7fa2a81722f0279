"""ROBOTIS Dynamixel Protocol 2.0: codec, control table, bus and a pty simulator."""

from __future__ import annotations


def make_arm(spec):
    """Robot-description factory: `[arm] driver = "dynamixel"`, port, baud and [[arm.joints]]."""
    from vla_runtime.drivers.arm import make_servo_arm

    return make_servo_arm("dynamixel", spec)


def make_gripper(spec):
    """Robot-description factory: `[gripper] driver = "dynamixel"`, id, open_ticks, closed_ticks."""
    from vla_runtime.drivers.gripper_servo import make_servo_gripper

    return make_servo_gripper("dynamixel", spec)
