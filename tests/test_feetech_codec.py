"""Feetech STS/SMS codec against the frames of the Feetech protocol document (checksums recomputed)."""

from __future__ import annotations

import random

import pytest
from framer_cases import SPLITS, feed, split
from vla_runtime.drivers.feetech import protocol as p

SYNC4 = "FF FF FE 20 83 2A 06 " + " ".join(f"{i:02X} 00 08 00 00 E8 03" for i in (1, 2, 3, 4)) + " 58"

# (name, frame, id, instruction or ERR, params)
GOLDEN = [
    ("ping id 1", "FF FF 01 02 01 FB", 1, p.Inst.PING, ""),
    ("ping reply", "FF FF 01 02 00 FC", 1, 0, ""),
    ("read present position", "FF FF 01 04 02 38 02 BE", 1, p.Inst.READ, "38 02"),
    ("read reply 1304", "FF FF 01 04 00 18 05 DD", 1, 0, "18 05"),
    ("write goal 2048 speed 1000", "FF FF 01 09 03 2A 00 08 00 00 E8 03 D5", 1, p.Inst.WRITE, "2A 00 08 00 00 E8 03"),
    ("broadcast action", "FF FF FE 02 05 FA", 0xFE, p.Inst.ACTION, ""),
    ("4-servo sync write", SYNC4, 0xFE, p.Inst.SYNC_WRITE, SYNC4[15:-3]),
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("name,hexframe,dev,code,params", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_frames_decode_in_any_split(name, hexframe, dev, code, params, how):
    packets, skipped, rest = feed(p.decode, split(bytes.fromhex(hexframe), how))
    assert packets == [p.Packet(dev, code, bytes.fromhex(params))]
    assert skipped == 0 and rest == b""


@pytest.mark.parametrize("name,hexframe,dev,code,params", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_encoder_reproduces_golden_frames(name, hexframe, dev, code, params):
    assert p.encode(dev, code, bytes.fromhex(params)) == bytes.fromhex(hexframe)


def test_builders_match_document_frames():
    assert p.ping(1) == bytes.fromhex("FF FF 01 02 01 FB")
    assert p.read(1, 0x38, 2) == bytes.fromhex("FF FF 01 04 02 38 02 BE")
    assert p.action() == bytes.fromhex("FF FF FE 02 05 FA")
    data = {i: bytes.fromhex("00 08 00 00 E8 03") for i in (1, 2, 3, 4)}
    assert p.sync_write(0x2A, 6, data) == bytes.fromhex(SYNC4)
    assert p.from_bytes(bytes.fromhex("18 05")) == 1304


@pytest.mark.parametrize("how", SPLITS)
def test_garbage_before_and_after_is_skipped(how):
    frame = bytes.fromhex("FF FF 01 04 00 18 05 DD")
    noise = bytes([0x00, 0x13, 0xFF, 0x42, 0xFF, 0xFF, 0xFF])
    packets, skipped, rest = feed(p.decode, split(noise + frame + b"\x07\xff", how))
    assert [pk.params for pk in packets] == [bytes.fromhex("18 05")]
    assert skipped == len(noise) + 1 and rest == b"\xff"


@pytest.mark.parametrize("how", SPLITS)
def test_bad_checksum_then_good_frame(how):
    good = bytes.fromhex("FF FF 01 04 00 18 05 DD")
    bad = good[:-1] + b"\x00"
    packets, skipped, rest = feed(p.decode, split(bad + good, how))
    assert [pk.params for pk in packets] == [bytes.fromhex("18 05")]
    assert skipped == len(bad) and rest == b""


def test_random_frames_round_trip():
    rng = random.Random(7)
    for _ in range(200):
        params = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 30)))
        frame = p.encode(rng.randrange(0, 254), p.Inst.WRITE, params)
        for how in ("whole", "bytes"):
            packets, skipped, _ = feed(p.decode, split(frame, how))
            assert packets == [p.Packet(frame[2], p.Inst.WRITE, params)] and skipped == 0


@pytest.mark.parametrize(
    "value,bit,raw", [(0, 15, 0), (2048, 15, 2048), (-5, 15, 0x8005), (-2047, 11, 0xFFF), (100, 11, 100)]
)
def test_sign_magnitude(value, bit, raw):
    assert p.to_sign_magnitude(value, bit) == raw
    assert p.from_sign_magnitude(raw, bit) == value


def test_sign_magnitude_rejects_overflow():
    with pytest.raises(ValueError):
        p.to_sign_magnitude(2048, 11)
