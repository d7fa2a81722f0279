"""Round trip of one control tick on a 6-servo bus: sync read (position + velocity) then sync write.

Runs our driver and the vendor SDK against the simulated bus on a pseudo-terminal, and prints the
measured time per tick beside the physical bound of the same bytes on a real 1 Mbps wire
(10 bits per byte, no return delay, no USB latency). A pty moves bytes instantly, so the measured
figure is the software cost of host + simulator; a real bus adds at least the wire bound, plus
the adapter's latency timer (1 ms when tuned, 16 ms on an untuned FTDI) per reply burst.

    python bench/bench_drivers.py [--ticks 1000] [--in-process]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
from vla_runtime.drivers.base import DriverError
from vla_runtime.drivers.dynamixel import protocol as dxl
from vla_runtime.drivers.dynamixel.bus import DynamixelBus
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.feetech import protocol as ft
from vla_runtime.drivers.feetech.bus import FeetechBus
from vla_runtime.drivers.feetech.sim import FeetechSim
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.transport import SerialConfig, SerialTransport

IDS = (1, 2, 3, 4, 5, 6)
BAUD = 1_000_000  # bits/s, the bus speed both families run at on LeRobot-class arms
BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


def wire_bytes(family: str) -> tuple[int, int, int]:
    """(request, replies, sync write) bytes of one tick, from our encoder."""
    if family == "dynamixel":
        request = len(dxl.sync_read(128, 8, IDS))
        replies = sum(len(dxl.encode_status(i, 0, bytes(8))) for i in IDS)
        write = len(dxl.sync_write(116, 4, {i: bytes(4) for i in IDS}))
    else:
        request = len(ft.sync_read(56, 4, IDS))
        replies = sum(len(ft.encode_status(i, 0, bytes(4))) for i in IDS)
        write = len(ft.sync_write(42, 2, {i: bytes(2) for i in IDS}))
    return request, replies, write


def time_ticks(tick, n: int) -> tuple[list[float], int]:
    """(seconds per successful tick, failed ticks); a failed tick is counted, never retried here."""
    for _ in range(50):  # warm up caches and the simulator thread
        tick()
    out, failed = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            tick()
        except (DriverError, RuntimeError):
            failed += 1
            continue
        out.append(time.perf_counter() - t0)
    return out, failed


def ours(family: str, port: str):
    if family == "dynamixel":
        bus = DynamixelBus(Link(SerialTransport(SerialConfig(port, BAUD)), dxl.decode_status, LinkConfig()))
    else:
        bus = FeetechBus(Link(SerialTransport(SerialConfig(port, BAUD)), ft.decode, LinkConfig()))
    goals = np.array([2000 + i for i in IDS], dtype=np.int64)

    def tick():
        bus.read_state(IDS)
        bus.write_goals(IDS, goals)

    return tick, bus.link.transport.close


def vendor(family: str, port: str):
    if family == "dynamixel":
        import dynamixel_sdk as sdk

        handler = sdk.PortHandler(port)
        packets = sdk.PacketHandler(2.0)
        reader, writer = sdk.GroupSyncRead(handler, packets, 128, 8), sdk.GroupSyncWrite(handler, packets, 116, 4)
        size = 4
    else:
        import scservo_sdk as sdk

        handler = sdk.PortHandler(port)
        packets = sdk.PacketHandler(0)
        reader, writer = sdk.GroupSyncRead(handler, packets, 56, 4), sdk.GroupSyncWrite(handler, packets, 42, 2)
        size = 2
    handler.openPort()
    handler.setBaudRate(BAUD)
    for i in IDS:
        reader.addParam(i)
        writer.addParam(i, list((2000 + i).to_bytes(size, "little")))

    def tick():
        if reader.txRxPacket() != sdk.COMM_SUCCESS:
            raise RuntimeError(f"{family} SDK sync read failed")
        writer.txPacket()

    return tick, handler.closePort


@contextlib.contextmanager
def simulator(family: str, in_process: bool):
    """Yield the pty path of a 6-servo simulated bus; by default served by the shipped CLI in a child process."""
    if in_process:
        sim_cls = DynamixelSim if family == "dynamixel" else FeetechSim
        with sim_cls(ids=IDS) as sim:
            yield sim.port
        return
    cmd = [sys.executable, "-m", "vla_runtime.runtime.cli", "sim-device", family, "--ids", "1-6"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        yield banner.rsplit(" on ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def summarise(samples: list[float]) -> tuple[float, float, float]:
    ms = sorted(s * 1e3 for s in samples)
    return statistics.median(ms), ms[int(0.99 * (len(ms) - 1))], ms[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1000, help="ticks timed per row")
    parser.add_argument(
        "--in-process", action="store_true", help="run the simulator as a thread here (shares the GIL with the master)"
    )
    args = parser.parse_args()
    where = "a thread of this process" if args.in_process else "its own process (`vla-runtime sim-device`)"
    print(f"6-servo tick = sync read (pos+vel) + sync write, {args.ticks} ticks per row, pty simulator in {where}")
    header = f"{'family':<10} {'master':<12} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'wire bytes':>11}"
    print(header + f" {'wire bound @1M ms':>18} {'median/bound':>13} {'failed':>7}")
    for family in ("dynamixel", "feetech"):
        request, replies, write = wire_bytes(family)
        total = request + replies + write
        bound_ms = total * BITS_PER_BYTE / BAUD * 1e3
        for name, factory in (("vla-runtime", ours), ("vendor SDK", vendor)):
            with simulator(family, args.in_process) as port:
                tick, close = factory(family, port)
                try:
                    samples, failed = time_ticks(tick, args.ticks)
                finally:
                    close()
            median, p99, worst = summarise(samples)
            print(
                f"{family:<10} {name:<12} {median:>10.3f} {p99:>8.3f} {worst:>8.3f} {total:>11d}"
                f" {bound_ms:>18.3f} {median / bound_ms:>13.2f} {failed:>7d}"
            )
    print("wire bound = (request + 6 replies + sync write) bytes x 10 bits / 1 Mbps; a real bus adds")
    print("return delay per servo and the USB latency timer (1 ms tuned, 16 ms FTDI default) per reply burst.")
    print("failed = ticks without all 6 replies in time (ours: 20 ms x 3 attempts; SDK: one ~34 ms window).")


if __name__ == "__main__":
    main()
