"""`vla-export`: the workstation command line (build, verify, quantize)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vla_runtime.runtime.cli import UserError, _fail, _missing

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
            _missing(sub, name, f"{exc.name or exc} is not installed (pip install 'vla-runtime[export]')")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
