"""A Feetech STS/SMS bus: the instructions as calls, each one bounded exchange on a link.

Any non-zero ERR byte in a reply is a HardwareFault: on these servos it only ever carries the
protection bits (voltage, angle, overheat, over-current, overload). STS has no bus watchdog, so
a host that dies with torque on leaves the arm holding its last goal; the arm driver's fault path
turns torque off, and `arm_watchdog` says so in the log instead of pretending.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from vla_runtime.drivers.base import HardwareFault, ProtocolError
from vla_runtime.drivers.feetech import protocol as p
from vla_runtime.drivers.feetech.tables import SIGN_BITS, STS_SMS, TICKS_PER_REV, Reg
from vla_runtime.drivers.link import Link
from vla_runtime.drivers.servo_bus import ServoBus

logger = logging.getLogger(__name__)


def describe_error(err: int) -> str:
    names = [e.name.lower() for e in p.StatusError if err & e]
    return ", ".join(names) or f"error 0x{err:02x}"


def _is_echo(pkt: p.Packet, request: bytes) -> bool:
    """Feetech statuses carry no marker, so a TTL adapter's echo of our request can look like a reply."""
    return p.encode(pkt.id, pkt.code, pkt.params) == request


class FeetechBus(ServoBus):
    family = "feetech"
    ticks_per_rev = TICKS_PER_REV

    def __init__(self, link: Link[p.Packet], table: Mapping[Reg, tuple[int, int]] = STS_SMS):
        super().__init__(link)
        self.table = table
        self._warned_watchdog = False

    # -- raw instructions ------------------------------------------------------------------------
    def _check(self, pkt: p.Packet, what: str) -> p.Packet:
        if pkt.error:
            raise HardwareFault(
                f"{self.link.name}: Feetech id {pkt.id} reports {describe_error(pkt.error)} during {what}; "
                "torque may be off, remove the cause (load, supply, temperature) and enable again"
            )
        return pkt

    def _reply(self, frame: bytes, servo_id: int, size: int, what: str, **kw) -> p.Packet:
        def expect(m: p.Packet) -> bool:
            return m.id == servo_id and len(m.params) == size and not _is_echo(m, frame)

        (pkt,) = self.link.exchange(frame, expect=expect, **kw)
        return self._check(pkt, what)

    def ping_raw(self, servo_id: int, timeout: float | None = None, retries: int | None = None) -> None:
        self._reply(p.ping(servo_id), servo_id, 0, "ping", timeout=timeout, retries=retries)

    def read_raw(self, servo_id: int, address: int, size: int) -> bytes:
        return self._reply(p.read(servo_id, address, size), servo_id, size, f"read @{address}").params

    def write_raw(self, servo_id: int, address: int, data: bytes) -> None:
        self._reply(p.write(servo_id, address, data), servo_id, 0, f"write @{address}")

    def encode_value(self, reg: Reg, value: int) -> bytes:
        _, size = self.table[reg]
        if reg in SIGN_BITS:
            value = p.to_sign_magnitude(value, SIGN_BITS[reg])
        elif not 0 <= value < 1 << (8 * size):
            raise ValueError(f"{reg.name} takes 0..{(1 << (8 * size)) - 1}, got {value}")
        return p.to_bytes(value, size)

    def decode_value(self, reg: Reg, data: bytes) -> int:
        raw = p.from_bytes(data)
        return p.from_sign_magnitude(raw, SIGN_BITS[reg]) if reg in SIGN_BITS else raw

    def read(self, servo_id: int, reg: Reg) -> int:
        addr, size = self.table[reg]
        return self.decode_value(reg, self.read_raw(servo_id, addr, size))

    def write(self, servo_id: int, reg: Reg, value: int) -> None:
        addr, _ = self.table[reg]
        self.write_raw(servo_id, addr, self.encode_value(reg, value))

    def sync_read_raw(self, address: int, size: int, ids: Sequence[int]) -> dict[int, bytes]:
        wanted = set(ids)
        frame = p.sync_read(address, size, ids)
        replies = self.link.exchange(
            frame,
            expect=lambda m: m.id in wanted and len(m.params) == size and not _is_echo(m, frame),
            count=len(wanted),
            key=lambda m: m.id,  # a status sent twice must not stand in for another servo's
        )
        return {pkt.id: self._check(pkt, f"sync read @{address}").params for pkt in replies}

    def sync_read(self, reg: Reg, ids: Sequence[int]) -> dict[int, int]:
        addr, size = self.table[reg]
        raw = self.sync_read_raw(addr, size, ids)
        return {i: self.decode_value(reg, raw[i]) for i in ids}

    def sync_write(self, reg: Reg, values: Mapping[int, int]) -> None:
        addr, size = self.table[reg]
        self.link.send(p.sync_write(addr, size, {i: self.encode_value(reg, v) for i, v in values.items()}))

    # -- ServoBus --------------------------------------------------------------------------------
    def ping(self, servo_id: int) -> int:
        self.ping_raw(servo_id)
        return self.read(servo_id, Reg.MODEL_NUMBER)

    def read_state(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        pos_addr, _ = self.table[Reg.PRESENT_POSITION]
        vel_addr, vel_size = self.table[Reg.PRESENT_VELOCITY]
        raw = self.sync_read_raw(pos_addr, vel_addr + vel_size - pos_addr, ids)  # 56..59, 4 bytes
        pos = [self.decode_value(Reg.PRESENT_POSITION, raw[i][0:2]) for i in ids]
        vel = [self.decode_value(Reg.PRESENT_VELOCITY, raw[i][2:4]) for i in ids]
        return np.array(pos, dtype=np.int64), np.array(vel, dtype=np.float64)

    def write_goals(self, ids: Sequence[int], ticks: np.ndarray) -> None:
        self.sync_write(Reg.GOAL_POSITION, {i: int(t) for i, t in zip(ids, ticks, strict=True)})

    def set_torque(self, ids: Sequence[int], enabled: bool) -> None:
        for i in ids:
            self.write(i, Reg.TORQUE_ENABLE, int(enabled))
            self.write(i, Reg.LOCK, int(enabled))  # EEPROM stays writable only while torque is off

    def torque_enabled(self, ids: Sequence[int]) -> list[bool]:
        values = self.sync_read(Reg.TORQUE_ENABLE, ids)
        return [values[i] != 0 for i in ids]

    def arm_watchdog(self, ids: Sequence[int], timeout_s: float) -> None:
        if not self._warned_watchdog:
            logger.warning(
                "%s: Feetech STS/SMS servos have no bus watchdog; if this host dies with torque on the "
                "arm holds its last goal",
                self.link.name,
            )
            self._warned_watchdog = True

    def disarm_watchdog(self, ids: Sequence[int]) -> None:
        return None

    def check_health(self, ids: Sequence[int]) -> None:
        status = self.sync_read(Reg.STATUS, ids)
        bad = {i: s for i, s in status.items() if s}
        if bad:
            i, s = next(iter(bad.items()))
            raise HardwareFault(f"{self.link.name}: Feetech id {i} status reports {describe_error(s)}")

    def set_homing_shift(self, servo_id: int, shift_ticks: int) -> None:
        # Feetech subtracts its offset (Present = Actual - Offset): store the negated shift.
        if abs(shift_ticks) > 2047:
            raise ProtocolError(f"Feetech homing offset must be within +-2047 ticks, got {shift_ticks}")
        self.write(servo_id, Reg.HOMING_OFFSET, -shift_ticks)

    def set_torque_limit(self, ids: Sequence[int], fraction: float) -> None:
        value = round(min(max(fraction, 0.0), 1.0) * 1000)
        for i in ids:
            self.write(i, Reg.TORQUE_LIMIT, value)
