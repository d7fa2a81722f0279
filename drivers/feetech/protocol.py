"""Feetech STS/SMS framing: pure functions, bytes in and frames out.

Packet: FF FF | ID | LEN | INST or ERR | PARAMS | CHK, with LEN = params + 2 and
CHK = ~(ID + LEN + INST + PARAMS) & 0xFF. There is no byte stuffing and no marker telling a
status from an instruction, so the receiver resynchronises on FF FF and lets the length and the
checksum reject false starts; the link's `expect` decides whether a frame answers the request.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFD  # 253
MAX_LENGTH = 250  # the SDK's packet limit; a longer LEN is a false start


class Inst(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    RESTORE = 0x06
    REBOOT = 0x08
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class StatusError(enum.IntFlag):
    """Bits of a status packet's ERR byte (also the Status register, 65)."""

    VOLTAGE = 0x01
    ANGLE = 0x02
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    OVERLOAD = 0x20


def checksum(body: bytes) -> int:
    """~sum(ID .. last param) & 0xFF."""
    return ~sum(body) & 0xFF


@dataclass(frozen=True)
class Packet:
    id: int  # 0..253, or 0xFE broadcast
    code: int  # instruction (from a master) or ERR byte (from a servo)
    params: bytes

    @property
    def error(self) -> int:
        """ERR byte when this packet is a status reply."""
        return self.code


def encode(device_id: int, code: int, params: bytes = b"") -> bytes:
    if not 0 <= device_id <= 0xFE:
        raise ValueError(f"Feetech id must be 0..254, got {device_id}")
    length = len(params) + 2
    if length + 4 > MAX_LENGTH:
        raise ValueError(f"Feetech packet too long ({length + 4} > {MAX_LENGTH} bytes)")
    body = bytes([device_id, length, code]) + bytes(params)
    return HEADER + body + bytes([checksum(body)])


def encode_status(device_id: int, error: int, data: bytes = b"") -> bytes:
    return encode(device_id, error, data)


def decode(buf: bytes) -> tuple[int, Packet | None]:
    """(consumed, packet): 0 = need more; consumed > 0 with None = garbage or a corrupt packet skipped."""
    start = buf.find(HEADER)
    if start < 0:
        keep = 1 if buf.endswith(b"\xff") else 0
        return len(buf) - keep, None
    if start > 0:
        return start, None
    if len(buf) < 4:
        return 0, None
    device_id, length = buf[2], buf[3]
    if device_id > BROADCAST_ID or not 2 <= length <= MAX_LENGTH:
        return 1, None  # FF FF FF ... or a silly length: slide one byte
    total = length + 4
    if len(buf) < total:
        return 0, None
    if buf[total - 1] != checksum(buf[2 : total - 1]):
        return 1, None
    return total, Packet(device_id, buf[4], bytes(buf[5 : total - 1]))


# -- instruction builders -------------------------------------------------------------------------
def ping(device_id: int) -> bytes:
    return encode(device_id, Inst.PING)


def read(device_id: int, address: int, size: int) -> bytes:
    return encode(device_id, Inst.READ, bytes([address, size]))


def write(device_id: int, address: int, data: bytes) -> bytes:
    return encode(device_id, Inst.WRITE, bytes([address]) + bytes(data))


def action(device_id: int = BROADCAST_ID) -> bytes:
    return encode(device_id, Inst.ACTION)


def sync_read(address: int, size: int, ids: Iterable[int]) -> bytes:
    return encode(BROADCAST_ID, Inst.SYNC_READ, bytes([address, size]) + bytes(ids))


def sync_write(address: int, size: int, data: Mapping[int, bytes]) -> bytes:
    params = bytearray([address, size])
    for device_id, value in data.items():
        if len(value) != size:
            raise ValueError(f"sync write to id {device_id}: {len(value)} bytes, expected {size}")
        params += bytes([device_id]) + bytes(value)
    return encode(BROADCAST_ID, Inst.SYNC_WRITE, bytes(params))


# -- value encodings ------------------------------------------------------------------------------
def to_sign_magnitude(value: int, sign_bit: int) -> int:
    """Feetech stores negatives as magnitude with one sign bit (bit 15 for goals, 11 for the offset)."""
    magnitude = abs(value)
    if magnitude >= 1 << sign_bit:
        raise ValueError(f"{value} does not fit a sign-magnitude field with sign bit {sign_bit}")
    return magnitude | (1 << sign_bit) if value < 0 else magnitude


def from_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def to_bytes(value: int, size: int) -> bytes:
    """STS/SMS are little-endian (SCS, not handled here, is big-endian)."""
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "little")
