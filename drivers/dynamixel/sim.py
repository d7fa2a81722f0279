"""A simulated Dynamixel X-series bus on a pseudo-terminal (`vla-runtime sim-device dynamixel`).

Each servo keeps a byte-addressed control table and moves its shaft toward Goal Position at a
fixed speed while torque is on. The behaviours that matter for safety are modelled as on the
device: EEPROM writes refused with torque on, a hardware error that cuts torque and sets the
Alert bit until REBOOT, and the Bus Watchdog that stops the servo and locks the Goal registers
when the host goes silent.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from vla_runtime.drivers.dynamixel import protocol as p
from vla_runtime.drivers.dynamixel.tables import (
    EEPROM_END,
    TICKS_PER_REV,
    VELOCITY_UNIT_RPM,
    WATCHDOG_UNIT_S,
    X_SERIES,
    HardwareError,
    Reg,
    model_name,
)
from vla_runtime.drivers.servo_sim import (
    ServoBusSim,
    SimulatedServo,
    add_servo_arguments,
    parse_ids,
    run_servo_sim,
)
from vla_runtime.drivers.simdevice import FaultConfig

__all__ = ["DynamixelSim", "SimServo", "add_arguments", "parse_ids", "run"]

MEMORY_SIZE = 256  # bytes of control table modelled; reads beyond it answer Data Range Error
GOALS = {X_SERIES[r][0] for r in (Reg.GOAL_CURRENT, Reg.GOAL_VELOCITY, Reg.GOAL_POSITION)} | {100}


def _addr(reg: Reg) -> int:
    return X_SERIES[reg][0]


@dataclass
class SimServo(SimulatedServo):
    """An X-series servo; Present = Actual + Homing Offset."""

    model: int = 1060  # XL430-W250
    memory: bytearray = field(default_factory=lambda: bytearray(MEMORY_SIZE))
    firmware: int = 46  # >= 38 has the bus watchdog
    last_heard: float = 0.0  # monotonic seconds of the last instruction addressed to it

    def __post_init__(self):
        self.put(Reg.MODEL_NUMBER, self.model)
        self.put(Reg.FIRMWARE_VERSION, self.firmware)
        self.put(Reg.ID, self.id)
        self.put(Reg.BAUD_RATE, 3)
        self.put(Reg.OPERATING_MODE, 3)
        self.put(Reg.MAX_POSITION_LIMIT, TICKS_PER_REV - 1)
        self.put(Reg.SHUTDOWN, 0x34)
        self.put(Reg.STATUS_RETURN_LEVEL, 2)
        self.put(Reg.PRESENT_INPUT_VOLTAGE, 120)
        self.put(Reg.PRESENT_TEMPERATURE, 30)
        self._sync_present(0.0)
        self.put(Reg.GOAL_POSITION, self.get(Reg.PRESENT_POSITION))

    def get(self, reg: Reg) -> int:
        addr, size = X_SERIES[reg]
        return p.from_bytes(bytes(self.memory[addr : addr + size]), signed=size == 4)

    def put(self, reg: Reg, value: int) -> None:
        addr, size = X_SERIES[reg]
        self.memory[addr : addr + size] = p.to_bytes(value, size)

    @property
    def torque(self) -> bool:
        return self.memory[_addr(Reg.TORQUE_ENABLE)] == 1

    @property
    def hardware_error(self) -> int:
        return self.memory[_addr(Reg.HARDWARE_ERROR_STATUS)]

    @property
    def watchdog_tripped(self) -> bool:
        return self.memory[_addr(Reg.BUS_WATCHDOG)] == 0xFF

    def raise_hardware_error(self, bits: int = HardwareError.OVERLOAD) -> None:
        self.memory[_addr(Reg.HARDWARE_ERROR_STATUS)] = bits
        self.memory[_addr(Reg.TORQUE_ENABLE)] = 0

    def _sync_present(self, velocity_ticks_s: float) -> None:
        self.put(Reg.PRESENT_POSITION, round(self.actual) + self.get(Reg.HOMING_OFFSET))
        self.put(Reg.PRESENT_VELOCITY, round(velocity_ticks_s / (VELOCITY_UNIT_RPM / 60 * TICKS_PER_REV)))

    def step(self, dt: float, now: float) -> None:
        wd = self.memory[_addr(Reg.BUS_WATCHDOG)]
        if self.torque and 0 < wd < 0x80 and now - self.last_heard > wd * WATCHDOG_UNIT_S:
            self.memory[_addr(Reg.BUS_WATCHDOG)] = 0xFF  # tripped: stop and lock the goals
            self.put(Reg.GOAL_POSITION, self.get(Reg.PRESENT_POSITION))
        velocity = 0.0
        if self.torque and not self.hardware_error and dt > 0:
            velocity = self.move_toward(self.get(Reg.GOAL_POSITION) - self.get(Reg.HOMING_OFFSET), dt)
        self._sync_present(velocity)
        self.memory[_addr(Reg.MOVING)] = int(abs(velocity) > 0)

    def write(self, addr: int, data: bytes) -> int:
        """Apply a WRITE; returns the status error number (0 = accepted)."""
        if addr + len(data) > MEMORY_SIZE or not data:
            return p.StatusError.DATA_LENGTH
        if addr < EEPROM_END and self.torque:
            return p.StatusError.ACCESS
        if addr in GOALS and self.watchdog_tripped:
            return p.StatusError.DATA_RANGE
        if addr == _addr(Reg.TORQUE_ENABLE) and data[0] == 1 and self.hardware_error:
            return p.StatusError.ACCESS  # only REBOOT clears a hardware-error shutdown
        if addr == _addr(Reg.BUS_WATCHDOG) and data[0] == 0:
            self.memory[addr] = 0
        if addr < _addr(Reg.HARDWARE_ERROR_STATUS) <= addr + len(data) - 1:
            return p.StatusError.ACCESS  # read-only
        self.memory[addr : addr + len(data)] = data
        return 0

    def reboot(self) -> None:
        for reg in (Reg.TORQUE_ENABLE, Reg.HARDWARE_ERROR_STATUS, Reg.BUS_WATCHDOG):
            self.put(reg, 0)
        self.put(Reg.GOAL_POSITION, self.get(Reg.PRESENT_POSITION))


class DynamixelSim(ServoBusSim):
    """Servos answering Protocol 2.0 on one pty; `servos[id]` is open to tests for inspection."""

    kind = "Dynamixel Protocol 2.0 bus"
    model_name = staticmethod(model_name)

    def __init__(self, ids=(1, 2, 3, 4, 5, 6), model: int = 1060, faults: FaultConfig | None = None):
        super().__init__((SimServo(i, model, actual=2048.0 + 16 * i) for i in ids), faults)

    def decode_request(self, buf: bytes):
        return p.decode_instruction(buf)

    def _status(self, servo: SimServo, error: int, data: bytes = b"") -> bytes:
        alert = p.ALERT_BIT if servo.hardware_error else 0
        return p.encode_status(servo.id, error | alert, data)

    def handle(self, req: p.Packet) -> list[bytes]:
        now = self._last_tick or 0.0
        targets = self.servos.values() if req.id == p.BROADCAST_ID else [self.servos.get(req.id)]
        for servo in targets:
            if servo is not None:
                servo.last_heard = now
        if req.id == p.BROADCAST_ID:
            return self._broadcast(req)
        servo = self.servos.get(req.id)
        if servo is None:
            return []
        prm = req.params
        if req.inst == p.Inst.PING:
            return [self._status(servo, 0, p.to_bytes(servo.model, 2) + bytes([servo.firmware]))]
        if req.inst == p.Inst.READ and len(prm) == 4:
            data = servo.read(prm[0] | prm[1] << 8, prm[2] | prm[3] << 8)
            if data is None:
                return [self._status(servo, p.StatusError.DATA_RANGE)]
            return [self._status(servo, 0, data)]
        if req.inst == p.Inst.WRITE and len(prm) >= 3:
            return [self._status(servo, servo.write(prm[0] | prm[1] << 8, prm[2:]))]
        if req.inst == p.Inst.REBOOT:
            servo.reboot()
            return [p.encode_status(servo.id, 0)]
        return [self._status(servo, p.StatusError.INSTRUCTION)]

    def _broadcast(self, req: p.Packet) -> list[bytes]:
        prm = req.params
        if req.inst == p.Inst.PING:
            return [
                self._status(s, 0, p.to_bytes(s.model, 2) + bytes([s.firmware])) for _, s in sorted(self.servos.items())
            ]
        if req.inst == p.Inst.SYNC_READ and len(prm) >= 4:
            addr, size = prm[0] | prm[1] << 8, prm[2] | prm[3] << 8
            replies = []
            for i in prm[4:]:
                servo = self.servos.get(i)
                if servo is not None:
                    data = servo.read(addr, size)
                    replies.append(
                        self._status(servo, 0, data)
                        if data is not None
                        else self._status(servo, p.StatusError.DATA_RANGE)
                    )
            return replies
        if req.inst == p.Inst.SYNC_WRITE and len(prm) >= 4:
            self.sync_write(prm[0] | prm[1] << 8, prm[2] | prm[3] << 8, prm[4:])  # errors are silent
            return []
        if req.inst == p.Inst.BULK_READ:
            replies = []
            for k in range(0, len(prm) - 4, 5):
                servo = self.servos.get(prm[k])
                if servo is not None:
                    data = servo.read(prm[k + 1] | prm[k + 2] << 8, prm[k + 3] | prm[k + 4] << 8)
                    replies.append(self._status(servo, 0, data or b""))
            return replies
        if req.inst == p.Inst.BULK_WRITE:
            k = 0
            while k + 5 <= len(prm):
                size = prm[k + 3] | prm[k + 4] << 8
                servo = self.servos.get(prm[k])
                if servo is not None:
                    servo.write(prm[k + 1] | prm[k + 2] << 8, prm[k + 5 : k + 5 + size])
                k += 5 + size
            return []
        return []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_servo_arguments(parser, 1060, "model number (1060 = XL430-W250)")


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; bad flags end with one line on stderr and exit code 2."""
    return run_servo_sim(DynamixelSim, "dynamixel", args)
