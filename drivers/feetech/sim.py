"""A simulated Feetech STS/SMS bus on a pseudo-terminal (`vla-runtime sim-device feetech`).

The servo model keeps the byte memory map and moves toward its goal while torque is on. It
stores values the way the servo does (sign-magnitude, Present = Actual - Homing Offset), so a
driver that gets a sign convention wrong reads the wrong angle here exactly as on the arm.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from vla_runtime.drivers.feetech import protocol as p
from vla_runtime.drivers.feetech.tables import SIGN_BITS, STS_SMS, TICKS_PER_REV, Reg, model_name
from vla_runtime.drivers.servo_sim import ServoBusSim, SimulatedServo, add_servo_arguments, run_servo_sim
from vla_runtime.drivers.simdevice import FaultConfig

MEMORY_SIZE = 128  # bytes of memory map modelled; reads beyond it get no reply (as a real servo)


@dataclass
class SimServo(SimulatedServo):
    """An STS/SMS servo; Present = Actual - Homing Offset."""

    model: int = 777  # STS3215
    memory: bytearray = field(default_factory=lambda: bytearray(MEMORY_SIZE))
    pending: tuple[int, bytes] | None = None  # REG_WRITE waiting for ACTION

    def __post_init__(self):
        self.put(Reg.FIRMWARE_MAJOR, 3)
        self.put(Reg.FIRMWARE_MINOR, 10)
        self.put(Reg.MODEL_NUMBER, self.model)
        self.put(Reg.ID, self.id)
        self.put(Reg.RESPONSE_STATUS_LEVEL, 1)
        self.put(Reg.MAX_POSITION_LIMIT, TICKS_PER_REV - 1)
        self.put(Reg.MAX_TORQUE_LIMIT, 1000)
        self.put(Reg.TORQUE_LIMIT, 1000)
        self.put(Reg.PRESENT_VOLTAGE, 120)
        self.put(Reg.PRESENT_TEMPERATURE, 30)
        self._sync_present(0.0)
        self.put(Reg.GOAL_POSITION, self.get(Reg.PRESENT_POSITION))

    def get(self, reg: Reg) -> int:
        addr, size = STS_SMS[reg]
        raw = p.from_bytes(bytes(self.memory[addr : addr + size]))
        return p.from_sign_magnitude(raw, SIGN_BITS[reg]) if reg in SIGN_BITS else raw

    def put(self, reg: Reg, value: int) -> None:
        addr, size = STS_SMS[reg]
        if reg in SIGN_BITS:
            value = p.to_sign_magnitude(value, SIGN_BITS[reg])
        self.memory[addr : addr + size] = p.to_bytes(value, size)

    @property
    def torque(self) -> bool:
        return self.get(Reg.TORQUE_ENABLE) == 1

    @property
    def error(self) -> int:
        return self.get(Reg.STATUS)

    def raise_hardware_error(self, bits: int = p.StatusError.OVERLOAD) -> None:
        self.put(Reg.STATUS, bits)
        self.put(Reg.TORQUE_ENABLE, 0)

    def _sync_present(self, velocity: float) -> None:
        self.put(Reg.PRESENT_POSITION, round(self.actual) - self.get(Reg.HOMING_OFFSET))
        self.put(Reg.PRESENT_VELOCITY, round(velocity))

    def step(self, dt: float, now: float) -> None:
        velocity = 0.0
        if self.torque and not self.error and dt > 0:
            velocity = self.move_toward(self.get(Reg.GOAL_POSITION) + self.get(Reg.HOMING_OFFSET), dt)
        self._sync_present(velocity)
        self.put(Reg.MOVING, int(abs(velocity) > 0))

    def write(self, addr: int, data: bytes) -> None:
        if not data or addr + len(data) > MEMORY_SIZE:
            return
        torque_addr = STS_SMS[Reg.TORQUE_ENABLE][0]
        if addr == torque_addr and data[0] == 128:
            # "make the current position the middle": choose the offset so Present reads 2048
            self.put(Reg.HOMING_OFFSET, round(self.actual) - 2048)
            self._sync_present(0.0)
            data = b"\x00" + data[1:]
        if addr == torque_addr and data[0] == 1 and self.error:
            data = b"\x00" + data[1:]  # protection holds torque off until the fault is cleared
        self.memory[addr : addr + len(data)] = data

    def reboot(self) -> None:
        self.put(Reg.STATUS, 0)
        self.put(Reg.TORQUE_ENABLE, 0)
        self.put(Reg.GOAL_POSITION, self.get(Reg.PRESENT_POSITION))


class FeetechSim(ServoBusSim):
    """STS/SMS servos on one pty; `servos[id]` is open to tests for inspection."""

    kind = "Feetech STS/SMS bus"
    model_name = staticmethod(model_name)

    def __init__(self, ids=(1, 2, 3, 4, 5, 6), model: int = 777, faults: FaultConfig | None = None):
        super().__init__((SimServo(i, model, actual=2048.0 + 16 * i) for i in ids), faults)

    def decode_request(self, buf: bytes):
        return p.decode(buf)

    def handle(self, req: p.Packet) -> list[bytes]:
        prm = req.params
        if req.id == p.BROADCAST_ID:
            if req.code == p.Inst.SYNC_READ and len(prm) >= 2:
                out = []
                for i in prm[2:]:
                    servo = self.servos.get(i)
                    data = servo.read(prm[0], prm[1]) if servo else None
                    if data is not None:
                        out.append(p.encode_status(i, servo.error, data))
                return out
            if req.code == p.Inst.SYNC_WRITE and len(prm) >= 2:
                self.sync_write(prm[0], prm[1], prm[2:])
            if req.code == p.Inst.ACTION:
                for servo in self.servos.values():
                    self._action(servo)
            return []
        servo = self.servos.get(req.id)
        if servo is None:
            return []
        if req.code == p.Inst.PING:
            return [p.encode_status(servo.id, servo.error)]
        if req.code == p.Inst.READ and len(prm) == 2:
            data = servo.read(prm[0], prm[1])
            return [] if data is None else [p.encode_status(servo.id, servo.error, data)]
        if req.code == p.Inst.WRITE and len(prm) >= 2:
            servo.write(prm[0], prm[1:])
            return [p.encode_status(servo.id, servo.error)]
        if req.code == p.Inst.REG_WRITE and len(prm) >= 2:
            servo.pending = (prm[0], prm[1:])
            return [p.encode_status(servo.id, servo.error)]
        if req.code == p.Inst.ACTION:
            self._action(servo)
            return [p.encode_status(servo.id, servo.error)]
        if req.code == p.Inst.REBOOT:
            servo.reboot()
            return []
        return []

    @staticmethod
    def _action(servo: SimServo) -> None:
        if servo.pending is not None:
            servo.write(*servo.pending)
            servo.pending = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_servo_arguments(parser, 777, "model number (777 = STS3215)")


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; bad flags end with one line on stderr and exit code 2."""
    return run_servo_sim(FeetechSim, "feetech", args)
