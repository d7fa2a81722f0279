"""`vla-export`: the workstation command line (build, verify, quantize)."""

from __future__ import annotations

import argparse
import importlib
import sys

from vla_runtime.runtime.cli import add_unavailable, dispatch

SUBCOMMANDS = {
    "build": "vla_runtime.export.cmd_build",
    "verify": "vla_runtime.export.cmd_verify",
    "quantize": "vla_runtime.calibration.cmd_quantize",
    "engine": "vla_runtime.export.cmd_engine",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-export", description="Export a VLA into a verified bundle.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        try:
            importlib.import_module(module).register(sub)
        except ImportError as exc:
            add_unavailable(sub, name, f"{exc.name or exc} is not installed (pip install 'vla-runtime[export]')")
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
