"""A gripper jaw driven by one position servo (Koch, SO-100/SO-101), on the same bus as the arm.

Opening is calibrated by two tick readings (fully open, fully closed), so it works whichever way
the servo is mounted. Cheap gripper servos burn out when they squeeze at full torque, so `force`
maps onto a torque limit capped by `max_torque`, and contact is inferred the way a hand feels it:
told to close further, not moving, and stopped short of the goal. `speed` is accepted for the
common interface but not applied: the jaw moves at the servo's own profile speed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from vla_runtime.common.typed_table import build
from vla_runtime.drivers.arm import ServoBusOptions, open_servo_bus, release_servo_bus
from vla_runtime.drivers.base import DriverError, GripperDriver, GripperReading
from vla_runtime.drivers.servo_bus import ServoBus, describe_torque, disarm_quietly

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServoGripperConfig:
    id: int  # servo id on the bus
    open_ticks: int  # servo reading with the jaws fully open
    closed_ticks: int  # servo reading with the jaws closed on nothing
    max_torque: float = 0.5  # fraction of the servo's torque that force=1.0 means; protects the servo
    contact_ticks: int = 40  # stopped at least this far short of a closing goal = holding an object
    still_ticks_per_s: float = 20.0  # below this speed the jaw counts as stopped
    watchdog_s: float = 0.5  # device stops by itself after this much host silence (where supported)

    def __post_init__(self):
        if not 0 <= self.id <= 252:
            raise ValueError(f"gripper servo id must be 0..252, got {self.id}")
        if self.open_ticks == self.closed_ticks:
            raise ValueError("gripper open_ticks and closed_ticks must differ; calibrate both ends")
        if not 0.0 < self.max_torque <= 1.0:
            raise ValueError(f"gripper max_torque must be within (0, 1], got {self.max_torque}")
        if self.contact_ticks <= 0 or self.still_ticks_per_s <= 0:
            raise ValueError("gripper contact_ticks and still_ticks_per_s must be positive")
        if not 0.02 <= self.watchdog_s <= 2.54:
            raise ValueError(f"gripper watchdog_s must be within 0.02..2.54 s, got {self.watchdog_s}")


class ServoGripper(GripperDriver):
    def __init__(self, bus: ServoBus, config: ServoGripperConfig, name: str = "gripper"):
        super().__init__(name)
        self.bus = bus
        self.config = config
        self._ids = [config.id]
        self._goal: int | None = None  # last goal in ticks, for contact detection
        self._force: float | None = None  # last force sent, so the limit is written only on change

    @property
    def worst_io_s(self) -> float:
        return self.bus.link.worst_case_s  # one sync read; goals (and torque limits on change) mostly unanswered

    def _opening(self, ticks: float) -> float:
        c = self.config
        return float(np.clip((ticks - c.closed_ticks) / (c.open_ticks - c.closed_ticks), 0.0, 1.0))

    def _on_configure(self) -> None:
        self.bus.ping(self.config.id)
        self.bus.check_health(self._ids)

    def _on_activate(self) -> None:
        ticks, _ = self.bus.read_state(self._ids)
        self.bus.write_goals(self._ids, ticks)
        self._goal = int(ticks[0])
        self.bus.set_torque_limit(self._ids, 0.5 * self.config.max_torque)
        self._force = 0.5
        self.bus.set_torque(self._ids, True)
        self.bus.arm_watchdog(self._ids, self.config.watchdog_s)

    def _on_deactivate(self) -> None:
        self.bus.disarm_watchdog(self._ids)
        self.bus.set_torque(self._ids, False)
        self._goal = None

    def _on_hold(self) -> None:
        # the goal stays where it was: a jaw closed on an object keeps squeezing it (at the torque
        # limit last set) instead of relaxing to the position it stalled at
        disarm_quietly(self.bus, self._ids, self.name)

    def _read_back(self) -> str:
        return describe_torque(self._ids, self.bus.torque_enabled(self._ids))

    def _on_close(self) -> None:
        release_servo_bus(self.bus)

    def _on_fault(self) -> None:
        try:
            self.bus.set_torque(self._ids, False)
        except (DriverError, OSError) as exc:
            logger.warning("%s: torque off failed: %s", self.name, exc)

    def _read(self, now: float) -> GripperReading:
        ticks, velocity = self.bus.read_state(self._ids)
        position = int(ticks[0])
        contact = False
        if self._goal is not None and abs(velocity[0]) < self.config.still_ticks_per_s:
            closing = np.sign(self.config.closed_ticks - self.config.open_ticks)
            shortfall = (self._goal - position) * closing  # > 0: the goal lies further towards closed
            contact = bool(shortfall >= self.config.contact_ticks)
        return GripperReading(self._opening(position), contact, None, now)

    def _command(self, position: float, now: float, period: float, speed: float, force: float) -> float:
        c = self.config
        if force != self._force:
            self.bus.set_torque_limit(self._ids, force * c.max_torque)
            self._force = force
        ticks = round(c.closed_ticks + position * (c.open_ticks - c.closed_ticks))
        self.bus.write_goals(self._ids, np.array([ticks], dtype=np.int64))
        self._goal = ticks
        return self._opening(ticks)


@dataclass(frozen=True, kw_only=True)
class ServoGripperOptions(ServoBusOptions):
    """The robot file's [gripper] keys for a servo jaw (the bus keys are shared with the arm)."""

    id: int  # servo id of the jaw; read it with `vla-runtime drivers scan`
    open_ticks: int  # servo reading with the jaws fully open
    closed_ticks: int  # servo reading with the jaws closed on nothing
    max_torque: float = 0.5  # fraction of servo torque at force = 1; cheap jaw servos burn out above ~0.5
    watchdog_ms: float = 500.0  # the servo stops by itself after this much host silence (where supported)


def make_servo_gripper(family: str, spec) -> ServoGripper:
    """Build from a robot description's [gripper] (ServoGripperOptions keys)."""
    opts = build(ServoGripperOptions, spec.options, "[gripper]")
    config = ServoGripperConfig(
        id=opts.id,
        open_ticks=opts.open_ticks,
        closed_ticks=opts.closed_ticks,
        max_torque=opts.max_torque,
        watchdog_s=opts.watchdog_ms / 1e3,
    )
    try:
        return ServoGripper(open_servo_bus(family, opts), config)
    except DriverError as exc:  # the port cannot be opened: one line for the user, not a traceback
        raise ConnectionError(str(exc)) from None
