"""The ROBOTIS SDK (dynamixel-sdk from PyPI) as an independent judge of our simulator and encoder.

1. The SDK, acting as master, operates our simulated servos on a pty.
2. For the same operation, the bytes the SDK puts on the wire equal our encoder's.
"""

from __future__ import annotations

import pytest
from servo_peers import sdk_capture, sdk_on_port, sync_read_tx, sync_write_then_read, sync_write_tx
from vla_runtime.drivers.dynamixel import protocol as p
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.dynamixel.tables import X_SERIES, HardwareError, Reg

sdk = pytest.importorskip("dynamixel_sdk", reason="dynamixel-sdk is the independent peer (pip install -e .[peers])")

pytestmark = pytest.mark.timeout(60)
IDS = (1, 2, 3, 4, 5, 6)
GOAL, PRESENT = X_SERIES[Reg.GOAL_POSITION][0], X_SERIES[Reg.PRESENT_POSITION][0]


@pytest.fixture
def sim():
    with DynamixelSim(ids=IDS, model=1020) as s:
        yield s


@pytest.fixture
def sdk_port(sim, monkeypatch):
    with sdk_on_port(sdk, sim.port, 2.0, monkeypatch) as port_ph:
        yield port_ph


def test_sdk_ping_read_write(sim, sdk_port):
    port, ph = sdk_port
    assert ph.ping(port, 3) == (1020, sdk.COMM_SUCCESS, 0)
    assert ph.write4ByteTxRx(port, 3, GOAL, 3000) == (sdk.COMM_SUCCESS, 0)
    assert ph.read4ByteTxRx(port, 3, GOAL) == (3000, sdk.COMM_SUCCESS, 0)
    assert ph.read1ByteTxRx(port, 3, X_SERIES[Reg.ID][0]) == (3, sdk.COMM_SUCCESS, 0)
    assert ph.write1ByteTxRx(port, 3, X_SERIES[Reg.RETURN_DELAY_TIME][0], 0) == (sdk.COMM_SUCCESS, 0)
    _, result, _ = ph.ping(port, 42)  # nobody there
    assert result == sdk.COMM_RX_TIMEOUT


def test_sdk_byte_stuffing_round_trips(sim, sdk_port):
    port, ph = sdk_port
    assert ph.write4ByteTxRx(port, 1, GOAL, 0x00FDFFFF) == (sdk.COMM_SUCCESS, 0)
    assert ph.read4ByteTxRx(port, 1, GOAL) == (0x00FDFFFF, sdk.COMM_SUCCESS, 0)
    assert sim.servos[1].get(Reg.GOAL_POSITION) == 0x00FDFFFF


def test_sdk_group_sync_write_then_sync_read(sim, sdk_port):
    values = {i: list((1000 + i).to_bytes(4, "little")) for i in IDS}
    assert sync_write_then_read(sdk, *sdk_port, GOAL, 4, values) == [1001, 1002, 1003, 1004, 1005, 1006]
    assert [sim.servos[i].get(Reg.GOAL_POSITION) for i in IDS] == [1001, 1002, 1003, 1004, 1005, 1006]


def test_sdk_bulk_read_and_broadcast_ping(sim, sdk_port):
    port, ph = sdk_port
    bulk = sdk.GroupBulkRead(port, ph)
    assert bulk.addParam(1, PRESENT, 4) and bulk.addParam(2, X_SERIES[Reg.MODEL_NUMBER][0], 2)
    assert bulk.txRxPacket() == sdk.COMM_SUCCESS
    assert bulk.getData(1, PRESENT, 4) == sim.servos[1].get(Reg.PRESENT_POSITION)
    assert bulk.getData(2, 0, 2) == 1020
    found, result = ph.broadcastPing(port)
    assert result == sdk.COMM_SUCCESS
    assert sorted(found) == list(IDS) and all(v[0] == 1020 for v in found.values())


def test_sdk_sees_hardware_error_and_reboot_clears_it(sim, sdk_port):
    port, ph = sdk_port
    sim.servos[2].raise_hardware_error(HardwareError.OVERHEATING)
    _, result, error = ph.read1ByteTxRx(port, 2, X_SERIES[Reg.HARDWARE_ERROR_STATUS][0])
    assert result == sdk.COMM_SUCCESS and error & 0x80
    assert "Hardware error" in ph.getRxPacketError(error)
    assert ph.reboot(port, 2) == (sdk.COMM_SUCCESS, 0)
    assert ph.read1ByteTxRx(port, 2, X_SERIES[Reg.HARDWARE_ERROR_STATUS][0]) == (0, sdk.COMM_SUCCESS, 0)


# -- byte equality: what the SDK writes vs what our encoder writes -----------------------------------
@pytest.fixture
def capture():
    with sdk_capture(sdk, 2.0) as run:
        yield run


def _bulk_read_tx(port, ph):
    g = sdk.GroupBulkRead(port, ph)
    g.addParam(1, PRESENT, 4)
    g.addParam(5, 0, 2)
    g.txPacket()


BYTE_CASES = [
    ("ping", lambda port, ph: ph.ping(port, 7), p.ping(7)),
    ("read", lambda port, ph: ph.readTx(port, 2, PRESENT, 4), p.read(2, PRESENT, 4)),
    ("write", lambda port, ph: ph.write4ByteTxOnly(port, 1, GOAL, 3000), p.write(1, GOAL, p.to_bytes(3000, 4))),
    (
        "write negative",
        lambda port, ph: ph.write4ByteTxOnly(port, 1, GOAL, (-1234) & 0xFFFFFFFF),
        p.write(1, GOAL, p.to_bytes(-1234, 4)),
    ),
    ("sync read", sync_read_tx(sdk, 128, 8, IDS), p.sync_read(128, 8, IDS)),
    (
        "sync write",
        sync_write_tx(sdk, GOAL, 4, {i: list((2000 + 7 * i).to_bytes(4, "little")) for i in IDS}),
        p.sync_write(GOAL, 4, {i: p.to_bytes(2000 + 7 * i, 4) for i in IDS}),
    ),
    ("bulk read", _bulk_read_tx, p.bulk_read([(1, PRESENT, 4), (5, 0, 2)])),
    ("reboot", lambda port, ph: ph.reboot(port, 4), p.reboot(4)),
]


@pytest.mark.parametrize("name,sdk_op,ours", BYTE_CASES, ids=[c[0] for c in BYTE_CASES])
def test_encoder_bytes_equal_sdk_bytes(capture, name, sdk_op, ours):
    assert capture(sdk_op) == ours


def test_sdk_sends_header_lookalike_unstuffed_and_both_forms_decode(capture):
    """dynamixel-sdk 4.1's addStuffing rebinds a local list, so its TX path never stuffs.

    The e-manual requires FF FF FD -> FF FF FD FD inside the payload; our encoder follows the
    manual. The SDK's unstuffed frame is still unambiguous here (FD is followed by 00, not FD),
    so our decoder must accept both forms and read the same value from each.
    """
    value = p.to_bytes(0x00FDFFFF, 4)
    sent = capture(lambda port, ph: ph.write4ByteTxOnly(port, 1, GOAL, 0x00FDFFFF))
    ours = p.write(1, GOAL, value)
    body = bytes([p.Inst.WRITE, GOAL, 0]) + value
    head = p.HEADER + bytes([1, len(body) + 2, 0])
    crc = p.crc16(head + body)
    assert sent == head + body + bytes([crc & 0xFF, crc >> 8])  # the SDK's frame, exactly
    assert b"\xff\xff\xfd\xfd" in ours and len(ours) == len(sent) + 1
    assert p.decode(sent)[1] == p.decode(ours)[1] == p.Packet(1, p.Inst.WRITE, bytes([GOAL, 0]) + value)
