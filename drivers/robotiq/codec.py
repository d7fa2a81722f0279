"""Modbus RTU framing for the functions a Robotiq gripper speaks: pure bytes in, messages out.

RTU has no start marker: a frame is only recognisable by a plausible device id, a known
function code, a length implied by that function and a CRC that checks. Requests and replies
of the same function have different shapes, so there is one decoder per direction. On
anything implausible the decoders consume exactly one byte, so the caller rescans from the
next byte and finds the next good frame after garbage or a corrupted one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_MULTIPLE = 0x10
READ_WRITE_MULTIPLE = 0x17  # write then read in one transaction (a command plus its status)
MAX_REGISTERS = 125  # Modbus limit on registers per read (PDU of 253 bytes)
MAX_WRITE_REGISTERS = 123  # Modbus limit on registers per FC16 write
MAX_RW_WRITE_REGISTERS = 121  # Modbus limit on registers written by FC23


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (reflected 0x8005, init 0xFFFF); sent on the wire low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16_modbus(body))


def _crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16_modbus(frame[:-2]) == struct.unpack("<H", frame[-2:])[0]


# -- messages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadRegisters:
    """FC03 (holding) or FC04 (input) request."""

    unit: int  # device id, 1..247 (Robotiq default 9)
    function: int  # READ_HOLDING or READ_INPUT
    address: int  # first register, 0..65535
    count: int  # registers, 1..125


@dataclass(frozen=True)
class WriteRegisters:
    """FC16 request: write consecutive holding registers."""

    unit: int
    address: int
    values: tuple[int, ...]  # 16-bit register values, 1..123 of them


@dataclass(frozen=True)
class ReadWriteRegisters:
    """FC23 request: write holding registers, then read registers, in one exchange."""

    unit: int
    read_address: int
    read_count: int  # 1..125
    write_address: int
    values: tuple[int, ...]  # 1..121 register values

    @property
    def function(self) -> int:
        return READ_WRITE_MULTIPLE


@dataclass(frozen=True)
class RegistersReply:
    """Reply to FC03/FC04/FC23: the register values read."""

    unit: int
    function: int
    values: tuple[int, ...]


@dataclass(frozen=True)
class WriteReply:
    """Reply to FC16: echo of address and count."""

    unit: int
    address: int
    count: int

    @property
    def function(self) -> int:
        return WRITE_MULTIPLE


@dataclass(frozen=True)
class ExceptionReply:
    """The device refused the request (function | 0x80, exception code)."""

    unit: int
    function: int  # the original function code, without the 0x80 bit
    code: int  # 1 illegal function, 2 illegal address, 3 illegal value, 4 device failure


Request = ReadRegisters | WriteRegisters | ReadWriteRegisters
Reply = RegistersReply | WriteReply | ExceptionReply


def encode(msg: Request | Reply) -> bytes:
    """One complete RTU frame including the CRC."""
    if isinstance(msg, ReadRegisters):
        body = struct.pack(">BBHH", msg.unit, msg.function, msg.address, msg.count)
    elif isinstance(msg, WriteRegisters):
        n = len(msg.values)
        body = struct.pack(f">BBHHB{n}H", msg.unit, WRITE_MULTIPLE, msg.address, n, 2 * n, *msg.values)
    elif isinstance(msg, ReadWriteRegisters):
        n = len(msg.values)
        head = struct.pack(">BBHHHHB", msg.unit, READ_WRITE_MULTIPLE, msg.read_address, msg.read_count,
                           msg.write_address, n, 2 * n)  # fmt: skip
        body = head + struct.pack(f">{n}H", *msg.values)
    elif isinstance(msg, RegistersReply):
        n = len(msg.values)
        body = struct.pack(f">BBB{n}H", msg.unit, msg.function, 2 * n, *msg.values)
    elif isinstance(msg, WriteReply):
        body = struct.pack(">BBHH", msg.unit, WRITE_MULTIPLE, msg.address, msg.count)
    elif isinstance(msg, ExceptionReply):
        body = struct.pack(">BBB", msg.unit, msg.function | 0x80, msg.code)
    else:
        raise TypeError(f"cannot encode {type(msg).__name__}")
    return with_crc(body)


# -- decoding -------------------------------------------------------------------------------------
def _resync(decode_at, buf: bytes, unit: int | None):
    """Decode at offset 0; if that needs more bytes but a later offset already holds a whole frame
    with a good CRC, the bytes at 0 were noise that merely looked like a long header: skip one.
    Without this, a corrupted frame whose tail resembles a header would stall until the deadline."""
    consumed, msg = decode_at(buf, unit)
    if consumed:
        return consumed, msg
    for i in range(1, len(buf) - 3):
        if decode_at(buf[i:], unit)[1] is not None:
            return 1, None
    return 0, None


def _unit_ok(got: int, unit: int | None) -> bool:
    return 1 <= got <= 247 if unit is None else got == unit


def decode_request(buf: bytes, unit: int | None = None) -> tuple[int, Request | None]:
    """Device side. Returns (consumed, request); (0, None) = need more bytes, (n, None) = skipped junk."""
    return _resync(_request_at, buf, unit)


def _request_at(buf: bytes, unit: int | None) -> tuple[int, Request | None]:
    if len(buf) < 2:
        return 0, None
    if not _unit_ok(buf[0], unit):
        return 1, None
    function = buf[1]
    if function in (READ_HOLDING, READ_INPUT):
        if len(buf) < 8:
            return 0, None
        frame = bytes(buf[:8])
        _, _, address, count = struct.unpack(">BBHH", frame[:6])
        if not _crc_ok(frame) or not 1 <= count <= MAX_REGISTERS:
            return 1, None
        return 8, ReadRegisters(frame[0], function, address, count)
    if function == WRITE_MULTIPLE:
        if len(buf) < 7:
            return 0, None
        _, _, address, count, nbytes = struct.unpack(">BBHHB", bytes(buf[:7]))
        if not 1 <= count <= MAX_WRITE_REGISTERS or nbytes != 2 * count:
            return 1, None
        size = 7 + nbytes + 2
        if len(buf) < size:
            return 0, None
        frame = bytes(buf[:size])
        if not _crc_ok(frame):
            return 1, None
        return size, WriteRegisters(frame[0], address, struct.unpack(f">{count}H", frame[7 : 7 + nbytes]))
    if function == READ_WRITE_MULTIPLE:
        if len(buf) < 11:
            return 0, None
        _, _, r_addr, r_count, w_addr, w_count, nbytes = struct.unpack(">BBHHHHB", bytes(buf[:11]))
        if not (1 <= r_count <= MAX_REGISTERS and 1 <= w_count <= MAX_RW_WRITE_REGISTERS and nbytes == 2 * w_count):
            return 1, None
        size = 11 + nbytes + 2
        if len(buf) < size:
            return 0, None
        frame = bytes(buf[:size])
        if not _crc_ok(frame):
            return 1, None
        values = struct.unpack(f">{w_count}H", frame[11 : 11 + nbytes])
        return size, ReadWriteRegisters(frame[0], r_addr, r_count, w_addr, values)
    return 1, None


def decode_reply(buf: bytes, unit: int | None = None) -> tuple[int, Reply | None]:
    """Master side. Returns (consumed, reply); (0, None) = need more bytes, (n, None) = skipped junk."""
    return _resync(_reply_at, buf, unit)


def _reply_at(buf: bytes, unit: int | None) -> tuple[int, Reply | None]:
    if len(buf) < 2:
        return 0, None
    if not _unit_ok(buf[0], unit):
        return 1, None
    function = buf[1]
    if function & 0x80 and function & 0x7F in (READ_HOLDING, READ_INPUT, WRITE_MULTIPLE, READ_WRITE_MULTIPLE):
        if len(buf) < 5:
            return 0, None
        frame = bytes(buf[:5])
        if not _crc_ok(frame):
            return 1, None
        return 5, ExceptionReply(frame[0], function & 0x7F, frame[2])
    if function in (READ_HOLDING, READ_INPUT, READ_WRITE_MULTIPLE):
        if len(buf) < 3:
            return 0, None
        nbytes = buf[2]
        if nbytes == 0 or nbytes % 2 or nbytes > 2 * MAX_REGISTERS:
            return 1, None
        size = 3 + nbytes + 2
        if len(buf) < size:
            return 0, None
        frame = bytes(buf[:size])
        if not _crc_ok(frame):
            return 1, None
        return size, RegistersReply(frame[0], function, struct.unpack(f">{nbytes // 2}H", frame[3 : 3 + nbytes]))
    if function == WRITE_MULTIPLE:
        if len(buf) < 8:
            return 0, None
        frame = bytes(buf[:8])
        _, _, address, count = struct.unpack(">BBHH", frame[:6])
        if not _crc_ok(frame) or not 1 <= count <= MAX_WRITE_REGISTERS:
            return 1, None
        return 8, WriteReply(frame[0], address, count)
    return 1, None
