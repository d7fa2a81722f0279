"""`vla-runtime`: the onboard command line.

Subcommands register by naming convention and import lazily, so a robot without an optional
package (MuJoCo, TensorRT) still gets every other command, and the missing one explains itself.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module providing `register(subparsers)`; each module owns its arguments.
SUBCOMMANDS = {
    "run": "vla_runtime.runtime.cmd_run",
    "profile": "vla_runtime.runtime.cmd_profile",
    "inspect": "vla_runtime.runtime.cmd_inspect",
    "flash": "vla_runtime.runtime.cmd_flash",
    "sim-device": "vla_runtime.drivers.cmd_sim_device",
    "drivers": "vla_runtime.drivers.cmd_drivers",
}


class UserError(Exception):
    """A mistake the user can fix; printed as one line, never as a traceback."""


def add_unavailable(sub, name: str, reason: str) -> None:
    p = sub.add_parser(name, help=f"(unavailable: {reason})")
    p.set_defaults(func=lambda args: _fail(f"`{name}` is unavailable here: {reason}"))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vla-runtime",
        description="Run a VLA policy bundle on a robot. With no subcommand, `run` is assumed.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command")
    for name, module in SUBCOMMANDS.items():
        try:
            importlib.import_module(module).register(sub)
        except ImportError as exc:
            add_unavailable(sub, name, f"{exc.name or exc} is not installed")
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse, configure logging and run the chosen handler; user mistakes become one line."""
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known = set(SUBCOMMANDS) | {"-h", "--help"}
    first = next((a for a in argv if a not in ("-v", "--verbose")), None)
    if first not in known:
        argv.insert(argv.index(first) if first is not None else len(argv), "run")
    return dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
