"""RTDE framing and payloads against hand-assembled frames from the published wire layout."""

from __future__ import annotations

import struct

import pytest
from framer_cases import feed, split
from vla_runtime.drivers.ur import rtde
from vla_runtime.drivers.ur.recipes import INPUT_TYPES, OUTPUT_TYPES, Recipe, zero_value

H = bytes.fromhex

# (frame bytes, package built by our encoder): size u16 | type u8 | payload, all big-endian
GOLDEN = [
    (H("0005 56 0002"), rtde.request_protocol_version(2)),
    (H("0004 56 01"), rtde.accepted(rtde.REQUEST_PROTOCOL_VERSION, True)),
    (H("0003 76"), rtde.get_urcontrol_version()),
    (H("0013 76 00000005 0000000C 00000000 00000000"), rtde.urcontrol_version(5, 12, 0, 0)),
    (H("001D 4F 405F400000000000") + b"timestamp,actual_q", rtde.setup_outputs(("timestamp", "actual_q"), 125.0)),
    (H("0013 4F 01") + b"DOUBLE,VECTOR6D", rtde.recipe_reply(rtde.SETUP_OUTPUTS, 1, ("DOUBLE", "VECTOR6D"))),
    (H("0003 53"), rtde.start()),
    (H("0004 50 01"), rtde.accepted(rtde.PAUSE, True)),
    (H("0010 55 01 3FF8000000000000 00000007"), rtde.data_package(1, struct.pack(">di", 1.5, 7))),
    (H("000A 4D 02 6869 02 7572 03"), rtde.text_message(rtde.TextMessage("hi", "ur", rtde.INFO))),
]
GARBAGE = H("0000 FF01")  # a size-0 header, then a header with an unknown type


@pytest.mark.parametrize("how", ["whole", "halves", "bytes"])
@pytest.mark.parametrize("frame,pkg", GOLDEN, ids=[f[:3].hex() + str(i) for i, (f, _) in enumerate(GOLDEN)])
def test_golden_packages_encode_and_decode(frame, pkg, how):
    assert rtde.encode(pkg) == frame
    out, skipped, left = feed(rtde.decode, split(frame, how))
    assert out == [pkg] and skipped == 0 and left == b""


@pytest.mark.parametrize("how", ["whole", "halves", "bytes"])
@pytest.mark.parametrize("frame,pkg", GOLDEN, ids=[f[:3].hex() + str(i) for i, (f, _) in enumerate(GOLDEN)])
def test_garbage_around_a_package_is_skipped(frame, pkg, how):
    out, skipped, _ = feed(rtde.decode, split(GARBAGE + frame + GARBAGE, how))
    assert out == [pkg] and skipped >= len(GARBAGE)


def test_a_stream_of_packages_fed_byte_by_byte():
    stream = b"".join(f for f, _ in GOLDEN)
    out, skipped, left = feed(rtde.decode, split(stream, "bytes"))
    assert out == [p for _, p in GOLDEN] and skipped == 0 and left == b""


def test_payload_parsers_round_trip():
    assert rtde.parse_protocol_request(rtde.request_protocol_version(2).payload) == 2
    assert rtde.parse_setup_outputs(rtde.setup_outputs(("a", "b"), 10.0).payload, 2) == (10.0, ("a", "b"))
    assert rtde.parse_setup_outputs(rtde.setup_outputs(("a",), None).payload, 1) == (None, ("a",))
    assert rtde.parse_setup_inputs(b"x,y,") == ("x", "y")  # ur_rtde leaves a trailing comma
    assert rtde.parse_recipe_reply(H("02") + b"INT32,NOT_FOUND") == (2, ("INT32", "NOT_FOUND"))
    msg = rtde.TextMessage("watchdog", "Controller", rtde.ERROR)
    assert rtde.parse_text_message(rtde.text_message(msg).payload) == msg
    v1 = rtde.text_message(msg, version=1)
    assert rtde.parse_text_message(v1.payload, version=1) == rtde.TextMessage("watchdog", "", rtde.ERROR)
    assert rtde.parse_text_message(rtde.text_message(msg).payload, None) == msg  # layout tells the version
    assert rtde.parse_text_message(v1.payload, None).message == "watchdog"
    assert rtde.parse_urcontrol_version(rtde.urcontrol_version(3, 15, 7, 106).payload) == (3, 15, 7, 106)


def test_recipe_packs_every_type_and_checks_size():
    names = tuple(f"v{i}" for i in range(10))
    types = ("BOOL", "UINT8", "UINT32", "UINT64", "INT32", "DOUBLE", "VECTOR3D", "VECTOR6D", "VECTOR6INT32",
             "VECTOR6UINT32")  # fmt: skip
    recipe = Recipe(3, names, types)
    values = dict(
        zip(
            names,
            (True, 200, 2**32 - 1, 2**64 - 1, -5, 0.25, (1.0, 2.0, 3.0), (0.5,) * 6, (-1,) * 6, (7,) * 6),
            strict=True,
        )
    )
    body = recipe.pack(values)
    assert len(body) == recipe.size == 1 + 1 + 4 + 8 + 4 + 8 + 24 + 48 + 24 + 24
    assert recipe.unpack(body) == values
    with pytest.raises(ValueError, match="want"):
        recipe.unpack(body[:-1])
    with pytest.raises(ValueError, match="unusable"):
        Recipe(1, ("x",), ("NOT_FOUND",))


def test_variable_tables_are_consistent():
    assert OUTPUT_TYPES["actual_q"] == "VECTOR6D" and OUTPUT_TYPES["robot_mode"] == "INT32"
    assert INPUT_TYPES["input_double_register_47"] == "DOUBLE" and "input_int_register_48" not in INPUT_TYPES
    assert zero_value("VECTOR6D") == (0.0,) * 6 and zero_value("BOOL") is False
