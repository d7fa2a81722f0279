"""Every fault the UR simulator injects ends in a clear error or is absorbed, never a hang."""

from __future__ import annotations

import argparse
import socket
import time

import numpy as np
import pytest
from vla_runtime.drivers.base import DeviceTimeout, DriverState, HardwareFault, PortLost
from vla_runtime.drivers.simdevice import FaultConfig
from vla_runtime.drivers.transport import TcpConfig, TcpTransport
from vla_runtime.drivers.ur import rtde
from vla_runtime.drivers.ur import sim as ur_sim
from vla_runtime.drivers.ur.arm import URConfig, open_arm
from vla_runtime.drivers.ur.client import RTDEClient, RTDEClientConfig
from vla_runtime.drivers.ur.sim import URSim

FAST = dict(setup_timeout=0.2, start_timeout=1.0, receive_timeout=0.1)


def _arm(sim: URSim, **overrides):
    config = dict(host="127.0.0.1", port=sim.port, script_port=sim.script_port, **FAST)
    return open_arm(URConfig(**{**config, **overrides}))


def test_no_replies_is_a_setup_timeout_within_its_deadline():
    with URSim(port=0, script_port=0, faults=FaultConfig(drop_rate=1.0)) as sim:
        arm = _arm(sim)
        started = time.monotonic()
        with pytest.raises(DeviceTimeout, match="no reply to RTDE 'V' in 0.2 s"):
            arm.configure()
        assert time.monotonic() - started < 1.5
        assert arm.state is DriverState.FAULT
        arm.close()


def test_slow_controller_is_a_timeout_not_a_hang():
    with URSim(port=0, script_port=0, faults=FaultConfig(delay_ms=400)) as sim:
        arm = _arm(sim)
        started = time.monotonic()
        with pytest.raises(DeviceTimeout):
            arm.configure()
        assert time.monotonic() - started < 1.5
        arm.close()


def test_junk_between_packages_is_skipped_and_the_arm_still_works():
    with URSim(port=0, script_port=0, faults=FaultConfig(bad_crc_rate=0.3, seed=1)) as sim:
        arm = _arm(sim)
        try:
            arm.configure()
            arm.activate()
            q = arm.read(now=0.0).positions
            for i in range(5):
                arm.command(q + 0.02, now=i * 0.1, period=0.1)
                time.sleep(0.05)
                arm.read(now=i * 0.1)
        finally:
            arm.close()
        assert arm.client.garbage_bytes > 0 and sim.faults.corrupted > 0


def test_protective_stop_at_start_refuses_to_configure():
    with URSim(port=0, script_port=0, faults=FaultConfig(hardware_error_ids=(1,))) as sim:
        arm = _arm(sim)
        with pytest.raises(HardwareFault, match="protective stop; clear it on the pendant"):
            arm.configure()
        assert arm.state is DriverState.FAULT
        arm.close()


def test_protective_stop_while_moving_latches_fault_and_the_arm_stops():
    with URSim(port=0, script_port=0) as sim:
        arm = _arm(sim)
        try:
            arm.configure()
            arm.activate()
            q = arm.read(now=0.0).positions
            arm.command(q + 1.0, now=0.0, period=0.1)
            time.sleep(0.05)
            sim.controller.protective_stop()
            deadline = time.monotonic() + 2.0
            with pytest.raises(HardwareFault, match="protective stop"):
                while time.monotonic() < deadline:  # packages already in flight still say "normal"
                    arm.read(now=0.1)
                    time.sleep(0.01)
            assert arm.state is DriverState.FAULT and sim.controller.program is None
            with pytest.raises(Exception, match="activate"):
                arm.command(q, now=0.2, period=0.1)  # writes stay refused until acknowledged
        finally:
            arm.close()


def test_vanishing_controller_is_port_lost_and_never_hangs():
    with URSim(port=0, script_port=0) as sim:
        arm = _arm(sim)
        try:
            arm.configure()
            arm.activate()
            sim.vanish()
            started = time.monotonic()
            with pytest.raises((PortLost, DeviceTimeout)):
                for i in range(20):  # the first read may still find buffered packages
                    arm.read(now=i * 0.1)
                    arm.command(np.zeros(6), now=i * 0.1, period=0.1)
            assert time.monotonic() - started < 2.0
            assert arm.state is DriverState.FAULT
        finally:
            arm.close()  # never raises, even with the controller gone


def test_vanish_after_flag_takes_the_controller_away():
    with URSim(port=0, script_port=0, faults=FaultConfig(vanish_after_s=0.3)) as sim:
        arm = _arm(sim)
        try:
            arm.configure()
            deadline = time.monotonic() + 3.0
            with pytest.raises((PortLost, DeviceTimeout)):
                while time.monotonic() < deadline:
                    arm.read(now=time.monotonic())
                    time.sleep(0.02)
            assert sim.vanished.is_set()
        finally:
            arm.close()


def test_sim_device_cli_on_a_busy_port_is_one_line(capsys):
    parser = argparse.ArgumentParser()
    ur_sim.add_arguments(parser)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert ur_sim.run(parser.parse_args(["--port", str(port), "--script-port", "0"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--port 0" in err[0]
    assert ur_sim.run(parser.parse_args(["--port", "0", "--max-joint-speed", "-1"])) == 2
    assert "max_joint_speed" in capsys.readouterr().err


def test_malformed_client_package_is_reported_and_the_controller_carries_on():
    with URSim(port=0, script_port=0) as sim:
        client = RTDEClient(TcpTransport(TcpConfig("127.0.0.1", sim.port)), RTDEClientConfig(setup_timeout=0.5))
        try:
            client.transport.write(rtde.encode(rtde.Package(rtde.REQUEST_PROTOCOL_VERSION, b"")))  # no version
            assert client.negotiate() == 2
            client.setup_outputs(("timestamp",))
            assert any("malformed" in m.message for m in client.messages)
        finally:
            client.transport.close()
