"""Our Dynamixel bus driving the simulated servos: instructions, status errors, watchdog, reboot."""

from __future__ import annotations

import time

import numpy as np
import pytest
from vla_runtime.drivers.arm import JointCalibration, ServoArm, ServoArmConfig
from vla_runtime.drivers.base import DriverState, HardwareFault, ProtocolError
from vla_runtime.drivers.dynamixel import protocol as p
from vla_runtime.drivers.dynamixel.bus import DynamixelBus
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.dynamixel.tables import HardwareError, Reg
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.servo_sim import parse_ids
from vla_runtime.drivers.transport import SerialConfig, SerialTransport

pytestmark = pytest.mark.timeout(60)
IDS = (1, 2, 3)


@pytest.fixture
def sim():
    with DynamixelSim(ids=IDS, model=1020) as s:
        yield s


@pytest.fixture
def bus(sim):
    transport = SerialTransport(SerialConfig(sim.port))
    yield DynamixelBus(Link(transport, p.decode_status, LinkConfig(timeout=0.2, retries=2)))
    transport.close()


def test_ping_read_write_sync_and_bulk(sim, bus):
    assert bus.ping_raw(2) == (1020, 46)
    bus.write(2, Reg.GOAL_POSITION, -1234)
    assert bus.read(2, Reg.GOAL_POSITION) == -1234
    bus.sync_write(Reg.GOAL_POSITION, {1: 100, 2: 200, 3: 0x00FDFFFF})
    assert bus.sync_read(Reg.GOAL_POSITION, IDS) == {1: 100, 2: 200, 3: 0x00FDFFFF}
    assert bus.bulk_read([(1, Reg.MODEL_NUMBER), (3, Reg.GOAL_POSITION)]) == [1020, 0x00FDFFFF]
    with pytest.raises(ValueError, match="each id once"):
        bus.bulk_read([(1, Reg.ID), (1, Reg.LED)])


def test_read_state_converts_velocity_units(sim, bus):
    bus.set_torque([1], True)
    bus.write_goals([1], np.array([3000]))
    time.sleep(0.05)
    _, vel = bus.read_state([1])
    assert vel[0] == pytest.approx(4096.0, rel=0.02)  # the simulator moves at 4096 ticks/s


def test_eeprom_write_with_torque_on_is_an_access_error(sim, bus):
    bus.set_torque([1], True)
    with pytest.raises(ProtocolError, match="id 1 answered write @20 with access error"):
        bus.set_homing_shift(1, 100)


def test_hardware_error_names_the_bits_and_reboot_recovers(sim, bus):
    sim.servos[3].raise_hardware_error(HardwareError.OVERHEATING | HardwareError.INPUT_VOLTAGE)
    with pytest.raises(HardwareFault, match="input_voltage, overheating.*reboot"):
        bus.read_state(IDS)
    with pytest.raises(HardwareFault, match="during write @64"):  # torque cannot come back without a reboot
        bus.write(3, Reg.TORQUE_ENABLE, 1)
    assert sim.servos[3].get(Reg.TORQUE_ENABLE) == 0
    bus.reboot(3)
    bus.set_torque([3], True)
    assert bus.read(3, Reg.TORQUE_ENABLE) == 1


def test_bus_watchdog_is_armed_while_active_and_cleared_after(sim, bus):
    joints = tuple(JointCalibration(name=f"j{i}", id=i, min=-3.0, max=3.0) for i in IDS)
    arm = ServoArm(bus, ServoArmConfig(joints=joints, watchdog_s=1.0, health_check_every=1))
    arm.configure()
    arm.activate()
    assert [sim.servos[i].get(Reg.BUS_WATCHDOG) for i in IDS] == [50, 50, 50]  # 50 x 20 ms
    arm.read(0.0)
    arm.deactivate()
    assert [sim.servos[i].get(Reg.BUS_WATCHDOG) for i in IDS] == [0, 0, 0]


def test_host_silence_trips_the_watchdog_servos_stop_and_driver_faults(sim, bus):
    joints = tuple(JointCalibration(name=f"j{i}", id=i, min=-3.0, max=3.0) for i in IDS)
    arm = ServoArm(bus, ServoArmConfig(joints=joints, watchdog_s=0.06, health_check_every=1))
    arm.configure()
    arm.activate()
    arm.command(np.array([1.0, 1.0, 1.0]), 0.0, 0.1)  # a long move (~0.16 s at sim speed)
    time.sleep(0.3)  # the host "hangs" longer than the 60 ms watchdog
    assert all(sim.servos[i].watchdog_tripped for i in IDS)
    stopped = [sim.servos[i].get(Reg.PRESENT_POSITION) for i in IDS]
    time.sleep(0.05)
    assert [sim.servos[i].get(Reg.PRESENT_POSITION) for i in IDS] == stopped  # the servos stopped themselves
    with pytest.raises(HardwareFault, match="watchdog tripped"):
        arm.read(0.0)
    assert arm.state is DriverState.FAULT
    bus.disarm_watchdog(IDS)  # writing 0 clears the trip, goals become writable again
    assert not any(sim.servos[i].watchdog_tripped for i in IDS)


def test_parse_ids():
    assert parse_ids("1-3,7") == (1, 2, 3, 7)
    with pytest.raises(ValueError, match="not a list"):
        parse_ids("one")
    with pytest.raises(ValueError, match="0..252"):
        parse_ids("250-260")
