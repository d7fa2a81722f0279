"""Our Feetech bus driving the simulated STS servos: encodings, torque + lock, status bits."""

from __future__ import annotations

import numpy as np
import pytest
from vla_runtime.drivers.base import HardwareFault, ProtocolError
from vla_runtime.drivers.feetech import protocol as p
from vla_runtime.drivers.feetech.bus import FeetechBus
from vla_runtime.drivers.feetech.sim import FeetechSim
from vla_runtime.drivers.feetech.tables import Reg
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.transport import SerialConfig, SerialTransport

pytestmark = pytest.mark.timeout(60)
IDS = (1, 2, 3)


@pytest.fixture
def sim():
    with FeetechSim(ids=IDS) as s:
        yield s


@pytest.fixture
def bus(sim):
    transport = SerialTransport(SerialConfig(sim.port))
    yield FeetechBus(Link(transport, p.decode, LinkConfig(timeout=0.2, retries=2)))
    transport.close()


def test_ping_read_write_and_sync(sim, bus):
    assert bus.ping(2) == 777
    bus.write(2, Reg.GOAL_POSITION, -300)
    assert bus.read(2, Reg.GOAL_POSITION) == -300
    assert sim.servos[2].memory[42:44] == bytes([0x2C, 0x81])  # 300 | sign bit 15, little-endian
    bus.sync_write(Reg.GOAL_POSITION, {1: 100, 2: 200, 3: 4000})
    assert bus.sync_read(Reg.GOAL_POSITION, IDS) == {1: 100, 2: 200, 3: 4000}


def test_torque_on_locks_eeprom_and_off_unlocks(sim, bus):
    bus.set_torque([1], True)
    assert (sim.servos[1].get(Reg.TORQUE_ENABLE), sim.servos[1].get(Reg.LOCK)) == (1, 1)
    bus.set_torque([1], False)
    assert (sim.servos[1].get(Reg.TORQUE_ENABLE), sim.servos[1].get(Reg.LOCK)) == (0, 0)


def test_homing_offset_is_stored_negated_sign_magnitude(sim, bus):
    before = bus.read_state([1])[0][0]
    bus.set_homing_shift(1, 100)
    assert bus.read(1, Reg.HOMING_OFFSET) == -100
    assert sim.servos[1].memory[31:33] == bytes([100, 0x08])  # sign bit 11
    assert bus.read_state([1])[0][0] == before + 100
    with pytest.raises(ProtocolError, match="2047"):
        bus.set_homing_shift(1, 3000)


def test_torque_enable_128_recentres_at_2048(sim, bus):
    bus.write(3, Reg.TORQUE_ENABLE, 128)
    assert bus.read_state([3])[0][0] == 2048


def test_status_bits_raise_hardware_fault(sim, bus):
    sim.servos[2].raise_hardware_error(p.StatusError.OVERHEAT | p.StatusError.OVERLOAD)
    with pytest.raises(HardwareFault, match="id 2 reports overheat, overload"):
        bus.read_state(IDS)
    with pytest.raises(HardwareFault, match="overheat"):
        bus.check_health([2])


def test_torque_limit_and_missing_watchdog(sim, bus, caplog):
    bus.set_torque_limit([1, 2], 0.25)
    assert [sim.servos[i].get(Reg.TORQUE_LIMIT) for i in (1, 2)] == [250, 250]
    bus.arm_watchdog(IDS, 0.5)
    assert "no bus watchdog" in caplog.text


def test_write_goals_negative_and_values_out_of_range(sim, bus):
    bus.write_goals([1, 2], np.array([-5, 4095]))
    assert bus.sync_read(Reg.GOAL_POSITION, [1, 2]) == {1: -5, 2: 4095}  # a round trip orders it after the write
    with pytest.raises(ValueError, match="TORQUE_LIMIT takes 0..65535"):
        bus.write(1, Reg.TORQUE_LIMIT, -1)
