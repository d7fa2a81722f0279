"""Dynamixel Protocol 2.0 framing: pure functions, bytes in and frames out.

Packet: FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAMS (stuffed) | CRC_L CRC_H, where LEN counts
INST + stuffed params + CRC. The CRC (CRC-16/BUYPASS, poly 0x8005) covers the stuffed packet from
the first FF. Stuffing inserts an FD after any FF FF FD inside INST+PARAMS so a payload can never
look like a header; that is also what makes resynchronising on the header safe.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC  # 252: the highest id a device may carry
MAX_LENGTH = 1024  # the SDK rejects longer LEN fields as corrupt; so do we


class Inst(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93


class StatusError(enum.IntEnum):
    """Low 7 bits of a status packet's ERR byte."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4  # also: a Goal written while the bus watchdog has tripped
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


ALERT_BIT = 0x80  # ERR bit 7: a hardware error latched; read Hardware Error Status (70)


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/BUYPASS: poly 0x8005, init 0, no reflection, no final xor ("123456789" -> 0xFEE8)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert FD after every FF FF FD in INST+PARAMS (the bytes before it in the header count)."""
    out = bytearray()
    prev2, prev1 = 0x00, 0x00  # the LEN bytes precede INST; LEN_H is never FF in practice
    for b in body:
        out.append(b)
        if b == 0xFD and prev1 == 0xFF and prev2 == 0xFF:
            out.append(0xFD)
        prev2, prev1 = prev1, b
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Remove the FD that follows every FF FF FD in a received INST+PARAMS region."""
    out = bytearray()
    i = 0
    while i < len(body):
        b = body[i]
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-2] == 0xFF and out[-3] == 0xFF and i + 1 < len(body):
            if body[i + 1] == 0xFD:
                i += 1
        i += 1
    return bytes(out)


@dataclass(frozen=True)
class Packet:
    """One decoded packet: an instruction (from a master) or a status (from a device)."""

    id: int  # 0..252 device id, or 0xFE broadcast
    inst: int  # instruction byte; Inst.STATUS (0x55) for a status packet
    params: bytes  # unstuffed parameters; for a status, params[0] is ERR

    @property
    def is_status(self) -> bool:
        return self.inst == Inst.STATUS

    @property
    def error(self) -> int:
        """Status ERR byte (0 = fine)."""
        return self.params[0] if self.is_status and self.params else 0

    @property
    def data(self) -> bytes:
        """Status payload after the ERR byte."""
        return self.params[1:] if self.is_status else self.params


def encode(device_id: int, inst: int, params: bytes = b"") -> bytes:
    """A whole packet, stuffed and CRC'd; used for instructions and (by the simulator) statuses."""
    if not 0 <= device_id <= 0xFE:
        raise ValueError(f"Dynamixel id must be 0..254, got {device_id}")
    body = stuff(bytes([inst]) + bytes(params))
    length = len(body) + 2
    if length > MAX_LENGTH:
        raise ValueError(f"Dynamixel packet too long ({length} > {MAX_LENGTH} bytes)")
    head = HEADER + bytes([device_id, length & 0xFF, length >> 8])
    crc = crc16(head + body)
    return head + body + bytes([crc & 0xFF, crc >> 8])


def encode_status(device_id: int, error: int, data: bytes = b"") -> bytes:
    return encode(device_id, Inst.STATUS, bytes([error]) + bytes(data))


def decode(buf: bytes) -> tuple[int, Packet | None]:
    """(consumed, packet): 0 = need more; consumed > 0 with None = garbage or a corrupt packet skipped."""
    start = buf.find(HEADER)
    if start < 0:
        # keep a tail that might be the start of a header split across reads
        keep = next((k for k in (3, 2, 1) if buf.endswith(HEADER[:k])), 0)
        return len(buf) - keep, None
    if start > 0:
        return start, None
    if len(buf) < 7:
        return 0, None
    device_id = buf[4]
    length = buf[5] | (buf[6] << 8)
    if device_id > 0xFE or not 3 <= length <= MAX_LENGTH:
        return 1, None  # a corrupt header: slide one byte and look again
    total = 7 + length
    if len(buf) < total:
        return 0, None
    crc = crc16(buf[: total - 2])
    if buf[total - 2] != crc & 0xFF or buf[total - 1] != crc >> 8:
        return 1, None
    body = unstuff(buf[7 : total - 2])
    inst = body[0]
    if inst == Inst.STATUS and len(body) < 2:
        return total, None
    return total, Packet(device_id, inst, body[1:])


def decode_status(buf: bytes) -> tuple[int, Packet | None]:
    """Like decode, but instruction packets (our own echo on a half-duplex adapter) count as skipped."""
    consumed, pkt = decode(buf)
    if pkt is not None and not pkt.is_status:
        return consumed, None
    return consumed, pkt


def decode_instruction(buf: bytes) -> tuple[int, Packet | None]:
    """What a device listens for: any packet that is not a status."""
    consumed, pkt = decode(buf)
    if pkt is not None and pkt.is_status:
        return consumed, None
    return consumed, pkt


# -- instruction builders -------------------------------------------------------------------------
def _u16(v: int) -> bytes:
    return bytes([v & 0xFF, (v >> 8) & 0xFF])


def ping(device_id: int) -> bytes:
    return encode(device_id, Inst.PING)


def read(device_id: int, address: int, size: int) -> bytes:
    return encode(device_id, Inst.READ, _u16(address) + _u16(size))


def write(device_id: int, address: int, data: bytes) -> bytes:
    return encode(device_id, Inst.WRITE, _u16(address) + bytes(data))


def reboot(device_id: int) -> bytes:
    return encode(device_id, Inst.REBOOT)


def sync_read(address: int, size: int, ids: Iterable[int]) -> bytes:
    return encode(BROADCAST_ID, Inst.SYNC_READ, _u16(address) + _u16(size) + bytes(ids))


def sync_write(address: int, size: int, data: Mapping[int, bytes]) -> bytes:
    params = bytearray(_u16(address) + _u16(size))
    for device_id, value in data.items():
        if len(value) != size:
            raise ValueError(f"sync write to id {device_id}: {len(value)} bytes, expected {size}")
        params += bytes([device_id]) + bytes(value)
    return encode(BROADCAST_ID, Inst.SYNC_WRITE, bytes(params))


def bulk_read(requests: Iterable[tuple[int, int, int]]) -> bytes:
    """requests: (id, address, size) per device; each answers with its own status, in order."""
    params = bytearray()
    for device_id, address, size in requests:
        params += bytes([device_id]) + _u16(address) + _u16(size)
    return encode(BROADCAST_ID, Inst.BULK_READ, bytes(params))


def to_bytes(value: int, size: int) -> bytes:
    """Little-endian two's complement, the way every multi-byte register is stored."""
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def from_bytes(data: bytes, signed: bool = True) -> int:
    return int.from_bytes(data, "little", signed=signed)
