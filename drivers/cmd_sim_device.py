"""`vla-runtime sim-device KIND`: serve a simulated servo bus or controller for testing without hardware.

Each kind lives in `vla_runtime.drivers.<pkg>.sim` and exposes `add_arguments(parser)` and
`run(args)`. Modules import when the command line is built; a kind whose third-party package
is missing stays listed with the reason, so one missing piece never hides the others, and a
broken module of our own is raised, not listed.
"""

from __future__ import annotations

import argparse
import importlib
import logging

from vla_runtime.common.cli import missing_dependency
from vla_runtime.common.errors import UserError

logger = logging.getLogger(__name__)

# kind on the command line -> package under vla_runtime.drivers holding `sim.py`
KINDS = {"dynamixel": "dynamixel", "feetech": "feetech", "robotiq": "robotiq", "ur-rtde": "ur"}


def _first_line(doc: str | None, fallback: str) -> str:
    line = (doc or "").strip().splitlines()[0] if doc and doc.strip() else fallback
    return line.rstrip(".")


def _unavailable(kind: str, reason: str):
    def handler(args: argparse.Namespace) -> int:
        raise UserError(f"sim-device {kind} is unavailable here: {reason}")

    return handler


def _runner(kind: str, run):
    def handler(args: argparse.Namespace) -> int:
        try:
            return int(run(args) or 0)
        except ValueError as exc:
            raise UserError(f"sim-device {kind}: {exc}") from None

    return handler


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sim-device",
        help="simulate a servo bus (pty) or robot controller (loopback) to test without hardware",
        description="Serve a simulated device; it prints where to connect and runs until Ctrl-C.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    for kind, pkg in KINDS.items():
        module_name = f"vla_runtime.drivers.{pkg}.sim"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = missing_dependency(exc)
            if missing is None:
                raise
            reason = f"{missing} is not installed"
            sp = kinds.add_parser(kind, help=f"(unavailable: {reason})")
            sp.set_defaults(func=_unavailable(kind, reason))
            continue
        sp = kinds.add_parser(kind, help=_first_line(module.__doc__, f"simulated {kind}"))
        module.add_arguments(sp)
        sp.set_defaults(func=_runner(kind, module.run))
