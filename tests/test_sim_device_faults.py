"""Every injected fault ends in a clear error or a bounded retry, never a hang.

Each case runs the production driver against the simulator on a pty with one fault switched on
and checks both the outcome and the time it took against the link's own bound.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest
from vla_runtime.drivers.arm import JointCalibration, ServoArm, ServoArmConfig
from vla_runtime.drivers.base import (
    DeviceTimeout,
    DriverError,
    DriverState,
    HardwareFault,
    PortLost,
    ProtocolError,
)
from vla_runtime.drivers.dynamixel import protocol as dxl
from vla_runtime.drivers.dynamixel.bus import DynamixelBus
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.feetech import protocol as ft
from vla_runtime.drivers.feetech.bus import FeetechBus
from vla_runtime.drivers.feetech.sim import FeetechSim
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.simdevice import FaultConfig, add_fault_arguments, fault_config_from_args
from vla_runtime.drivers.transport import SerialConfig, SerialTransport

pytestmark = pytest.mark.timeout(60)

FAMILIES = {
    "dynamixel": (DynamixelSim, DynamixelBus, dxl.decode_status),
    "feetech": (FeetechSim, FeetechBus, ft.decode),
}
IDS = (1, 2, 3, 4, 5, 6)
TIMEOUT, RETRIES = 0.02, 2
BOUND = TIMEOUT * (RETRIES + 1) + 0.3  # the link's worst case plus slack for a loaded CI runner, seconds


@pytest.fixture(params=sorted(FAMILIES))
def make(request):
    sim_cls, bus_cls, decode = FAMILIES[request.param]
    opened = []

    def build(faults: FaultConfig, timeout=TIMEOUT, retries=RETRIES):
        sim = sim_cls(ids=IDS, faults=faults).start()
        transport = SerialTransport(SerialConfig(sim.port))
        opened.append((sim, transport))
        return sim, bus_cls(Link(transport, decode, LinkConfig(timeout=timeout, retries=retries)))

    yield build
    for sim, transport in opened:
        transport.close()
        sim.stop()


def arm_on(bus, **kw) -> ServoArm:
    joints = tuple(JointCalibration(name=f"j{i}", id=i, min=-3.0, max=3.0) for i in IDS)
    return ServoArm(bus, ServoArmConfig(joints=joints, **kw))


def timed(fn):
    t0 = time.monotonic()
    try:
        fn()
    finally:
        timed.elapsed = time.monotonic() - t0


def test_every_reply_dropped_times_out_within_bound(make):
    sim, bus = make(FaultConfig(drop_rate=1.0))
    with pytest.raises(DeviceTimeout, match=r"0 of 6 replies in 20 ms; check power"):
        timed(lambda: bus.read_state(IDS))
    assert timed.elapsed < BOUND
    assert bus.link.stats.retries == RETRIES and bus.link.stats.timeouts == RETRIES + 1


def test_some_replies_dropped_are_recovered_by_retries(make):
    sim, bus = make(FaultConfig(drop_rate=0.05, seed=3), retries=4)
    ok = 0
    for _ in range(40):
        try:
            timed(lambda: bus.read_state(IDS))
            ok += 1
        except DeviceTimeout:
            pass
        assert timed.elapsed < TIMEOUT * 5 + 0.3
    assert sim.faults.dropped > 0 and bus.link.stats.retries > 0
    assert ok >= 35


def test_corrupt_checksums_raise_protocol_error(make):
    sim, bus = make(FaultConfig(bad_crc_rate=1.0))
    with pytest.raises(ProtocolError, match="corrupt byte"):
        timed(lambda: bus.ping(1))
    assert timed.elapsed < BOUND and bus.link.stats.garbage_bytes > 0


def test_delay_beyond_deadline_times_out_and_within_deadline_succeeds(make):
    sim, bus = make(FaultConfig(delay_ms=60.0), retries=0)
    with pytest.raises(DeviceTimeout):
        timed(lambda: bus.ping(1))
    assert timed.elapsed < TIMEOUT + 0.3
    sim2, patient = make(FaultConfig(delay_ms=10.0), timeout=0.2)
    assert patient.ping(1) in (1060, 777)


def test_adapter_echo_is_not_mistaken_for_a_reply(make):
    sim, bus = make(FaultConfig(echo=True))
    assert bus.ping(1) in (1060, 777)
    positions, _ = bus.read_state(IDS)
    assert positions.tolist() == [2048 + 16 * i for i in IDS]
    if isinstance(bus, FeetechBus):  # a 2-byte READ echo has the shape of a 2-byte reply
        assert bus.read_raw(1, 56, 2) == (2048 + 16).to_bytes(2, "little")
    else:
        assert bus.link.stats.garbage_bytes > 0  # instruction packets are skipped by the status decoder


def test_hardware_error_bit_faults_the_arm_at_configure(make):
    sim, bus = make(FaultConfig(hardware_error_ids=(4,)))
    arm = arm_on(bus)
    with pytest.raises(HardwareFault, match="id 4"):
        arm.configure()
    assert arm.state is DriverState.FAULT and "overload" in arm.fault


def test_hardware_error_during_run_faults_and_cuts_torque(make):
    sim, bus = make(FaultConfig())
    arm = arm_on(bus)
    arm.configure()
    arm.activate()
    arm.read(0.0)
    sim.servos[2].raise_hardware_error()
    with pytest.raises(HardwareFault):
        for _ in range(20):
            arm.read(0.0)  # every status (Dynamixel) or the next health check (Feetech) reports it
    assert arm.state is DriverState.FAULT
    assert all(not s.torque for s in sim.servos.values())  # the fault path turned every servo off


def test_hold_on_fault_keeps_torque_on(make):
    sim, bus = make(FaultConfig())
    arm = arm_on(bus, on_fault="hold")
    arm.configure()
    arm.activate()
    sim.servos[2].raise_hardware_error()  # cuts torque on servo 2 only, as the device does
    with pytest.raises(HardwareFault):
        for _ in range(20):
            arm.read(0.0)
    assert arm.state is DriverState.FAULT
    assert [s.torque for i, s in sorted(sim.servos.items()) if i != 2] == [True] * 5


def test_unexpected_model_refuses_to_configure(make):
    sim, bus = make(FaultConfig())
    arm = arm_on(bus, expected_models=(4242,))
    with pytest.raises(DriverError, match="j1 \\(id 1\\) is model .* expected one of \\(4242,\\)"):
        arm.configure()


def test_fault_flags_parse_from_the_command_line():
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)
    args = parser.parse_args(
        ["--drop-rate", "0.1", "--hardware-error", "3", "--hardware-error", "5", "--vanish-after", "2"]
    )
    config = fault_config_from_args(args)
    assert (config.drop_rate, config.hardware_error_ids, config.vanish_after_s) == (0.1, (3, 5), 2.0)


def test_vanishing_port_ends_in_port_lost_not_a_hang(make):
    sim, bus = make(FaultConfig(vanish_after_s=0.2))
    arm = arm_on(bus)
    arm.configure()
    arm.activate()
    t0 = time.monotonic()
    with pytest.raises((PortLost, DeviceTimeout)):
        while time.monotonic() - t0 < 3.0:
            arm.read(time.monotonic())
            arm.command(np.zeros(len(IDS)), time.monotonic(), 0.1)
            time.sleep(0.01)
    assert time.monotonic() - t0 < 0.2 + 2 * BOUND
    assert sim.vanished.is_set() and arm.state is DriverState.FAULT


def test_fault_flags_are_validated():
    with pytest.raises(ValueError, match="--drop-rate must be within 0..1"):
        FaultConfig(drop_rate=1.5)
    with pytest.raises(ValueError, match="--delay-ms"):
        FaultConfig(delay_ms=-1)
