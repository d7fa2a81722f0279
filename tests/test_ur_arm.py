"""URArm and RTDEClient against the loopback controller simulator: lifecycle, motion, watchdog, recipes."""

from __future__ import annotations

import time

import numpy as np
import pytest
from vla_runtime.drivers.base import DeviceTimeout, DriverState, HardwareFault, LifecycleError, ProtocolError
from vla_runtime.drivers.transport import TcpConfig, TcpTransport
from vla_runtime.drivers.ur import rtde
from vla_runtime.drivers.ur.arm import URConfig, open_arm
from vla_runtime.drivers.ur.client import RTDEClient
from vla_runtime.drivers.ur.controller import ArmModel
from vla_runtime.drivers.ur.program import ProgramConfig, ProgramState, parse_program
from vla_runtime.drivers.ur.sim import URSim


@pytest.fixture
def sim():
    device = URSim(port=0, script_port=0, model=ArmModel(max_joint_speed=2.0)).start()
    yield device
    device.stop()


def _arm(sim: URSim, **overrides):
    config = dict(host="127.0.0.1", port=sim.port, script_port=sim.script_port, start_timeout=2.0)
    return open_arm(URConfig(**{**config, **overrides}))


def _client(sim: URSim) -> RTDEClient:
    client = RTDEClient(TcpTransport(TcpConfig("127.0.0.1", sim.port)))
    client.negotiate()
    return client


def test_arm_lifecycle_and_joint_targets_are_followed(sim):
    arm = _arm(sim)
    try:
        with pytest.raises(LifecycleError):
            arm.read(now=0.0)
        arm.configure()
        home = arm.read(now=0.0).positions
        np.testing.assert_allclose(home, ArmModel().initial_q)
        with pytest.raises(LifecycleError, match="activate"):
            arm.command(home, now=0.0, period=0.1)
        assert sim.controller.program is None

        arm.activate()
        assert arm.state is DriverState.ACTIVE and arm.program_state is ProgramState.HOLDING
        assert sim.controller.program.watchdog_hz == ProgramConfig().watchdog_hz  # the uploaded settings

        target = home + np.array([0.2, -0.1, 0.1, 0.0, 0.05, -0.2])
        for i in range(8):
            sent = arm.command(target, now=i * 0.1, period=0.1)
            np.testing.assert_array_equal(sent, target)  # doubles travel unchanged
            time.sleep(0.1)
        reading = arm.read(now=0.8)
        np.testing.assert_allclose(reading.positions, target, atol=1e-3)
        assert arm.program_state is ProgramState.FOLLOWING

        with pytest.raises(ValueError, match="non-finite"):
            arm.command(np.full(6, np.nan), now=0.9, period=0.1)
        with pytest.raises(ValueError, match="6 targets"):
            arm.command(np.zeros(5), now=0.9, period=0.1)

        arm.deactivate()
        assert arm.state is DriverState.INACTIVE and sim.controller.program is None
        arm.read(now=1.0)  # reads stay allowed when inactive
    finally:
        arm.close()


def test_watchdog_stops_the_program_when_commands_stop(sim):
    arm = _arm(sim, program=ProgramConfig(watchdog_hz=10.0))
    try:
        arm.configure()
        arm.activate()
        q = arm.read(now=0.0).positions
        arm.command(q + 0.5, now=0.0, period=0.1)
        time.sleep(0.4)  # a stalled policy: no packages for 4 watchdog periods
        with pytest.raises(HardwareFault, match="control program stopped"):
            arm.read(now=0.4)
        assert arm.state is DriverState.FAULT and sim.controller.watchdog_stops == 1
        assert any("watchdog" in m.message for m in arm.client.messages)
        frozen = sim.controller.q.copy()
        time.sleep(0.1)
        np.testing.assert_array_equal(sim.controller.q, frozen)  # stopped, not chasing the last target
    finally:
        arm.close()


def test_program_not_started_by_operator_times_out(sim):
    arm = _arm(sim, upload_script=False, start_timeout=0.3)
    try:
        arm.configure()
        with pytest.raises(DeviceTimeout, match="press play on the pendant"):
            arm.activate()
        assert arm.state is DriverState.FAULT
    finally:
        arm.close()


def test_input_registers_owned_by_another_client_are_refused(sim):
    first, second = _client(sim), _client(sim)
    try:
        first.setup_inputs(("input_int_register_30",))
        with pytest.raises(ProtocolError, match="input_int_register_30 \\(IN_USE\\).*another client"):
            second.setup_inputs(("input_int_register_30",))
        with pytest.raises(ProtocolError, match="no_such_variable \\(NOT_FOUND\\)"):
            second.setup_outputs(("timestamp", "no_such_variable"))
    finally:
        first.transport.close()
        second.transport.close()
    time.sleep(0.2)  # the simulator releases registers when a client disconnects
    third = _client(sim)
    try:
        assert third.setup_inputs(("input_int_register_30",)).types == ("INT32",)
    finally:
        third.transport.close()


def test_client_receives_the_newest_package_and_can_pause(sim):
    client = _client(sim)
    try:
        client.setup_outputs(("timestamp",))
        client.start()
        first = client.receive()["timestamp"]
        time.sleep(0.2)  # ~25 packages at 125 Hz pile up
        newest = client.receive()["timestamp"]
        assert newest - first >= 0.15 and client.skipped_packages >= 5
        client.pause()  # packages sent before the pause reply are consumed while waiting for it
        with pytest.raises(DeviceTimeout, match="no RTDE data package"):
            client.receive(timeout=0.1)
    finally:
        client.transport.close()


def test_rendered_program_round_trips_and_rejects_bad_settings():
    text = ProgramConfig(register_offset=30, watchdog_hz=4.0).render()
    assert 'rtde_set_watchdog("input_int_register_31", watchdog_hz, "stop")' in text
    assert parse_program(text) == ProgramConfig(register_offset=30, watchdog_hz=4.0)
    assert parse_program("def something_else():\nend\n") is None
    with pytest.raises(ValueError, match="lookahead"):
        ProgramConfig(lookahead=1.0)
    with pytest.raises(ValueError, match="robot description"):
        URConfig(host="")


def test_client_falls_back_to_protocol_1_on_old_controllers():
    with URSim(port=0, script_port=0, protocols=(1,), urcontrol_version=(3, 2, 0, 0)) as old:
        client = RTDEClient(TcpTransport(TcpConfig("127.0.0.1", old.port)))
        try:
            assert client.negotiate() == 1
            assert client.controller_version() == (3, 2, 0, 0)
            client.setup_outputs(("timestamp", "actual_q"))  # v1: no frequency field, 125 Hz
            client.start()
            client.send_message("hello from a v1 client", rtde.WARNING)
            assert len(client.receive()["actual_q"]) == 6
        finally:
            client.transport.close()


def test_rendered_program_blocks_are_balanced_and_use_the_registers():
    """URScript cannot run here; check what can be checked: block structure and register wiring."""
    config = ProgramConfig(register_offset=30)
    depth = 0
    for line in config.render().splitlines():
        word = line.strip().split(" ")[0].rstrip(":")
        if word in ("def", "thread", "while", "if"):
            depth += 1
        elif word == "end":
            depth -= 1
        assert depth >= 0, line
    assert depth == 0
    text = config.render()
    assert "cmd_reg = 30" in text and "counter_reg = 31" in text and "$" not in text
    assert set(config.input_names()) <= {f"input_int_register_{i}" for i in (30, 31)} | {
        f"input_double_register_{i}" for i in range(30, 36)
    }
