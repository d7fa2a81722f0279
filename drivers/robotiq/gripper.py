"""RobotiqGripper: the runtime's GripperDriver for 2F-85 / 2F-140 / Hand-E over Modbus RTU.

Activation is a physical routine (the fingers sweep to find their stroke), so it belongs to
activate(), bounded by a deadline, and is skipped when the gripper reports it already done;
activate() itself never sends a go-to, so enabling cannot move the fingers by a stale target.
The safe state stops the fingers (rGTO = 0) and keeps rACT, because clearing rACT resets the
gripper and the next activation would sweep the fingers again. Major device faults
(gFLT >= 0x0A) latch the driver's FAULT; minor ones are reported in reads.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields

from vla_runtime.drivers.base import (
    DeviceTimeout,
    GripperDriver,
    GripperReading,
    HardwareFault,
    ProtocolError,
)
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.robotiq import codec
from vla_runtime.drivers.robotiq.registers import (
    ACT,
    BLOCKS,
    DEFAULT_BAUDRATE,
    DEFAULT_UNIT,
    GTO,
    MAJOR_FAULT,
    ActivationStatus,
    Block,
    GripperRequest,
    GripperStatus,
    ObjectStatus,
)
from vla_runtime.drivers.transport import SerialConfig, SerialTransport

logger = logging.getLogger(__name__)

EXCEPTION_TEXT = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure"}


@dataclass(frozen=True)
class RobotiqConfig:
    port: str  # serial device of the RS-485 adapter, or the pty path `sim-device robotiq` prints
    unit: int = DEFAULT_UNIT  # Modbus device id; Robotiq ships with 9
    baud: int = DEFAULT_BAUDRATE  # bits/s; the gripper's fixed 115200 8N1
    timeout: float = 0.05  # seconds per attempt; a 15-byte write + 8-byte reply is ~2 ms of wire time
    retries: int = 2  # extra attempts; Modbus writes here are idempotent, so a retry is always safe
    activation_timeout: float = 10.0  # seconds; the real routine takes a few, an obstruction takes forever
    poll_interval: float = 0.02  # seconds between status polls while activating
    open_count: int = 0  # gPO/rPR count at full opening (0 unless the fingers are calibrated)
    closed_count: int = 255  # gPO/rPR count at full closing

    def __post_init__(self):
        if not self.port:
            raise ValueError("gripper port is empty; set [gripper] port in the robot description")
        if not 1 <= self.unit <= 247:
            raise ValueError(f"gripper Modbus id must be 1..247, got {self.unit}")
        if self.timeout <= 0 or self.activation_timeout <= 0 or self.poll_interval <= 0:
            raise ValueError("gripper timeouts and poll interval must be positive seconds")
        if self.retries < 0:
            raise ValueError(f"gripper retries must be >= 0, got {self.retries}")
        if not (0 <= self.open_count < self.closed_count <= 255):
            raise ValueError(f"need 0 <= open_count < closed_count <= 255, got {self.open_count}, {self.closed_count}")

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> RobotiqConfig:
        """Build from the robot description's [gripper] keys (everything but `driver`)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"[gripper] unknown key(s) {unknown} for robotiq; known: {sorted(known)}")
        try:
            return cls(**options)
        except TypeError as exc:
            raise ValueError(f"[gripper] robotiq settings: {exc}") from None


def open_link(config: RobotiqConfig) -> Link:
    """The serial link a RobotiqGripper talks through (built by the caller, passed in)."""
    transport = SerialTransport(SerialConfig(port=config.port, baud=config.baud, low_latency=True))
    decode = functools.partial(codec.decode_reply, unit=config.unit)
    return Link(transport, decode, LinkConfig(timeout=config.timeout, retries=config.retries))


class RobotiqGripper(GripperDriver):
    """Opening 0 = closed .. 1 = open, mapped linearly onto the configured position counts."""

    def __init__(self, link: Link, config: RobotiqConfig, name: str = "gripper"):
        super().__init__(name)
        self.link = link
        self.config = config
        self.last_status: GripperStatus | None = None  # from the most recent successful read

    @property
    def worst_io_s(self) -> float:
        return 2 * self.link.worst_case_s  # a status read and a request write, each answered

    # -- Modbus exchanges --------------------------------------------------------------------------
    def _exchange(self, request: codec.ReadRegisters | codec.WriteRegisters) -> codec.Reply:
        function = request.function if isinstance(request, codec.ReadRegisters) else codec.WRITE_MULTIPLE

        def matches(reply: codec.Reply) -> bool:
            return reply.unit == self.config.unit and reply.function == function

        (reply,) = self.link.exchange(codec.encode(request), expect=matches)
        if isinstance(reply, codec.ExceptionReply):
            text = EXCEPTION_TEXT.get(reply.code, f"code {reply.code}")
            raise ProtocolError(
                f"{self.name}: device {self.config.unit} refused function {function}: {text}; "
                "check the gripper model and the register map"
            )
        return reply

    def read_status(self) -> GripperStatus:
        start, count = BLOCKS[Block.STATUS]
        reply = self._exchange(codec.ReadRegisters(self.config.unit, codec.READ_INPUT, start, count))
        if not isinstance(reply, codec.RegistersReply) or len(reply.values) != count:
            raise ProtocolError(f"{self.name}: status reply has the wrong length; check the device id")
        self.last_status = GripperStatus.from_registers(reply.values)
        return self.last_status

    def write_request(self, request: GripperRequest) -> GripperRequest:
        start, count = BLOCKS[Block.REQUEST]
        reply = self._exchange(codec.WriteRegisters(self.config.unit, start, request.to_registers()))
        if not isinstance(reply, codec.WriteReply) or (reply.address, reply.count) != (start, count):
            raise ProtocolError(f"{self.name}: write echo does not match the request; check the device id")
        return request

    # -- unit mapping ------------------------------------------------------------------------------
    def _to_count(self, opening: float) -> int:
        c = self.config
        return int(round(c.closed_count - opening * (c.closed_count - c.open_count)))

    def _to_opening(self, count: int) -> float:
        c = self.config
        return min(1.0, max(0.0, (c.closed_count - count) / (c.closed_count - c.open_count)))

    # -- lifecycle hooks ---------------------------------------------------------------------------
    def _on_configure(self) -> None:
        status = self.read_status()
        logger.info("%s: found Robotiq gripper id %d (%s)", self.name, self.config.unit, status)
        self._raise_if_major(status)

    def _on_activate(self) -> None:
        status = self.read_status()
        if status.activation is not ActivationStatus.COMPLETE or status.fault:
            self.write_request(GripperRequest())  # rACT = 0: reset, so the next write is a rising edge
            self.write_request(GripperRequest(action=ACT))
            self._wait_activated()

    def _wait_activated(self) -> GripperStatus:
        deadline = time.monotonic() + self.config.activation_timeout
        while True:
            status = self.read_status()
            self._raise_if_major(status)
            if status.activation is ActivationStatus.COMPLETE:
                return status
            if time.monotonic() >= deadline:
                raise DeviceTimeout(
                    f"{self.name}: activation did not complete in {self.config.activation_timeout:.1f} s "
                    f"(gSTA={int(status.activation)}); check for obstructions and the 24 V supply"
                )
            time.sleep(self.config.poll_interval)

    def _on_deactivate(self) -> None:
        self.write_request(GripperRequest(action=ACT))  # rGTO = 0: stop where the fingers are

    def _on_hold(self) -> None:
        """Nothing to send: the last go-to stays in force, so fingers closed on an object keep their grip."""

    def _read_back(self) -> str:
        status = self.read_status()
        going = "go-to active (gripping force applied)" if status.going else "stopped (no go-to)"
        return f"activated={status.activated}, {going}, position {status.position}/255 (read back)"

    def _on_close(self) -> None:
        self.link.transport.close()

    # -- I/O -------------------------------------------------------------------------------------
    def _raise_if_major(self, status: GripperStatus) -> None:
        if status.fault >= MAJOR_FAULT:
            raise HardwareFault(f"{self.name}: {status.fault_text}; a reset (deactivate, activate) clears it")

    def _read(self, now: float) -> GripperReading:
        status = self.read_status()
        self._raise_if_major(status)
        contact = status.object in (ObjectStatus.CONTACT_OPENING, ObjectStatus.CONTACT_CLOSING)
        return GripperReading(
            position=self._to_opening(status.position), object_detected=contact, fault=status.fault_text, t=now
        )

    def _command(self, position: float, now: float, period: float, speed: float, force: float) -> float:
        count = self._to_count(position)
        sent = self.write_request(
            GripperRequest(
                action=ACT | GTO, position=count, speed=int(round(speed * 255)), force=int(round(force * 255))
            )
        )
        return self._to_opening(sent.position)


def open_gripper(config: RobotiqConfig, name: str = "gripper") -> RobotiqGripper:
    """Build the link and the driver; nothing is sent until configure()."""
    return RobotiqGripper(open_link(config), config, name=name)
