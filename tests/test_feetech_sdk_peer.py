"""Feetech's SDK (feetech-servo-sdk from PyPI, `scservo_sdk`) as an independent judge.

1. The SDK, acting as master, operates our simulated STS servos on a pty.
2. For the same operation, the bytes the SDK puts on the wire equal our encoder's.
"""

from __future__ import annotations

import select

import pytest
from servo_peers import sdk_capture, sdk_on_port, sync_read_tx, sync_write_then_read, sync_write_tx
from vla_runtime.drivers.feetech import protocol as p
from vla_runtime.drivers.feetech.sim import FeetechSim
from vla_runtime.drivers.feetech.tables import STS_SMS, Reg

sdk = pytest.importorskip("scservo_sdk", reason="feetech-servo-sdk is the independent peer (pip install -e .[peers])")

pytestmark = pytest.mark.timeout(60)
IDS = (1, 2, 3, 4, 5, 6)
GOAL, PRESENT = STS_SMS[Reg.GOAL_POSITION][0], STS_SMS[Reg.PRESENT_POSITION][0]
TORQUE, OFFSET = STS_SMS[Reg.TORQUE_ENABLE][0], STS_SMS[Reg.HOMING_OFFSET][0]


@pytest.fixture
def sim():
    with FeetechSim(ids=IDS) as s:
        yield s


@pytest.fixture
def sdk_port(sim, monkeypatch):
    with sdk_on_port(sdk, sim.port, 0, monkeypatch) as port_ph:  # 0 = STS/SMS little-endian
        yield port_ph


def test_sdk_ping_read_write(sim, sdk_port):
    port, ph = sdk_port
    assert ph.ping(port, 4) == (777, sdk.COMM_SUCCESS, 0)
    assert ph.write2ByteTxRx(port, 4, GOAL, 1000) == (sdk.COMM_SUCCESS, 0)
    assert ph.read2ByteTxRx(port, 4, GOAL) == (1000, sdk.COMM_SUCCESS, 0)
    assert ph.read1ByteTxRx(port, 4, STS_SMS[Reg.ID][0]) == (4, sdk.COMM_SUCCESS, 0)
    _, result, _ = ph.ping(port, 42)
    assert result == sdk.COMM_RX_TIMEOUT


def test_sdk_sync_write_then_sync_read_of_six(sim, sdk_port):
    values = {i: [sdk.SCS_LOBYTE(1000 + i), sdk.SCS_HIBYTE(1000 + i)] for i in IDS}
    assert sync_write_then_read(sdk, *sdk_port, GOAL, 2, values) == [1001, 1002, 1003, 1004, 1005, 1006]


def test_sdk_moves_a_servo_and_reads_it_back(sim, sdk_port):
    port, ph = sdk_port
    assert ph.write1ByteTxRx(port, 2, TORQUE, 1) == (sdk.COMM_SUCCESS, 0)
    assert ph.write2ByteTxRx(port, 2, GOAL, 2500) == (sdk.COMM_SUCCESS, 0)
    for _ in range(100):
        pos, result, _ = ph.read2ByteTxRx(port, 2, PRESENT)
        if pos == 2500:
            break
        select.select([], [], [], 0.01)
    assert (pos, result) == (2500, sdk.COMM_SUCCESS)


def test_homing_offset_sign_seen_by_sdk(sim, sdk_port):
    """Present = Actual - Offset on Feetech; the SDK's own sign helper encodes the offset."""
    port, ph = sdk_port
    before, _, _ = ph.read2ByteTxRx(port, 3, PRESENT)
    raw = sdk.SCS_TOSCS(-100, 11)  # sign-magnitude, sign bit 11
    assert ph.write2ByteTxRx(port, 3, OFFSET, raw) == (sdk.COMM_SUCCESS, 0)
    after, _, _ = ph.read2ByteTxRx(port, 3, PRESENT)
    assert after == before + 100


def test_sdk_reports_overload_bit(sim, sdk_port):
    port, ph = sdk_port
    sim.servos[5].raise_hardware_error(p.StatusError.OVERLOAD)
    _, result, error = ph.read2ByteTxRx(port, 5, PRESENT)
    assert result == sdk.COMM_SUCCESS and error == p.StatusError.OVERLOAD
    assert "Overload" in ph.getRxPacketError(error)


# -- byte equality ---------------------------------------------------------------------------------
@pytest.fixture
def capture():
    with sdk_capture(sdk, 0) as run:
        yield run


BYTE_CASES = [
    ("ping", lambda port, ph: ph.ping(port, 7), p.ping(7)),
    ("read", lambda port, ph: ph.readTx(port, 2, PRESENT, 4), p.read(2, PRESENT, 4)),
    ("write", lambda port, ph: ph.write2ByteTxOnly(port, 1, GOAL, 3000), p.write(1, GOAL, p.to_bytes(3000, 2))),
    (
        "write negative goal",
        lambda port, ph: ph.write2ByteTxOnly(port, 1, GOAL, sdk.SCS_TOSCS(-300, 15)),
        p.write(1, GOAL, p.to_bytes(p.to_sign_magnitude(-300, 15), 2)),
    ),
    ("sync read", sync_read_tx(sdk, PRESENT, 4, IDS), p.sync_read(PRESENT, 4, IDS)),
    (
        "sync write",
        sync_write_tx(sdk, GOAL, 2, {i: [sdk.SCS_LOBYTE(2000 + 9 * i), sdk.SCS_HIBYTE(2000 + 9 * i)] for i in IDS}),
        p.sync_write(GOAL, 2, {i: p.to_bytes(2000 + 9 * i, 2) for i in IDS}),
    ),
    ("action", lambda port, ph: ph.action(port, p.BROADCAST_ID), p.action()),
]


@pytest.mark.parametrize("name,sdk_op,ours", BYTE_CASES, ids=[c[0] for c in BYTE_CASES])
def test_encoder_bytes_equal_sdk_bytes(capture, name, sdk_op, ours):
    assert capture(sdk_op) == ours
