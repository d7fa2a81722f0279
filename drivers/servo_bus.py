"""The seam between an arm (or gripper) and a servo family, below both and below the buses.

The bus modules implement `ServoBus`, and `drivers/arm.py` picks one by family name; keeping the
base class here lets the imports run one way (arm -> buses -> this module).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from vla_runtime.drivers.base import TRANSIENT_ERRORS
from vla_runtime.drivers.link import Link

logger = logging.getLogger(__name__)


class ServoBus(ABC):
    """The seam between an arm and a servo family; the arm speaks ticks and ids, never registers.

    Families differ in signs and encodings (Feetech stores sign-magnitude and subtracts its homing
    offset, Dynamixel stores two's complement and adds it); each bus hides that behind these calls.
    """

    family: str  # "dynamixel" or "feetech"
    ticks_per_rev: int  # encoder ticks per output revolution

    def __init__(self, link: Link):
        self.link = link

    @abstractmethod
    def ping(self, servo_id: int) -> int:
        """Model number of the servo at `servo_id`."""

    @abstractmethod
    def read_state(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ticks int64 [N], velocities in ticks/s float64 [N]) in one sync read."""

    @abstractmethod
    def write_goals(self, ids: Sequence[int], ticks: np.ndarray) -> None:
        """Goal positions in ticks, in one sync write (no reply)."""

    @abstractmethod
    def set_torque(self, ids: Sequence[int], enabled: bool) -> None:
        """Torque on/off for each servo, confirmed by a status reply."""

    @abstractmethod
    def torque_enabled(self, ids: Sequence[int]) -> list[bool]:
        """Torque Enable as each servo reports it, in `ids` order (the read-back after a stop)."""

    @abstractmethod
    def arm_watchdog(self, ids: Sequence[int], timeout_s: float) -> None:
        """Make the servos stop by themselves if the host goes silent (where the family can)."""

    @abstractmethod
    def disarm_watchdog(self, ids: Sequence[int]) -> None:
        """Turn the device watchdog off again, clearing a trip."""

    @abstractmethod
    def check_health(self, ids: Sequence[int]) -> None:
        """Raise HardwareFault if a servo reports an error or a tripped watchdog."""

    @abstractmethod
    def set_homing_shift(self, servo_id: int, shift_ticks: int) -> None:
        """Make Present = Actual + shift_ticks, whichever sign convention the family stores."""

    def set_torque_limit(self, ids: Sequence[int], fraction: float) -> None:  # noqa: B027 - optional
        """Limit output torque to `fraction` (0..1) of the maximum, where the family supports it."""


def disarm_quietly(bus: ServoBus, ids: Sequence[int], name: str) -> None:
    """Disarm the device watchdog if the bus answers; a transient failure leaves it armed, logged."""
    try:
        bus.disarm_watchdog(ids)
    except TRANSIENT_ERRORS as exc:
        logger.warning("%s: watchdog left armed on hold (%s); the servos still hold with torque on", name, exc)


def describe_torque(ids: Sequence[int], enabled: Sequence[bool]) -> str:
    """'torque on at ids [1, 2] (read back)' / '... off ...' / both, for the final report."""
    on = [i for i, e in zip(ids, enabled, strict=True) if e]
    off = [i for i, e in zip(ids, enabled, strict=True) if not e]
    parts = [f"torque {word} at ids {group}" for word, group in (("on", on), ("off", off)) if group]
    return ", ".join(parts) + " (read back)"
