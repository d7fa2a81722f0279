"""Robotiq 2F-85 / 2F-140 / Hand-E grippers over Modbus RTU: codec, register map, driver, simulator."""

from __future__ import annotations

from vla_runtime.drivers.robotiq.gripper import RobotiqConfig as GRIPPER_OPTIONS

__all__ = ["GRIPPER_OPTIONS", "make_gripper"]


def make_gripper(spec):
    """Robot-description factory: `[gripper] driver = "robotiq"` plus RobotiqConfig keys."""
    from vla_runtime.drivers.base import DriverError
    from vla_runtime.drivers.robotiq.gripper import RobotiqConfig, open_gripper

    config = RobotiqConfig.from_options(dict(spec.options))
    try:
        return open_gripper(config)
    except DriverError as exc:  # the port cannot be opened: one line for the user, not a traceback
        raise ConnectionError(str(exc)) from None
