"""Every fault the Robotiq simulator can inject ends in a clear error or a bounded retry, never a hang."""

from __future__ import annotations

import argparse
import time

import pytest
from vla_runtime.drivers.base import (
    DeviceTimeout,
    DriverState,
    HardwareFault,
    PortLost,
    ProtocolError,
)
from vla_runtime.drivers.robotiq import sim as robotiq_sim
from vla_runtime.drivers.robotiq.gripper import RobotiqConfig, open_gripper
from vla_runtime.drivers.robotiq.sim import GripperModel, RobotiqSim
from vla_runtime.drivers.simdevice import FaultConfig

FAST = GripperModel(activation_s=0.0, stroke_fast_s=0.2)
CONFIG = dict(timeout=0.03, retries=2, activation_timeout=1.0)
BOUND_S = 2 * 3 * 0.03 + 1.0  # the failed exchange and the safe-state attempt, 3 tries each, plus slack


def _gripper(sim: RobotiqSim, **overrides):
    return open_gripper(RobotiqConfig(port=sim.port, **{**CONFIG, **overrides}))


@pytest.mark.parametrize(
    "faults,error,match",
    [
        (FaultConfig(drop_rate=1.0), DeviceTimeout, "0 of 1 replies"),
        (FaultConfig(bad_crc_rate=1.0), ProtocolError, "corrupt byte"),
        (FaultConfig(delay_ms=150), DeviceTimeout, "0 of 1 replies"),
    ],
    ids=["dropped", "bad-crc", "too-slow"],
)
def test_persistent_fault_is_a_clear_error_within_the_retry_budget(faults, error, match):
    with RobotiqSim(faults=faults, model=FAST) as sim:
        gripper = _gripper(sim)
        started = time.monotonic()
        with pytest.raises(error, match=match):
            gripper.read_status()  # one exchange, bounded by the link's own retries
        assert time.monotonic() - started < BOUND_S + 3 * faults.delay_ms / 1e3
        stats = gripper.link.stats
        assert stats.retries == 2 * stats.exchanges
        if not faults.delay_ms:  # a slow reply may still answer a later attempt of the same request
            with pytest.raises(error, match=match):
                gripper.configure()  # tried SETUP_ATTEMPTS times, then latched
            assert gripper.state is DriverState.FAULT
        gripper.close()


def test_occasional_drops_and_bad_crcs_are_absorbed_by_retries():
    faults = FaultConfig(drop_rate=0.15, bad_crc_rate=0.1, seed=0)
    with RobotiqSim(faults=faults, model=FAST) as sim:
        gripper = _gripper(sim, retries=3)
        try:
            gripper.configure()
            gripper.activate()
            for i in range(20):
                gripper.command(i / 20, now=i * 0.1, period=0.1)
                gripper.read(now=i * 0.1)
        finally:
            gripper.close()
        injected = sim.faults.dropped + sim.faults.corrupted
        assert injected > 0 and gripper.link.stats.retries == injected  # one retry per lost reply


def test_short_delay_inside_the_deadline_is_fine():
    with RobotiqSim(faults=FaultConfig(delay_ms=5), model=FAST) as sim:
        gripper = _gripper(sim)
        gripper.configure()
        assert gripper.read(now=0.0).fault is None
        gripper.close()


def test_hardware_error_latches_fault_with_the_device_reason():
    with RobotiqSim(faults=FaultConfig(hardware_error_ids=(9,)), model=FAST) as sim:
        gripper = _gripper(sim)
        with pytest.raises(HardwareFault, match="over-current"):
            gripper.configure()
        assert gripper.state is DriverState.FAULT and "0x0E" in gripper.fault
        gripper.close()


def test_vanishing_port_is_port_lost_and_safe_state():
    with RobotiqSim(model=FAST) as sim:
        gripper = _gripper(sim)
        gripper.configure()
        gripper.activate()
        sim.vanish()
        with pytest.raises((PortLost, DeviceTimeout)):  # the kernel may accept one more exchange
            for i in range(5):
                gripper.read(now=1.0 + i)
        assert gripper.state is DriverState.FAULT
        gripper.close()  # never raises, even with the port gone


def test_vanish_after_flag_ends_a_running_loop_with_port_lost():
    with RobotiqSim(faults=FaultConfig(vanish_after_s=0.2), model=FAST) as sim:
        gripper = _gripper(sim)
        gripper.configure()
        gripper.activate()
        deadline = time.monotonic() + 3.0
        with pytest.raises((PortLost, DeviceTimeout)):
            while time.monotonic() < deadline:  # a 50 Hz loop until the port goes away
                gripper.command(0.5, now=time.monotonic(), period=0.02)
                gripper.read(now=time.monotonic())
                time.sleep(0.02)
        assert sim.vanished.is_set() and gripper.state is DriverState.FAULT
        gripper.close()


def test_activation_that_never_completes_times_out():
    with RobotiqSim(model=GripperModel(activation_s=30.0)) as sim:
        gripper = _gripper(sim, activation_timeout=0.2)
        gripper.configure()
        with pytest.raises(DeviceTimeout, match="activation did not complete"):
            gripper.activate()
        assert gripper.state is DriverState.FAULT
        gripper.close()


def test_sim_device_cli_rejects_bad_flags_in_one_line(capsys):
    parser = argparse.ArgumentParser()
    robotiq_sim.add_arguments(parser)
    assert robotiq_sim.run(parser.parse_args(["--object-at", "300"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--object-at" in err[0]
    assert robotiq_sim.run(parser.parse_args(["--drop-rate", "2"])) == 2
    assert "--drop-rate" in capsys.readouterr().err


def test_bad_gripper_config_names_the_fix():
    with pytest.raises(ValueError, match="robot description"):
        RobotiqConfig(port="")
    with pytest.raises(ValueError, match="open_count < closed_count"):
        RobotiqConfig(port="/dev/null", open_count=200, closed_count=100)
