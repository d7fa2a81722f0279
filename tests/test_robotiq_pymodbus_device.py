"""Our Robotiq driver as the master against pymodbus acting as the device (the other half of triangulation).

pymodbus's serial server opens its own port, so two ptys are bridged by a small relay thread,
like a null-modem cable. The device is pymodbus's register simulator with the manual's
"activated, at position 13" status; its action hook records every write it receives.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import tty

import pytest
from vla_runtime.drivers.base import DriverState
from vla_runtime.drivers.robotiq.gripper import RobotiqConfig, open_gripper

pytest.importorskip("pymodbus.simulator", reason="pymodbus >= 3.12 (the [peers] extra) is not installed")
from pymodbus import FramerType  # noqa: E402
from pymodbus.server import ModbusSerialServer  # noqa: E402
from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: E402


def _pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


@pytest.fixture
def pymodbus_gripper():
    (m1, s1, p1), (m2, s2, p2) = _pty(), _pty()
    stop = threading.Event()

    def relay():
        while not stop.is_set():
            ready, _, _ = select.select([m1, m2], [], [], 0.05)
            for fd in ready:
                try:
                    os.write(m2 if fd == m1 else m1, os.read(fd, 4096))
                except OSError:
                    return

    writes: list[list[int]] = []

    async def action(function_code, start_address, address, count, current_registers, set_values):
        if set_values is not None:
            writes.append(list(set_values))

    device = SimDevice(
        9,
        simdata=[
            SimData(1000, values=[0, 0, 0], datatype=DataType.REGISTERS),
            SimData(2000, values=[0xF900, 0x0000, 0x0D00], datatype=DataType.REGISTERS),
        ],
        action=action,
    )
    loop = asyncio.new_event_loop()
    holder: dict = {}

    async def serve():
        holder["server"] = ModbusSerialServer(device, framer=FramerType.RTU, port=p1, baudrate=115200)
        await holder["server"].serve_forever()

    threads = [
        threading.Thread(target=relay, daemon=True),
        threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        yield p2, writes
    finally:
        if "server" in holder:
            asyncio.run_coroutine_threadsafe(holder["server"].shutdown(), loop).result(timeout=5)
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for fd in (m1, s1, m2, s2):
            os.close(fd)


def test_our_driver_operates_a_pymodbus_device(pymodbus_gripper):
    port, writes = pymodbus_gripper
    # generous retries: the first attempts may land before pymodbus has opened its end
    gripper = open_gripper(RobotiqConfig(port=port, timeout=0.2, retries=10))
    try:
        gripper.configure()
        assert gripper.last_status.position == 0x0D and gripper.last_status.fault == 0
        gripper.activate()  # already activated per the status: nothing is written
        assert gripper.state is DriverState.ACTIVE
        sent = gripper.command(0.3, now=0.0, period=0.1, speed=1.0, force=0.5)
        reading = gripper.read(now=0.1)
    finally:
        gripper.close()
    assert writes[0] == [0x0900, 178, 0xFF80]  # rACT|rGTO, rPR 178, rSP 255, rFR 128
    assert writes[-1] == [0x0100, 0, 0]  # deactivate on close: stop, keep activation
    assert sent == pytest.approx(1 - 178 / 255)
    assert reading.position == pytest.approx(1 - 13 / 255) and not reading.object_detected
