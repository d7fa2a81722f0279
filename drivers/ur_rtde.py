"""`[arm] driver = "ur-rtde"` in a robot description: Universal Robots over RTDE (see drivers/ur/)."""

from vla_runtime.drivers.ur.arm import make_arm

__all__ = ["make_arm"]
