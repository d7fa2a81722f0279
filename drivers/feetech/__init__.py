"""Feetech STS/SMS serial servos (SO-100/SO-101, LeKiwi): codec, memory table, bus and a pty simulator."""

from __future__ import annotations


def make_arm(spec):
    """Robot-description factory: `[arm] driver = "feetech"`, port, baud and [[arm.joints]]."""
    from vla_runtime.drivers.arm import make_servo_arm

    return make_servo_arm("feetech", spec)


def make_gripper(spec):
    """Robot-description factory: `[gripper] driver = "feetech"`, id, open_ticks, closed_ticks."""
    from vla_runtime.drivers.gripper_servo import make_servo_gripper

    return make_servo_gripper("feetech", spec)
