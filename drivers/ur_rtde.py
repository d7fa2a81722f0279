"""`[arm] driver = "ur-rtde"` in a robot description: Universal Robots over RTDE (see drivers/ur/)."""

from vla_runtime.drivers.ur.arm import URConfig as ARM_OPTIONS
from vla_runtime.drivers.ur.arm import make_arm

__all__ = ["ARM_OPTIONS", "make_arm"]
