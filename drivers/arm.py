"""A servo arm: joint calibration over a bus of position servos (Dynamixel or Feetech).

Calibration turns ticks into joint units and back:
q = direction * (ticks - zero_ticks) * scale + offset, with scale = 2*pi / ticks_per_rev for
revolute joints (radians) or metres_per_rev / ticks_per_rev for prismatic ones (metres).
Limits are enforced on the way out and the quantised value that actually went on the wire is
returned, so the recorder stores what the servo was told.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from vla_runtime.common.typed_table import build
from vla_runtime.drivers.base import ArmDriver, DriverError, JointReading, PortLost
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.servo_bus import ServoBus, describe_torque, disarm_quietly
from vla_runtime.drivers.transport import SerialConfig, SerialTransport
from vla_runtime.drivers.usb_latency import check_latency_timer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JointCalibration:
    name: str  # joint name as the action space and the recorder use it, e.g. "shoulder_pan"
    id: int  # servo id on the bus
    min: float  # lower limit in joint units (rad or m); commands are clipped to [min, max]
    max: float  # upper limit in joint units
    offset: float = 0.0  # joint units (rad or m) added between servo zero and joint zero
    direction: int = 1  # +1 if the servo's positive turn is the joint's positive direction, else -1
    zero_ticks: int = 2048  # the servo's zero: mid-turn on a 4096-tick encoder
    unit: str = "rad"  # "rad" for revolute joints, "m" for prismatic ones driven through a screw/rack
    metres_per_rev: float = 0.0  # metres of travel per servo revolution; needed when unit is "m"

    def __post_init__(self):
        if not self.name:
            raise ValueError("joint name is empty")
        if not 0 <= self.id <= 252:
            raise ValueError(f"joint {self.name}: servo id must be 0..252, got {self.id}")
        if self.direction not in (1, -1):
            raise ValueError(f"joint {self.name}: direction must be 1 or -1, got {self.direction}")
        if not (math.isfinite(self.min) and math.isfinite(self.max) and self.min < self.max):
            raise ValueError(f"joint {self.name}: limits must be finite with min < max, got {self.min}..{self.max}")
        if self.unit not in ("rad", "m"):
            raise ValueError(f"joint {self.name}: unit must be 'rad' or 'm', got {self.unit!r}")
        if not math.isfinite(self.offset):
            raise ValueError(f"joint {self.name}: offset must be finite, got {self.offset}")
        if self.unit == "m" and not self.metres_per_rev > 0:
            raise ValueError(f"joint {self.name}: unit 'm' needs metres_per_rev > 0")


@dataclass(frozen=True)
class ServoArmConfig:
    joints: tuple[JointCalibration, ...]  # in action-space order
    watchdog_s: float = 0.5  # device stops by itself after this much host silence (Dynamixel only)
    health_check_every: int = 10  # reads between hardware/watchdog checks (10 = once a second at 10 Hz)
    expected_models: tuple[int, ...] = ()  # model numbers accepted at configure; empty = any
    on_fault: str = "torque_off"  # "torque_off" (limp, cannot push) or "hold" (stiff at the last goal, no drop)

    def __post_init__(self):
        if not self.joints:
            raise ValueError("an arm needs at least one joint")
        ids = [j.id for j in self.joints]
        if len(set(ids)) != len(ids):
            raise ValueError(f"servo ids must be unique, got {ids}")
        names = [j.name for j in self.joints]
        if len(set(names)) != len(names):
            raise ValueError(f"joint names must be unique, got {names}")
        if not 0.02 <= self.watchdog_s <= 2.54:
            raise ValueError(f"watchdog_s must be within 0.02..2.54 s, got {self.watchdog_s}")
        if self.on_fault not in ("torque_off", "hold"):
            raise ValueError(f"on_fault must be 'torque_off' or 'hold', got {self.on_fault!r}")
        if self.health_check_every < 1:
            raise ValueError(f"health_check_every must be >= 1, got {self.health_check_every}")


class Calibration:
    """Vectorised ticks <-> joint units for a set of joints on one bus."""

    def __init__(self, joints: Sequence[JointCalibration], ticks_per_rev: int):
        self.zero = np.array([j.zero_ticks for j in joints], dtype=np.float64)  # ticks [J]
        self.offset = np.array([j.offset for j in joints], dtype=np.float64)  # joint units [J]
        self.direction = np.array([j.direction for j in joints], dtype=np.float64)  # +-1 [J]
        per_rev = np.array([2 * math.pi if j.unit == "rad" else j.metres_per_rev for j in joints])
        self.scale = per_rev / ticks_per_rev  # joint units per tick [J]
        self.lower = np.array([j.min for j in joints], dtype=np.float64)
        self.upper = np.array([j.max for j in joints], dtype=np.float64)

    def to_joint(self, ticks: np.ndarray) -> np.ndarray:
        return self.direction * (np.asarray(ticks, dtype=np.float64) - self.zero) * self.scale + self.offset

    def to_joint_velocity(self, ticks_per_s: np.ndarray) -> np.ndarray:
        return self.direction * np.asarray(ticks_per_s, dtype=np.float64) * self.scale

    def to_ticks(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        return np.rint(self.zero + self.direction * (q - self.offset) / self.scale).astype(np.int64)


class ServoArm(ArmDriver):
    """Position-controlled servo arm; the bus is built by the caller and passed in."""

    def __init__(self, bus: ServoBus, config: ServoArmConfig, name: str = "arm"):
        super().__init__(name)
        self.bus = bus
        self.config = config
        self.ids = [j.id for j in config.joints]
        self.cal = Calibration(config.joints, bus.ticks_per_rev)
        self._names = tuple(j.name for j in config.joints)
        self._reads = 0

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def worst_io_s(self) -> float:
        return self.bus.link.worst_case_s  # one sync read; the goals go out as a sync write with no reply

    def _on_configure(self) -> None:
        for joint in self.config.joints:
            model = self.bus.ping(joint.id)
            if self.config.expected_models and model not in self.config.expected_models:
                raise DriverError(
                    f"{self.name}: joint {joint.name} (id {joint.id}) is model {model}, expected one of "
                    f"{self.config.expected_models}; fix the id or the robot description"
                )
        self.bus.check_health(self.ids)
        q = self.cal.to_joint(self.bus.read_state(self.ids)[0])
        outside = [
            n for n, v, lo, hi in zip(self._names, q, self.cal.lower, self.cal.upper, strict=True) if not lo <= v <= hi
        ]
        if outside:
            logger.warning("%s: joints %s start outside their limits; the first command will clip", self.name, outside)

    def _on_activate(self) -> None:
        ticks, _ = self.bus.read_state(self.ids)
        self.bus.write_goals(self.ids, ticks)  # hold where it stands: no jump when torque comes on
        self.bus.set_torque(self.ids, True)
        self.bus.arm_watchdog(self.ids, self.config.watchdog_s)

    def _on_deactivate(self) -> None:
        self.bus.disarm_watchdog(self.ids)
        self.bus.set_torque(self.ids, False)

    def _on_hold(self) -> None:
        # Torque stays on at the last goal (the loop's hold just set it to the measured pose). The
        # watchdog is disarmed so the hold outlives this process; on a flaky bus that may fail, and
        # then it is left armed (a tripped Dynamixel watchdog stops the servo with torque still on):
        # a hold must never end in the limp fault path because of one lost reply.
        disarm_quietly(self.bus, self.ids, self.name)

    def _read_back(self) -> str:
        return describe_torque(self.ids, self.bus.torque_enabled(self.ids))

    def _on_fault(self) -> None:
        if self.config.on_fault == "hold":
            # No more commands: the servos keep their last goal (an arm under gravity does not drop);
            # on Dynamixel the bus watchdog then stops them once the host stays silent.
            logger.warning("%s: holding the last goal after a fault (on_fault = 'hold')", self.name)
            return
        # Torque off for every servo that still answers; a dead bus leaves the watchdog to stop them.
        for servo_id in self.ids:
            try:
                self.bus.set_torque([servo_id], False)
            except PortLost as exc:
                logger.warning("%s: cannot reach the servos (%s); only a device watchdog can stop them", self.name, exc)
                return
            except (DriverError, OSError) as exc:  # keep trying the other servos
                logger.warning("%s: torque off for id %d failed: %s", self.name, servo_id, exc)

    def _on_close(self) -> None:
        release_servo_bus(self.bus)

    def _read(self, now: float) -> JointReading:
        ticks, ticks_per_s = self.bus.read_state(self.ids)
        self._reads += 1
        if self._reads % self.config.health_check_every == 0:
            self.bus.check_health(self.ids)
        return JointReading(self.cal.to_joint(ticks), self.cal.to_joint_velocity(ticks_per_s), now)

    def _command(self, targets: np.ndarray, now: float, period: float) -> np.ndarray:
        clipped = np.clip(targets, self.cal.lower, self.cal.upper)
        ticks = self.cal.to_ticks(clipped)
        self.bus.write_goals(self.ids, ticks)
        return self.cal.to_joint(ticks)


# -- robot-description factories -------------------------------------------------------------------
# The option dataclasses below are the robot file's schema for these drivers: the description
# refuses any key they do not declare and type-checks the rest, so a new key is one field here.
@dataclass(frozen=True, kw_only=True)
class ServoBusOptions:
    port: str  # serial device of the USB adapter (prefer /dev/serial/by-id/...), or a sim-device pty
    baud: int = 1_000_000  # bits/s; set the servos to this rate with the vendor tool first
    timeout_ms: float = 20.0  # per exchange; (retries + 1) attempts must fit well inside one tick
    retries: int = 2  # extra attempts after a timeout or a corrupt reply

    def __post_init__(self):
        if not self.port:
            raise ValueError('a servo bus needs port = "/dev/ttyUSB0" (or the path `vla-runtime sim-device` prints)')


@dataclass(frozen=True, kw_only=True)
class ServoArmOptions(ServoBusOptions):
    zero_ticks: int = 2048  # servo reading at joint zero before `offset` (mid-turn of a 4096-tick servo)
    watchdog_ms: float = 500.0  # servos stop by themselves after this much host silence (where supported)
    models: tuple[int, ...] = ()  # model numbers accepted at configure; empty = any
    on_fault: str = "torque_off"  # after a fault: "torque_off" goes limp, "hold" stays stiff at the last goal


# An arm and its gripper usually share one bus (one USB adapter), so buses are opened once per port
# and reference counted; the last driver to close releases the port.
_OPEN_BUSES: dict[tuple[str, str], list] = {}  # (family, real port path) -> [bus, users]


def open_servo_bus(family: str, options: ServoBusOptions) -> ServoBus:
    """The bus for `[arm]`/`[gripper]` keys port, baud, timeout_ms, retries; shared per port."""
    port = options.port
    key = (family, os.path.realpath(port))
    if key in _OPEN_BUSES:
        _OPEN_BUSES[key][1] += 1
        return _OPEN_BUSES[key][0]
    if family == "dynamixel":
        from vla_runtime.drivers.dynamixel.bus import DynamixelBus as bus_cls
        from vla_runtime.drivers.dynamixel.protocol import decode_status as decode
    elif family == "feetech":
        from vla_runtime.drivers.feetech.bus import FeetechBus as bus_cls
        from vla_runtime.drivers.feetech.protocol import decode
    else:
        raise ValueError(f"unknown servo family {family!r}; use dynamixel or feetech")
    report = check_latency_timer(port)
    if not report.ok:
        logger.warning("%s", report.describe())
    link_config = LinkConfig(timeout=options.timeout_ms / 1e3, retries=options.retries)
    transport = SerialTransport(SerialConfig(port, options.baud, exclusive=True))
    bus = bus_cls(Link(transport, decode, link_config))
    _OPEN_BUSES[key] = [bus, 1]
    return bus


def release_servo_bus(bus: ServoBus) -> None:
    """Drop one user of a shared bus; close the port with the last one (or at once if unshared)."""
    for key, entry in list(_OPEN_BUSES.items()):
        if entry[0] is bus:
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _OPEN_BUSES[key]
            break
    bus.link.transport.close()


def make_servo_arm(family: str, spec) -> ServoArm:
    """Build from a robot description's [arm] (ServoArmOptions keys) and its [[arm.joints]]."""
    opts = build(ServoArmOptions, spec.options, "[arm]")
    joints = tuple(
        JointCalibration(
            name=j.name, id=j.id, min=j.min, max=j.max, offset=j.offset, direction=j.direction,
            zero_ticks=opts.zero_ticks,
        )
        for j in spec.joints
    )
    config = ServoArmConfig(
        joints=joints,
        watchdog_s=opts.watchdog_ms / 1e3,
        expected_models=opts.models,
        on_fault=opts.on_fault,
    )
    try:
        return ServoArm(open_servo_bus(family, opts), config)
    except DriverError as exc:  # the port cannot be opened: one line for the user, not a traceback
        raise ConnectionError(str(exc)) from None
