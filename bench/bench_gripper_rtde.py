"""One control tick of the Robotiq gripper (Modbus RTU) and the UR arm (RTDE), against our simulators.

Robotiq: a tick is a go-to write (FC16) plus a status read (FC04). Our driver and pymodbus's
client run the same tick against the same simulated gripper on a pseudo-terminal; the table
shows both beside the wire bound of those bytes at 115200 baud, which a pty does not impose.

RTDE: a tick is URArm.command() plus URArm.read(), which drains every state package that
arrived since the last tick and keeps the newest. It is measured with the controller streaming
at 125 Hz and at 500 Hz, to show what the drain costs when packages pile up between ticks.

    python bench/bench_gripper_rtde.py [--ticks 500]
"""

from __future__ import annotations

import argparse
import statistics
import time

from vla_runtime.common.cli import missing_dependency
from vla_runtime.drivers.robotiq import codec
from vla_runtime.drivers.robotiq.gripper import RobotiqConfig, open_gripper
from vla_runtime.drivers.robotiq.registers import ACT, GTO
from vla_runtime.drivers.robotiq.sim import GripperModel, RobotiqSim
from vla_runtime.drivers.ur.arm import URConfig, open_arm
from vla_runtime.drivers.ur.sim import URSim

BAUD = 115_200  # bits/s, the gripper's fixed rate
BITS_PER_BYTE = 10  # 8N1


def timed(tick, n: int, pause: float = 0.0) -> list[float]:
    for _ in range(20):
        tick()
    out = []
    for _ in range(n):
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        tick()
        out.append(time.perf_counter() - t0)
    return out


def row(name: str, samples: list[float], ref: float | None) -> str:
    med = statistics.median(samples)
    p99 = sorted(samples)[int(0.99 * (len(samples) - 1))]
    ratio = f"{med / ref:6.2f}x of row 1" if ref else "  (reference)"
    return f"  {name:<34} median {med * 1e3:7.3f} ms   p99 {p99 * 1e3:7.3f} ms   {ratio}"


def bench_robotiq(ticks: int) -> None:
    write = codec.encode(codec.WriteRegisters(9, 1000, (0x0900, 128, 0xFFFF)))
    read = codec.encode(codec.ReadRegisters(9, codec.READ_INPUT, 2000, 3))
    wire_bytes = len(write) + 8 + len(read) + 11  # requests plus their replies
    wire = wire_bytes * BITS_PER_BYTE / BAUD
    print(f"Robotiq tick (FC16 go-to + FC04 status), {ticks} ticks on a pty:")
    with RobotiqSim(model=GripperModel(activation_s=0.0)) as sim:
        gripper = open_gripper(RobotiqConfig(port=sim.port))
        gripper.configure()
        gripper.activate()
        ours = timed(lambda: (gripper.command(0.5, 0.0, 0.1), gripper.read(0.0)), ticks)
        gripper.close()
        theirs = None
        try:
            from pymodbus import FramerType
            from pymodbus.client import ModbusSerialClient

            client = ModbusSerialClient(port=sim.port, framer=FramerType.RTU, baudrate=BAUD, timeout=0.5)
            client.connect()

            def tick():
                client.write_registers(1000, [(ACT | GTO) << 8, 128, 0xFFFF], device_id=9)
                client.read_input_registers(2000, count=3, device_id=9)

            theirs = timed(tick, ticks)
            client.close()
        except ImportError as exc:
            if missing_dependency(exc) != "pymodbus":
                raise
            print("  (pymodbus not installed: no reference row)")
    ref = statistics.median(theirs) if theirs else None
    if theirs:
        print(row("pymodbus ModbusSerialClient", theirs, None))
    print(row("vla-runtime RobotiqGripper", ours, ref))
    print(f"  {'wire bound at 115200 8N1':<34} {wire * 1e3:7.3f} ms ({wire_bytes} bytes; a real bus adds this)")


def bench_rtde(ticks: int) -> None:
    print(f"UR tick (command + read newest state), {ticks} ticks 10 ms apart on loopback:")
    results = {}
    for freq in (125.0, 500.0):
        with URSim(port=0, script_port=0) as sim:
            arm = open_arm(URConfig(host="127.0.0.1", port=sim.port, script_port=sim.script_port, frequency=freq))
            arm.configure()
            arm.activate()
            q = arm.read(0.0).positions
            results[freq] = timed(lambda q=q, arm=arm: (arm.command(q, 0.0, 0.1), arm.read(0.0)), ticks, 0.01)
            skipped = arm.client.skipped_packages
            arm.close()
        print(row(f"URArm, controller streaming {freq:.0f} Hz", results[freq], statistics.median(results[125.0])))
        print(f"  {'':<34} older packages skipped: {skipped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=500)
    args = parser.parse_args()
    bench_robotiq(args.ticks)
    bench_rtde(args.ticks)


if __name__ == "__main__":
    main()
