"""Modbus RTU codec against the Robotiq manual's frames, fed whole, in halves and byte by byte."""

from __future__ import annotations

import pytest
from framer_cases import feed, split
from vla_runtime.drivers.robotiq import codec
from vla_runtime.drivers.robotiq.registers import (
    ACT,
    GTO,
    ActivationStatus,
    GripperRequest,
    GripperStatus,
    ObjectStatus,
)

H = bytes.fromhex

# (direction, frame bytes, decoded message) from the Robotiq 2F-85 / Hand-E manuals
GOLDEN = [
    ("request", H("09 10 03 E8 00 03 06 01 00 00 00 00 00 72 E1"), codec.WriteRegisters(9, 1000, (0x0100, 0, 0))),
    ("reply", H("09 10 03 E8 00 03 01 30"), codec.WriteReply(9, 1000, 3)),
    ("request", H("09 04 07 D0 00 03 B1 CE"), codec.ReadRegisters(9, codec.READ_INPUT, 2000, 3)),
    ("request", H("09 10 03 E8 00 03 06 09 00 00 00 FF FF 72 19"), codec.WriteRegisters(9, 1000, (0x0900, 0, 0xFFFF))),
    ("reply", H("09 04 06 F9 00 00 00 0D 00 17 AA"), codec.RegistersReply(9, codec.READ_INPUT, (0xF900, 0, 0x0D00))),
]
DECODERS = {"request": codec.decode_request, "reply": codec.decode_reply}
GARBAGE = H("00 FF 13 37")  # id 0, id 255, then ids whose "function" bytes are unknown


def test_crc_check_value_and_byte_order():
    assert codec.crc16_modbus(b"123456789") == 0x4B37
    assert codec.with_crc(H("09 10 03 E8 00 03"))[-2:] == H("01 30")  # low byte first


@pytest.mark.parametrize("how", ["whole", "halves", "bytes"])
@pytest.mark.parametrize("direction,frame,msg", GOLDEN, ids=[f.hex() for _, f, _ in GOLDEN])
def test_golden_frames_decode_and_encode(direction, frame, msg, how):
    out, skipped, left = feed(DECODERS[direction], split(frame, how))
    assert out == [msg] and skipped == 0 and left == b""
    assert codec.encode(msg) == frame


@pytest.mark.parametrize("how", ["whole", "halves", "bytes"])
@pytest.mark.parametrize("direction,frame,msg", GOLDEN, ids=[f.hex() for _, f, _ in GOLDEN])
def test_garbage_before_and_after_is_skipped(direction, frame, msg, how):
    out, skipped, _ = feed(DECODERS[direction], split(GARBAGE + frame + GARBAGE, how))
    assert out == [msg]
    assert skipped >= len(GARBAGE)


@pytest.mark.parametrize("direction,frame,msg", GOLDEN, ids=[f.hex() for _, f, _ in GOLDEN])
def test_bad_crc_then_good_frame(direction, frame, msg):
    corrupt = frame[:-1] + bytes([frame[-1] ^ 0x5A])
    out, skipped, _ = feed(DECODERS[direction], split(corrupt + frame, "bytes"))
    assert out == [msg]
    assert skipped == len(corrupt)


def test_partial_frame_needs_more_bytes():
    frame = GOLDEN[0][1]
    for n in range(len(frame)):
        assert codec.decode_request(frame[:n]) == (0, None)


@pytest.mark.parametrize("how", ["whole", "halves", "bytes"])
def test_read_write_multiple_request_and_reply(how):
    msg = codec.ReadWriteRegisters(9, 2000, 3, 1000, (0x0900, 0x0000, 0xFFFF))
    frame = codec.encode(msg)
    assert frame[:11] == H("09 17 07 D0 00 03 03 E8 00 03 06") and len(frame) == 19
    out, skipped, _ = feed(codec.decode_request, split(GARBAGE + frame, how))
    assert out == [msg] and skipped == len(GARBAGE)
    reply = codec.RegistersReply(9, codec.READ_WRITE_MULTIPLE, (0xF900, 0, 0x0D00))
    out, _, _ = feed(codec.decode_reply, split(codec.encode(reply), how))
    assert out == [reply]


def test_exception_reply_round_trip():
    msg = codec.ExceptionReply(9, codec.WRITE_MULTIPLE, 2)
    frame = codec.encode(msg)
    assert frame[:3] == H("09 90 02")
    assert codec.decode_reply(frame) == (len(frame), msg)


def test_reply_decoder_filters_device_id():
    frame = GOLDEN[1][1]
    assert codec.decode_reply(frame, unit=9) == (8, GOLDEN[1][2])
    assert codec.decode_reply(frame, unit=3) == (1, None)


def test_register_fields_match_manual_status():
    status = GripperStatus.from_registers((0xF900, 0, 0x0D00))
    assert status.activated and status.going
    assert status.activation is ActivationStatus.COMPLETE and status.object is ObjectStatus.AT_POSITION
    assert (status.position, status.fault, status.fault_text) == (0x0D, 0, None)
    assert status.to_registers() == (0xF900, 0, 0x0D00)
    move = GripperRequest(action=ACT | GTO, position=0, speed=255, force=255)
    assert move.to_registers() == (0x0900, 0, 0xFFFF)
    assert GripperRequest.from_registers(move.to_registers()) == move


def test_register_fields_reject_out_of_range():
    with pytest.raises(ValueError, match="position must be 0..255"):
        GripperRequest(position=256)
