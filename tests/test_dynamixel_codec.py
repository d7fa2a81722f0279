"""Dynamixel Protocol 2.0 codec against frames from the ROBOTIS e-manual (CRCs recomputed)."""

from __future__ import annotations

import random

import pytest
from framer_cases import SPLITS, feed, split
from vla_runtime.drivers.dynamixel import protocol as p

# (name, frame, id, instruction, params after unstuffing)
GOLDEN = [
    ("ping id 1", "FF FF FD 00 01 03 00 01 19 4E", 1, p.Inst.PING, ""),
    ("ping status model 1030 fw 38", "FF FF FD 00 01 07 00 55 00 06 04 26 65 5D", 1, p.Inst.STATUS, "00 06 04 26"),
    ("ping status id 2", "FF FF FD 00 02 07 00 55 00 06 04 26 6F 6D", 2, p.Inst.STATUS, "00 06 04 26"),
    ("broadcast ping", "FF FF FD 00 FE 03 00 01 31 42", 0xFE, p.Inst.PING, ""),
    ("read 4 bytes at 132", "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15", 1, p.Inst.READ, "84 00 04 00"),
    ("read status 166", "FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0", 1, p.Inst.STATUS, "00 A6 00 00 00"),
    ("sync read status id 2", "FF FF FD 00 02 08 00 55 00 1F 08 00 00 BA BE", 2, p.Inst.STATUS, "00 1F 08 00 00"),
    ("write 512 at 116", "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89", 1, p.Inst.WRITE, "74 00 00 02 00 00"),
    ("write status", "FF FF FD 00 01 04 00 55 00 A1 0C", 1, p.Inst.STATUS, "00"),
    (
        "sync write 150/170 at 116",
        "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87",
        0xFE,
        p.Inst.SYNC_WRITE,
        "74 00 04 00 01 96 00 00 00 02 AA 00 00 00",
    ),
    (
        "bulk read",
        "FF FF FD 00 FE 0D 00 92 01 90 00 02 00 02 92 00 01 00 1A 05",
        0xFE,
        p.Inst.BULK_READ,
        "01 90 00 02 00 02 92 00 01 00",
    ),
    ("reboot id 1", "FF FF FD 00 01 03 00 08 2F 4E", 1, p.Inst.REBOOT, ""),
    ("factory reset keep id", "FF FF FD 00 01 04 00 06 01 A1 E6", 1, p.Inst.FACTORY_RESET, "01"),
]


def test_crc_check_value():
    assert p.crc16(b"123456789") == 0xFEE8


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("name,hexframe,dev,inst,params", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_frames_decode_in_any_split(name, hexframe, dev, inst, params, how):
    frame = bytes.fromhex(hexframe)
    packets, skipped, rest = feed(p.decode, split(frame, how))
    assert packets == [p.Packet(dev, inst, bytes.fromhex(params))]
    assert skipped == 0 and rest == b""


@pytest.mark.parametrize("name,hexframe,dev,inst,params", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_encoder_reproduces_golden_frames(name, hexframe, dev, inst, params):
    assert p.encode(dev, inst, bytes.fromhex(params)) == bytes.fromhex(hexframe)


def test_builders_match_manual_frames():
    assert p.ping(1).hex(" ").upper() == "FF FF FD 00 01 03 00 01 19 4E"
    assert p.read(1, 132, 4) == bytes.fromhex("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15")
    assert p.write(1, 116, p.to_bytes(512, 4)) == bytes.fromhex("FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89")
    assert p.sync_write(116, 4, {1: p.to_bytes(150, 4), 2: p.to_bytes(170, 4)}) == bytes.fromhex(
        "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87"
    )
    assert p.reboot(1) == bytes.fromhex("FF FF FD 00 01 03 00 08 2F 4E")


@pytest.mark.parametrize("how", SPLITS)
def test_garbage_before_and_after_is_skipped(how):
    frame = bytes.fromhex(GOLDEN[5][1])
    noise = bytes([0x00, 0xFF, 0x13, 0xFF, 0xFF, 0x42])
    packets, skipped, rest = feed(p.decode, split(noise + frame + b"\x07\xff\xff\xfd", how))
    assert [pk.data for pk in packets] == [bytes.fromhex("A6 00 00 00")]
    assert skipped == len(noise) + 1  # the trailing 07; FF FF FD may be the start of the next header
    assert rest == b"\xff\xff\xfd"


@pytest.mark.parametrize("how", SPLITS)
def test_bad_crc_then_good_frame(how):
    good = bytes.fromhex(GOLDEN[5][1])
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    packets, skipped, rest = feed(p.decode, split(bad + good, how))
    assert len(packets) == 1 and packets[0].data == bytes.fromhex("A6 00 00 00")
    assert skipped == len(bad) and rest == b""


def test_impossible_length_resyncs():
    good = bytes.fromhex(GOLDEN[0][1])
    junk = bytes.fromhex("FF FF FD 00 01 FF FF")  # LEN 65535 > 1024
    packets, skipped, _ = feed(p.decode, [junk + good])
    assert packets == [p.Packet(1, p.Inst.PING, b"")] and skipped == len(junk)


def test_byte_stuffing_round_trip_of_header_lookalike():
    value = p.to_bytes(0x00FDFFFF, 4)  # FF FF FD 00 on the wire
    frame = p.write(1, 116, value)
    assert b"\xff\xff\xfd\xfd" in frame[7:]
    assert frame[5] | frame[6] << 8 == len(frame) - 7  # LEN counts the inserted FD
    packets, _, _ = feed(p.decode, [frame])
    assert packets[0].params == bytes([116, 0]) + value


def test_random_payloads_round_trip_whole_and_bytewise():
    rng = random.Random(5)
    for _ in range(200):
        params = bytes(rng.choice([0xFF, 0xFD, 0x00, rng.randrange(256)]) for _ in range(rng.randrange(0, 40)))
        frame = p.encode(rng.randrange(0, 253), p.Inst.WRITE, params)
        for how in ("whole", "bytes"):
            packets, skipped, rest = feed(p.decode, split(frame, how))
            assert packets == [p.Packet(frame[4], p.Inst.WRITE, params)] and skipped == 0 and rest == b""


def test_status_decoder_ignores_instruction_echo():
    echo = p.read(1, 132, 4)
    status = bytes.fromhex(GOLDEN[5][1])
    consumed, pkt = p.decode_status(echo + status)
    assert (consumed, pkt) == (len(echo), None)
    consumed, pkt = p.decode_status(status)
    assert pkt is not None and pkt.error == 0 and pkt.data == bytes.fromhex("A6 00 00 00")


def test_alert_bit_and_error_number_are_exposed():
    pkt = p.decode(p.encode_status(3, p.ALERT_BIT | p.StatusError.DATA_RANGE))[1]
    assert pkt.error & p.ALERT_BIT and pkt.error & 0x7F == p.StatusError.DATA_RANGE
