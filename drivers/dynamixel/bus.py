"""A Dynamixel Protocol 2.0 bus: the instructions as calls, each one bounded exchange on a link.

Status errors become exceptions here, once: an ERR number is a ProtocolError naming the
instruction, and the Alert bit (a latched hardware error that already cut torque) is a
HardwareFault naming the error bits, because only a REBOOT by an operator brings that servo back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from vla_runtime.drivers.base import HardwareFault, ProtocolError
from vla_runtime.drivers.dynamixel import protocol as p
from vla_runtime.drivers.dynamixel.tables import (
    SIGNED,
    TICKS_PER_REV,
    VELOCITY_UNIT_RPM,
    WATCHDOG_UNIT_S,
    X_SERIES,
    HardwareError,
    Reg,
)
from vla_runtime.drivers.link import Link
from vla_runtime.drivers.servo_bus import ServoBus

logger = logging.getLogger(__name__)


def _describe_status(err: int) -> str:
    try:
        return p.StatusError(err & 0x7F).name.lower().replace("_", " ") + " error"
    except ValueError:
        return f"status error {err & 0x7F}"


def _servo_id(pkt: p.Packet) -> int:
    return pkt.id


def _reply_to(ids: set[int], size: int):
    """Accept a status from one of `ids` with `size` data bytes, or an error status (which has none)."""

    def expect(pkt: p.Packet) -> bool:
        return pkt.id in ids and (len(pkt.data) == size or pkt.error != 0)

    return expect


class DynamixelBus(ServoBus):
    family = "dynamixel"
    ticks_per_rev = TICKS_PER_REV

    def __init__(self, link: Link[p.Packet], table: Mapping[Reg, tuple[int, int]] = X_SERIES):
        super().__init__(link)
        self.table = table

    # -- raw instructions ------------------------------------------------------------------------
    def _check(self, pkt: p.Packet, what: str, allow_alert: bool = False) -> p.Packet:
        if pkt.error & p.ALERT_BIT and not allow_alert:
            raise HardwareFault(
                f"{self.link.name}: Dynamixel id {pkt.id} reports a hardware error during {what} "
                f"({self._hardware_error_text(pkt.id)}); torque is off, fix the cause and reboot the servo"
            )
        if pkt.error & 0x7F:
            raise ProtocolError(
                f"{self.link.name}: Dynamixel id {pkt.id} answered {what} with {_describe_status(pkt.error)}"
            )
        return pkt

    def _hardware_error_text(self, servo_id: int) -> str:
        try:
            addr, size = self.table[Reg.HARDWARE_ERROR_STATUS]
            raw = self.read_raw(servo_id, addr, size, allow_alert=True)[0]
        except Exception:  # noqa: BLE001 - best effort while already reporting a fault
            return "hardware error status unreadable"
        names = [e.name.lower() for e in HardwareError if raw & e]
        return ", ".join(names) or f"status 0x{raw:02x}"

    def _one(
        self, frame: bytes, servo_id: int, size: int, what: str, allow_alert: bool = False, **kw
    ) -> p.Packet:
        """One status from `servo_id` carrying `size` data bytes (or an error status without data).

        Matching on the data length as well as the id keeps a late reply to an earlier, different
        request (a write's empty status arriving during a read) from answering this one.
        """
        (pkt,) = self.link.exchange(frame, expect=_reply_to({servo_id}, size), **kw)
        self._check(pkt, what, allow_alert)
        if len(pkt.data) != size:
            raise ProtocolError(f"{self.link.name}: id {servo_id} returned {len(pkt.data)} bytes, asked {size}")
        return pkt

    def ping_raw(self, servo_id: int, timeout: float | None = None, retries: int | None = None) -> tuple[int, int]:
        """(model number, firmware version)."""
        pkt = self._one(p.ping(servo_id), servo_id, 3, "ping", allow_alert=True, timeout=timeout, retries=retries)
        return p.from_bytes(pkt.data[:2], signed=False), pkt.data[2]

    def read_raw(self, servo_id: int, address: int, size: int, allow_alert: bool = False) -> bytes:
        return self._one(p.read(servo_id, address, size), servo_id, size, f"read @{address}", allow_alert).data

    def write_raw(self, servo_id: int, address: int, data: bytes) -> None:
        self._one(p.write(servo_id, address, data), servo_id, 0, f"write @{address}")

    def read(self, servo_id: int, reg: Reg) -> int:
        addr, size = self.table[reg]
        return p.from_bytes(self.read_raw(servo_id, addr, size), signed=reg in SIGNED)

    def write(self, servo_id: int, reg: Reg, value: int) -> None:
        addr, size = self.table[reg]
        self.write_raw(servo_id, addr, p.to_bytes(value, size))

    def reboot(self, servo_id: int) -> None:
        """The only way out of a hardware-error shutdown; the servo restarts with torque off."""
        self._one(p.reboot(servo_id), servo_id, 0, "reboot", allow_alert=True)

    def sync_read_raw(self, address: int, size: int, ids: Sequence[int]) -> dict[int, bytes]:
        wanted = set(ids)
        replies = self.link.exchange(
            p.sync_read(address, size, ids), expect=_reply_to(wanted, size), count=len(wanted), key=_servo_id
        )
        out: dict[int, bytes] = {}
        for pkt in replies:
            self._check(pkt, f"sync read @{address}")
            if len(pkt.data) != size:
                raise ProtocolError(f"{self.link.name}: id {pkt.id} returned {len(pkt.data)} bytes, asked {size}")
            out[pkt.id] = pkt.data
        return out

    def sync_read(self, reg: Reg, ids: Sequence[int]) -> dict[int, int]:
        addr, size = self.table[reg]
        raw = self.sync_read_raw(addr, size, ids)
        return {i: p.from_bytes(raw[i], signed=reg in SIGNED) for i in ids}

    def sync_write(self, reg: Reg, values: Mapping[int, int]) -> None:
        addr, size = self.table[reg]
        self.link.send(p.sync_write(addr, size, {i: p.to_bytes(v, size) for i, v in values.items()}))

    def bulk_read(self, requests: Iterable[tuple[int, Reg]]) -> list[int]:
        """One value per (id, register), each from its own status packet."""
        reqs = [(i, reg, *self.table[reg]) for i, reg in requests]
        ids = [r[0] for r in reqs]
        if len(set(ids)) != len(ids):
            raise ValueError("bulk read allows each id once; use several reads for one servo")
        sizes = {i: s for i, _, _, s in reqs}
        replies = self.link.exchange(
            p.bulk_read((i, a, s) for i, _, a, s in reqs),
            expect=lambda m: m.id in sizes and (len(m.data) == sizes[m.id] or m.error != 0),
            count=len(ids),
            key=_servo_id,
        )
        by_id = {pkt.id: self._check(pkt, "bulk read") for pkt in replies}
        return [p.from_bytes(by_id[i].data[:s], signed=reg in SIGNED) for i, reg, _, s in reqs]

    # -- ServoBus --------------------------------------------------------------------------------
    def ping(self, servo_id: int) -> int:
        return self.ping_raw(servo_id)[0]

    def read_state(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        vel_addr, _ = self.table[Reg.PRESENT_VELOCITY]
        pos_addr, pos_size = self.table[Reg.PRESENT_POSITION]
        raw = self.sync_read_raw(vel_addr, pos_addr + pos_size - vel_addr, ids)  # 128..135, 8 bytes
        off = pos_addr - vel_addr
        pos = np.array([p.from_bytes(raw[i][off : off + pos_size]) for i in ids], dtype=np.int64)
        vel_units = np.array([p.from_bytes(raw[i][:4]) for i in ids], dtype=np.float64)
        return pos, vel_units * (VELOCITY_UNIT_RPM / 60.0 * TICKS_PER_REV)

    def write_goals(self, ids: Sequence[int], ticks: np.ndarray) -> None:
        self.sync_write(Reg.GOAL_POSITION, {i: int(t) for i, t in zip(ids, ticks, strict=True)})

    def set_torque(self, ids: Sequence[int], enabled: bool) -> None:
        for i in ids:
            self.write(i, Reg.TORQUE_ENABLE, int(enabled))

    def torque_enabled(self, ids: Sequence[int]) -> list[bool]:
        values = self.sync_read(Reg.TORQUE_ENABLE, ids)
        return [values[i] != 0 for i in ids]

    def arm_watchdog(self, ids: Sequence[int], timeout_s: float) -> None:
        units = min(127, max(1, math.ceil(timeout_s / WATCHDOG_UNIT_S - 1e-9)))
        for i in ids:
            self.write(i, Reg.BUS_WATCHDOG, 0)  # clears an earlier trip first
            self.write(i, Reg.BUS_WATCHDOG, units)
        logger.info("%s: bus watchdog armed at %d ms on ids %s", self.link.name, units * 20, list(ids))

    def disarm_watchdog(self, ids: Sequence[int]) -> None:
        for i in ids:
            self.write(i, Reg.BUS_WATCHDOG, 0)

    def check_health(self, ids: Sequence[int]) -> None:
        hw_addr, _ = self.table[Reg.HARDWARE_ERROR_STATUS]
        wd_addr, _ = self.table[Reg.BUS_WATCHDOG]
        raw = self.sync_read_raw(hw_addr, wd_addr - hw_addr + 1, ids)  # 70..98 in one exchange
        for i in ids:
            if raw[i][-1] == 0xFF:
                raise HardwareFault(
                    f"{self.link.name}: Dynamixel id {i} bus watchdog tripped (host silent too long); "
                    "the servo stopped itself; deactivate and activate again"
                )

    def set_homing_shift(self, servo_id: int, shift_ticks: int) -> None:
        self.write(servo_id, Reg.HOMING_OFFSET, shift_ticks)  # Dynamixel: Present = Actual + offset
