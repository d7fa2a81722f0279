"""The seams every arm and gripper driver implements, and the lifecycle that gates their I/O.

A robot must never move because a driver was half set up, and must end in a defined state when
the wire fails. So the lifecycle lives here, once: writes are refused unless the driver is
ACTIVE, and any I/O failure goes through one wrapper (`_guard`) that latches FAULT and runs the
driver's safe-state hook. Subclasses implement only the `_on_*` hooks and `_read` / `_command`.
"""

from __future__ import annotations

import enum
import logging
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DriverState(enum.Enum):
    UNCONFIGURED = "unconfigured"  # nothing opened or verified yet
    INACTIVE = "inactive"  # devices found and configured; torque off; reads allowed
    ACTIVE = "active"  # torque on; commands allowed
    FAULT = "fault"  # an I/O or device error latched; only deactivate()/acknowledge_fault() help


class DriverError(Exception):
    """A driver failure, always a one-line message naming the device, the problem and the fix."""


class DeviceTimeout(DriverError):
    """No complete reply arrived before the exchange deadline, after all retries."""


class ProtocolError(DriverError):
    """Bytes arrived but did not form the expected reply (bad CRC, wrong id, wrong length)."""


class HardwareFault(DriverError):
    """The device reported an error of its own (overload, overheating, voltage, shutdown)."""


class PortLost(DriverError):
    """The port or socket disappeared (USB unplugged, device powered off, peer closed)."""


class LifecycleError(DriverError):
    """A call arrived in a state that does not allow it (e.g. a command before activate())."""


TRANSIENT_ERRORS = (DeviceTimeout, ProtocolError)  # a retry or the next tick may succeed; a lost port will not
MALFORMED = (KeyError, IndexError, ValueError, struct.error)  # what unexpected bytes can make plain Python raise
# Lifecycle steps (configure, activate, deactivate, release) are idempotent, so one that fails on a
# timeout or corrupt reply is run again: each step is dozens of exchanges, and a bus that loses 5 %
# of its replies must still start and stop. A lost port or a hardware fault is never retried.
SETUP_ATTEMPTS = 3


@dataclass(frozen=True)
class JointReading:
    positions: np.ndarray  # float64 [J], radians (revolute) or metres (prismatic)
    velocities: np.ndarray  # float64 [J], rad/s or m/s; zeros where the device cannot report it
    t: float  # seconds, the `now` the read was made at (caller's monotonic clock)


@dataclass(frozen=True)
class GripperReading:
    position: float  # 0 = closed .. 1 = open
    object_detected: bool  # the jaws stopped on something before reaching the target
    fault: str | None  # None when healthy, else a one-line description of the device's fault
    t: float  # seconds, the `now` the read was made at


class LifecycleDriver(ABC):
    """configure -> activate -> deactivate, with writes gated on ACTIVE and one fault path."""

    def __init__(self, name: str):
        self.name = name  # shown in every error message, e.g. "arm" or "gripper"
        self._state = DriverState.UNCONFIGURED
        self._fault: str | None = None
        # True when the caller counts failed ticks itself (the control loop): a timeout or corrupt
        # reply in read/command is raised without latching FAULT, so one bad tick is not the end
        self.tolerate_transient = False
        self.holding = False  # deactivated with hold=True: commands refused, torque still on

    @property
    def state(self) -> DriverState:
        return self._state

    @property
    def worst_io_s(self) -> float:
        """Longest a read plus a command can block when every attempt times out, seconds (0 = unknown)."""
        return 0.0

    @property
    def fault(self) -> str | None:
        """Why the driver is in FAULT (one line), or None."""
        return self._fault

    def configure(self) -> None:
        """Find and verify the devices and write their settings; torque stays off."""
        if self._state is not DriverState.UNCONFIGURED:
            raise LifecycleError(f"{self.name}: configure() needs UNCONFIGURED, state is {self._state.value}")
        self._guard("configure", self._attempts, "configure", self._on_configure)
        self._state = DriverState.INACTIVE

    def activate(self) -> None:
        """Enable torque (and device-side watchdogs); commands are accepted from now on."""
        if self._state is not DriverState.INACTIVE:
            raise LifecycleError(f"{self.name}: activate() needs INACTIVE, state is {self._state.value}")
        self._guard("activate", self._attempts, "activate", self._on_activate)
        self._state = DriverState.ACTIVE

    def deactivate(self, hold: bool = False) -> None:
        """Stop accepting commands; allowed from ACTIVE and FAULT.

        hold=False: the orderly safe state (torque off, program stopped). hold=True: commands are
        refused but the hardware keeps holding where it is (torque on, watchdog disarmed so the
        hold outlives this process); `release()` ends the hold.
        """
        if self._state is DriverState.FAULT:
            self._safe_state_best_effort()
            return
        if self._state is not DriverState.ACTIVE:
            return
        self._guard("deactivate", self._attempts, "deactivate", self._on_hold if hold else self._on_deactivate)
        self.holding = hold
        self._state = DriverState.INACTIVE

    def release(self) -> None:
        """End a hold: torque off (or the driver's orderly safe state); a no-op when not holding."""
        if self._state is DriverState.ACTIVE:
            self.deactivate()
        elif self._state is DriverState.INACTIVE and self.holding:
            self._guard("release", self._attempts, "release", self._on_deactivate)
            self.holding = False

    def read_back(self) -> str:
        """What the device itself reports about its output stage (torque, program), one line.

        Never raises: where the device cannot be asked, the line says "could not confirm: <why>".
        """
        try:
            return f"{self.name}: {self._attempts('read back', self._read_back)}"
        except NotImplementedError:
            return f"{self.name}: could not confirm: this driver cannot read its output state back"
        except (DriverError, OSError, *MALFORMED) as exc:
            return f"{self.name}: could not confirm: {exc}"

    def acknowledge_fault(self) -> None:
        """An operator has looked at the fault: start over from UNCONFIGURED."""
        if self._state is DriverState.FAULT:
            logger.info("%s: fault acknowledged (%s)", self.name, self._fault)
            self._fault = None
            self._state = DriverState.UNCONFIGURED

    def close(self) -> None:
        """Safe state first, then release the port; never raises."""
        try:
            self.deactivate()
        except DriverError as exc:
            logger.warning("%s: safe state on close failed: %s", self.name, exc)
        try:
            self._on_close()
        except Exception as exc:  # noqa: BLE001 - closing must not mask the original failure
            logger.warning("%s: close failed: %s", self.name, exc)

    # -- hooks -------------------------------------------------------------------------------
    @abstractmethod
    def _on_configure(self) -> None:
        """Open/verify devices and write configuration (torque off)."""

    @abstractmethod
    def _on_activate(self) -> None:
        """Enable torque and arm device watchdogs."""

    @abstractmethod
    def _on_deactivate(self) -> None:
        """Disable torque or hold; the normal, orderly safe state."""

    def _on_hold(self) -> None:
        """Stop commanding but keep holding (torque on); drivers whose safe state holds anyway reuse it."""
        self._on_deactivate()

    def _read_back(self) -> str:
        """Torque / program state as read from the device ("torque on at ids 1-5 (read back)")."""
        raise NotImplementedError

    def _on_fault(self) -> None:
        """Safe state after an error; the default tries the orderly one."""
        self._on_deactivate()

    def _on_close(self) -> None:  # noqa: B027 - optional hook; most drivers close their link here
        """Release ports and sockets."""

    # -- the one wrapper ---------------------------------------------------------------------
    def _require_active(self, what: str) -> None:
        if self._state is not DriverState.ACTIVE:
            hint = f" ({self._fault})" if self._fault else ""
            raise LifecycleError(
                f"{self.name}: {what} refused in state {self._state.value}{hint}; call activate() first"
            )

    def _guard(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run an I/O step; any driver or OS error latches FAULT and tries the safe state.

        Whatever the bytes were, only the driver's own error types leave here: an OSError is a lost
        port, and a KeyError/IndexError/ValueError from unexpected data is a ProtocolError. With
        `tolerate_transient`, a timeout or protocol error in read/command leaves the state alone.
        """
        try:
            return fn(*args, **kwargs)
        except (DriverError, OSError, *MALFORMED) as exc:
            if isinstance(exc, LifecycleError):
                raise
            if isinstance(exc, DriverError):
                err = exc
            elif isinstance(exc, OSError):
                err = PortLost(f"{self.name}: {exc}; check the cable and the port")
            else:
                err = ProtocolError(
                    f"{self.name}: unexpected data during {what} ({type(exc).__name__}: {exc}); "
                    "check wiring, ids and baud rate"
                )
            if self.tolerate_transient and what in ("read", "command") and isinstance(err, TRANSIENT_ERRORS):
                if err is exc:
                    raise
                raise err from exc
            self._enter_fault(f"{what}: {err}")
            if err is exc:
                raise
            raise err from exc

    def _attempts(self, what: str, step: Callable[[], T]) -> T:
        """Run an idempotent lifecycle step up to SETUP_ATTEMPTS times while it fails transiently."""
        for attempt in range(1, SETUP_ATTEMPTS + 1):
            try:
                return step()
            except (*TRANSIENT_ERRORS, *MALFORMED) as exc:
                if attempt == SETUP_ATTEMPTS:
                    raise
                logger.warning("%s: %s failed (%s); trying again (%d of %d)", self.name, what, exc, attempt + 1,
                               SETUP_ATTEMPTS)  # fmt: skip

    def _enter_fault(self, reason: str) -> None:
        first = self._state is not DriverState.FAULT
        self._state = DriverState.FAULT
        self._fault = reason
        if first:
            logger.error("%s: FAULT: %s", self.name, reason)
            self._safe_state_best_effort()

    def _safe_state_best_effort(self) -> None:
        try:
            self._on_fault()
        except (DriverError, OSError, *MALFORMED) as exc:
            logger.warning("%s: could not reach safe state: %s", self.name, exc)


class ArmDriver(LifecycleDriver):
    """A chain of joints read and commanded in joint units (radians or metres)."""

    @property
    @abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """Names in the order of every array this driver takes or returns."""

    def read(self, now: float) -> JointReading:
        """Measured joint state; allowed in INACTIVE and ACTIVE."""
        if self._state not in (DriverState.INACTIVE, DriverState.ACTIVE):
            raise LifecycleError(f"{self.name}: read refused in state {self._state.value}; configure() first")
        return self._guard("read", self._read, now)

    def command(self, targets: np.ndarray, now: float, period: float) -> np.ndarray:
        """Send joint position targets; returns what was actually sent (after limits/quantisation)."""
        self._require_active("command")
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != (len(self.joint_names),):
            n = len(self.joint_names)
            raise ValueError(f"{self.name}: command wants {n} targets, got shape {targets.shape}")
        if not np.all(np.isfinite(targets)):
            raise ValueError(f"{self.name}: non-finite command {targets.tolist()}; nothing was sent")
        return self._guard("command", self._command, targets, now, period)

    @abstractmethod
    def _read(self, now: float) -> JointReading:
        """Read positions/velocities from the devices."""

    @abstractmethod
    def _command(self, targets: np.ndarray, now: float, period: float) -> np.ndarray:
        """Write finite, correctly shaped targets; return what went on the wire, in joint units."""


class GripperDriver(LifecycleDriver):
    """A one-axis gripper with a normalised opening (0 = closed .. 1 = open)."""

    def read(self, now: float) -> GripperReading:
        """Measured opening and contact; allowed in INACTIVE and ACTIVE."""
        if self._state not in (DriverState.INACTIVE, DriverState.ACTIVE):
            raise LifecycleError(f"{self.name}: read refused in state {self._state.value}; configure() first")
        return self._guard("read", self._read, now)

    def command(
        self, position: float, now: float, period: float, speed: float = 1.0, force: float = 0.5
    ) -> float:
        """Move towards `position` (0..1, clipped); returns the opening actually sent."""
        self._require_active("command")
        values = (position, speed, force)
        if not all(np.isfinite(v) for v in values):
            raise ValueError(f"{self.name}: non-finite gripper command {values}; nothing was sent")
        return self._guard(
            "command",
            self._command,
            float(np.clip(position, 0.0, 1.0)),
            now,
            period,
            float(np.clip(speed, 0.0, 1.0)),
            float(np.clip(force, 0.0, 1.0)),
        )

    @abstractmethod
    def _read(self, now: float) -> GripperReading:
        """Read the opening, contact flag and device fault."""

    @abstractmethod
    def _command(self, position: float, now: float, period: float, speed: float, force: float) -> float:
        """Write a clipped target; return the opening actually sent (0..1)."""
