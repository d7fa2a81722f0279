"""A simulated Dynamixel X-series bus on a pseudo-terminal (`vla-runtime sim-device dynamixel`).

Each servo keeps a byte-addressed control table and moves its shaft toward Goal Position at a
fixed speed while torque is on. The behaviours that matter for safety are modelled as on the
device: EEPROM writes refused with torque on, a hardware error that cuts torque and sets the
Alert bit until REBOOT, and the Bus Watchdog that stops the servo and locks the Goal registers
when the host goes silent.
"""

from __future__ import annotations

import argparse
import sys
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
from vla_runtime.drivers.simdevice import (
    FaultConfig,
    PtySimulator,
    add_fault_arguments,
    fault_config_from_args,
    serve_until_interrupted,
)

MEMORY_SIZE = 256  # bytes of control table modelled; reads beyond it answer Data Range Error
GOALS = {X_SERIES[r][0] for r in (Reg.GOAL_CURRENT, Reg.GOAL_VELOCITY, Reg.GOAL_POSITION)} | {100}


def _addr(reg: Reg) -> int:
    return X_SERIES[reg][0]


@dataclass
class SimServo:
    id: int
    model: int = 1060  # XL430-W250
    firmware: int = 46  # >= 38 has the bus watchdog
    actual: float = 2048.0  # shaft position, ticks, before the homing offset is added
    blocked_below: float | None = None  # an object in the jaws: the shaft cannot go below this tick
    speed: float = 4096.0  # ticks/s the shaft moves at toward the goal (about 1 rev/s)
    memory: bytearray = field(default_factory=lambda: bytearray(MEMORY_SIZE))
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
            target = self.get(Reg.GOAL_POSITION) - self.get(Reg.HOMING_OFFSET)
            move = max(-self.speed * dt, min(self.speed * dt, target - self.actual))
            if self.blocked_below is not None and move < 0 and self.actual + move < self.blocked_below:
                move = min(0.0, max(move, self.blocked_below - self.actual))
            self.actual += move
            velocity = move / dt
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

    def read(self, addr: int, size: int) -> bytes | None:
        if addr + size > MEMORY_SIZE:
            return None
        return bytes(self.memory[addr : addr + size])

    def reboot(self) -> None:
        for reg in (Reg.TORQUE_ENABLE, Reg.HARDWARE_ERROR_STATUS, Reg.BUS_WATCHDOG):
            self.put(reg, 0)
        self.put(Reg.GOAL_POSITION, self.get(Reg.PRESENT_POSITION))


class DynamixelSim(PtySimulator):
    """Servos answering Protocol 2.0 on one pty; `servos[id]` is open to tests for inspection."""

    kind = "Dynamixel Protocol 2.0 bus"

    def __init__(self, ids=(1, 2, 3, 4, 5, 6), model: int = 1060, faults: FaultConfig | None = None):
        super().__init__(faults)
        self.servos = {i: SimServo(i, model, actual=2048.0 + 16 * i) for i in ids}
        for i in self.faults.config.hardware_error_ids:
            if i in self.servos:
                self.servos[i].raise_hardware_error()
        self._last_tick: float | None = None

    def banner(self) -> str:
        ids = sorted(self.servos)
        model = model_name(next(iter(self.servos.values())).model) if ids else "-"
        return f"simulated {self.kind}: ids {ids} ({model}) on {self.port}"

    def decode_request(self, buf: bytes):
        return p.decode_instruction(buf)

    def tick(self, now: float) -> None:
        dt = 0.0 if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        for servo in self.servos.values():
            servo.step(dt, now)

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
            addr, size = prm[0] | prm[1] << 8, prm[2] | prm[3] << 8
            body = prm[4:]
            for k in range(0, len(body) - size, size + 1):
                servo = self.servos.get(body[k])
                if servo is not None:
                    servo.write(addr, body[k + 1 : k + 1 + size])  # no reply; errors are silent
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
    parser.add_argument("--ids", default="1-6", help="servo ids, e.g. 1-6 or 1,2,7 (default 1-6)")
    parser.add_argument("--model", type=int, default=1060, help="model number (1060 = XL430-W250)")
    add_fault_arguments(parser)


def parse_ids(text: str) -> tuple[int, ...]:
    """'1-6' or '1,2,7' -> ids; one line naming the fix on bad input."""
    ids: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            ids.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--ids {text!r} is not a list like 1-6 or 1,2,7") from None
    if not ids or any(not 0 <= i <= 252 for i in ids):
        raise ValueError(f"--ids {text!r}: ids must be within 0..252")
    return tuple(ids)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; bad flags end with one line on stderr and exit code 2."""
    try:
        sim = DynamixelSim(parse_ids(args.ids), args.model, fault_config_from_args(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hint = "connect with: vla-runtime drivers scan --port {port} --protocol dynamixel (any baud; a pty ignores it)"
    return serve_until_interrupted(sim, hint)
