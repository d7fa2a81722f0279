"""The Robotiq 2F-85 / 2F-140 / Hand-E register map as data, and the byte fields packed into it.

Each 16-bit register carries two byte fields, high byte first. The robot writes three
"output" registers from 1000 and reads three "input" registers from 2000; the layout is the
same on all three grippers, so one table serves the family.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_UNIT = 9  # factory Modbus device id
DEFAULT_BAUDRATE = 115_200  # bit/s, 8N1


class Block(enum.Enum):
    REQUEST = "request"  # robot -> gripper, FC16 (readable back with FC03)
    STATUS = "status"  # gripper -> robot, FC04


# block -> (first register address, register count)
BLOCKS: dict[Block, tuple[int, int]] = {
    Block.REQUEST: (0x03E8, 3),
    Block.STATUS: (0x07D0, 3),
}

# action request bits (high byte of register 1000)
ACT = 0x01  # rACT: activate; a rising edge also clears a major fault
GTO = 0x08  # rGTO: go to the requested position
ATR = 0x10  # rATR: automatic release (emergency open/close, ignores other fields)
ARD = 0x20  # rARD: auto-release direction, 1 = open


class ActivationStatus(enum.IntEnum):
    """gSTA: where the activation routine is."""

    RESET = 0
    IN_PROGRESS = 1
    UNUSED = 2
    COMPLETE = 3


class ObjectStatus(enum.IntEnum):
    """gOBJ: why the fingers are (not) moving."""

    MOVING = 0
    CONTACT_OPENING = 1  # stopped on something while opening
    CONTACT_CLOSING = 2  # stopped on something while closing: an object is held
    AT_POSITION = 3  # reached the requested position, nothing in the way


# gFLT codes -> one-line meaning; 0x0A and above are major and need a rising edge on rACT
FAULTS: dict[int, str] = {
    0x05: "action delayed: activation must complete first",
    0x07: "the activation bit must be set before any action",
    0x08: "over-temperature (wait for cooldown)",
    0x09: "no communication for at least 1 s",
    0x0A: "under-voltage",
    0x0B: "automatic release in progress",
    0x0C: "internal fault",
    0x0D: "activation fault: check for obstructions",
    0x0E: "over-current",
    0x0F: "automatic release complete",
}
MAJOR_FAULT = 0x0A  # codes from here need a reset (rACT 0 -> 1)


def _byte(name: str, value: int) -> None:
    if not 0 <= value <= 255:
        raise ValueError(f"{name} must be 0..255, got {value}")


@dataclass(frozen=True)
class GripperRequest:
    """The three output registers."""

    action: int = 0  # rACT | rGTO | rATR | rARD bits
    position: int = 0  # rPR, 0 = fully open .. 255 = fully closed
    speed: int = 0  # rSP, 0 = slowest .. 255 = fastest
    force: int = 0  # rFR, 0 = least .. 255 = most grip force

    def __post_init__(self):
        for name in ("action", "position", "speed", "force"):
            _byte(name, getattr(self, name))

    def to_registers(self) -> tuple[int, int, int]:
        return (self.action << 8, self.position, (self.speed << 8) | self.force)

    @classmethod
    def from_registers(cls, regs: tuple[int, ...]) -> GripperRequest:
        return cls(action=regs[0] >> 8, position=regs[1] & 0xFF, speed=regs[2] >> 8, force=regs[2] & 0xFF)


@dataclass(frozen=True)
class GripperStatus:
    """The three input registers, unpacked."""

    activated: bool  # gACT echo
    going: bool  # gGTO echo
    activation: ActivationStatus  # gSTA
    object: ObjectStatus  # gOBJ
    fault: int  # gFLT code, 0 = none
    position_request: int  # gPR, echo of rPR
    position: int  # gPO, 0 = open .. 255 = closed
    current: int  # gCU, about 10 mA per count

    def __post_init__(self):
        for name in ("fault", "position_request", "position", "current"):
            _byte(name, getattr(self, name))

    @property
    def fault_text(self) -> str | None:
        if self.fault == 0:
            return None
        return f"gripper fault 0x{self.fault:02X}: {FAULTS.get(self.fault, 'unknown code')}"

    def to_registers(self) -> tuple[int, int, int]:
        status = (
            (ACT if self.activated else 0)
            | (GTO if self.going else 0)
            | (int(self.activation) << 4)
            | (int(self.object) << 6)
        )
        return (status << 8, (self.fault << 8) | self.position_request, (self.position << 8) | self.current)

    @classmethod
    def from_registers(cls, regs: tuple[int, ...]) -> GripperStatus:
        status = regs[0] >> 8
        return cls(
            activated=bool(status & ACT),
            going=bool(status & GTO),
            activation=ActivationStatus((status >> 4) & 0x3),
            object=ObjectStatus((status >> 6) & 0x3),
            fault=(regs[1] >> 8) & 0x0F,  # low nibble is gFLT; the high nibble (kFLT) is controller-side
            position_request=regs[1] & 0xFF,
            position=regs[2] >> 8,
            current=regs[2] & 0xFF,
        )
