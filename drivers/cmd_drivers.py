"""`vla-runtime drivers scan|latency`: bring-up tools for serial servo buses.

`scan` answers the first questions on a new arm (which ids, which models, which baud) without
the vendor GUI; `latency` finds the FTDI latency timer that silently makes every read 16 ms.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass

from vla_runtime.common.errors import UserError
from vla_runtime.drivers.base import DriverError, PortLost
from vla_runtime.drivers.dynamixel import protocol as dxl
from vla_runtime.drivers.dynamixel import tables as dxl_tables
from vla_runtime.drivers.dynamixel.sim import parse_ids
from vla_runtime.drivers.feetech import protocol as ft
from vla_runtime.drivers.feetech import tables as ft_tables
from vla_runtime.drivers.feetech.bus import FeetechBus
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.transport import SerialConfig, SerialTransport
from vla_runtime.drivers.usb_latency import check_latency_timer, lower_latency_timer

logger = logging.getLogger(__name__)

DEFAULT_BAUDS = {
    "dynamixel": (1_000_000, 57_600, 115_200, 2_000_000, 3_000_000, 4_000_000),
    "feetech": (1_000_000, 500_000, 115_200, 250_000, 128_000, 57_600),
}


@dataclass(frozen=True)
class Found:
    protocol: str  # "dynamixel" or "feetech"
    baud: int  # bits/s the servo answered at
    id: int  # bus id
    model: int  # model number register
    model_name: str  # e.g. XL430-W250, STS3215
    firmware: int | None  # firmware version where the ping reports it


def scan_dynamixel(port: str, baud: int, ids: set[int], window_s: float) -> list[Found]:
    """One broadcast ping; every servo answers with model and firmware."""
    transport = SerialTransport(SerialConfig(port, baud))
    try:
        link = Link(transport, dxl.decode_status, LinkConfig())
        replies = link.listen(dxl.ping(dxl.BROADCAST_ID), window_s)
    finally:
        transport.close()
    found = {}
    for pkt in replies:
        if pkt.id in ids and len(pkt.data) >= 3:
            model = dxl.from_bytes(pkt.data[:2], signed=False)
            found[pkt.id] = Found("dynamixel", baud, pkt.id, model, dxl_tables.model_name(model), pkt.data[2])
    return [found[i] for i in sorted(found)]


def scan_feetech(port: str, baud: int, ids: set[int], timeout_s: float) -> list[Found]:
    """STS/SMS have no broadcast ping: ping each id with a short timeout and no retries."""
    transport = SerialTransport(SerialConfig(port, baud))
    try:
        bus = FeetechBus(Link(transport, ft.decode, LinkConfig(timeout=timeout_s, retries=0)))
        found = []
        for i in sorted(ids):
            try:
                bus.ping_raw(i)
                model = bus.read(i, ft_tables.Reg.MODEL_NUMBER)
                fw = bus.read(i, ft_tables.Reg.FIRMWARE_MAJOR)
            except PortLost:
                raise
            except DriverError:
                continue
            found.append(Found("feetech", baud, i, model, ft_tables.model_name(model), fw))
        return found
    finally:
        transport.close()


def _require_port(port: str) -> None:
    if "://" not in port and not os.path.exists(port):
        raise UserError(f"serial port {port} does not exist; list adapters with: ls /dev/serial/by-id/")


def _scan(args: argparse.Namespace) -> int:
    _require_port(args.port)
    try:
        ids = set(parse_ids(args.ids))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    protocols = ("dynamixel", "feetech") if args.protocol == "auto" else (args.protocol,)
    report = check_latency_timer(args.port)
    print(report.describe())
    found: list[Found] = []
    for protocol in protocols:
        bauds = args.baud or DEFAULT_BAUDS[protocol]
        for baud in bauds:
            try:
                if protocol == "dynamixel":
                    hits = scan_dynamixel(args.port, baud, ids, args.window_ms / 1e3)
                else:
                    hits = scan_feetech(args.port, baud, ids, args.timeout_ms / 1e3)
            except PortLost as exc:
                raise UserError(str(exc)) from None
            print(f"{protocol} @ {baud} baud: {len(hits)} servo(s)")
            found += hits
            if hits and not args.all_bauds:
                break
        if found:
            break  # one bus speaks one protocol
    if not found:
        print(f"no servos answered on {args.port}; check power and wiring, try --protocol, --baud or a wider --ids")
        return 1
    print(f"{'protocol':<10} {'baud':>9} {'id':>4} {'model':>6}  {'name':<12} firmware")
    for f in found:
        fw = "-" if f.firmware is None else str(f.firmware)
        print(f"{f.protocol:<10} {f.baud:>9} {f.id:>4} {f.model:>6}  {f.model_name:<12} {fw}")
    return 0


def _latency(args: argparse.Namespace) -> int:
    _require_port(args.port)
    report = check_latency_timer(args.port)
    if args.fix and not report.ok:
        report = lower_latency_timer(report)
    print(report.describe())
    return 0 if report.ok else 1


def _baud_list(text: str) -> tuple[int, ...]:
    try:
        bauds = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--baud {text!r}: give numbers like 1000000 or 57600,1000000") from None
    if any(b <= 0 for b in bauds):
        raise argparse.ArgumentTypeError(f"--baud {text!r}: baud rates must be positive")
    return bauds


def register(subparsers) -> None:
    parser = subparsers.add_parser("drivers", help="bring-up tools for servo buses: scan, latency")
    tools = parser.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True

    scan = tools.add_parser("scan", help="find servos on a port: ids, model numbers, baud")
    scan.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 or a sim-device pty")
    scan.add_argument("--protocol", choices=("auto", "dynamixel", "feetech"), default="auto")
    scan.add_argument("--baud", type=_baud_list, default=None, help="baud(s) to try, comma separated")
    scan.add_argument("--ids", default="0-252", help="ids to report (Feetech pings each one), e.g. 1-6")
    scan.add_argument("--timeout-ms", type=float, default=20.0, help="Feetech per-id ping timeout, ms")
    scan.add_argument("--window-ms", type=float, default=800.0, help="Dynamixel broadcast-ping window, ms")
    scan.add_argument("--all-bauds", action="store_true", help="keep trying bauds after servos are found")
    scan.set_defaults(func=_scan)

    latency = tools.add_parser("latency", help="check the USB-serial latency timer (16 ms on FTDI by default)")
    latency.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    latency.add_argument("--fix", action="store_true", help="write 1 ms through sysfs (needs permission)")
    latency.set_defaults(func=_latency)
