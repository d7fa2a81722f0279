"""`vla-runtime`: the onboard command line.

Subcommands register by naming convention and import lazily, so a robot without an optional
package (MuJoCo, TensorRT) still gets every other command, and the missing one explains itself.
"""

from __future__ import annotations

import argparse
import sys

from vla_runtime.common.cli import dispatch, register_subcommands

# subcommand -> module providing `register(subparsers)`; each module owns its arguments.
SUBCOMMANDS = {
    "run": "vla_runtime.runtime.cmd_run",
    "eval": "vla_runtime.runtime.cmd_eval",
    "profile": "vla_runtime.runtime.cmd_profile",
    "inspect": "vla_runtime.runtime.cmd_inspect",
    "flash": "vla_runtime.runtime.cmd_flash",
    "replay": "vla_runtime.runtime.cmd_replay",
    "sim-device": "vla_runtime.drivers.cmd_sim_device",
    "drivers": "vla_runtime.drivers.cmd_drivers",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vla-runtime",
        description="Run a VLA policy bundle on a robot. With no subcommand, `run` is assumed.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command")
    register_subcommands(sub, SUBCOMMANDS)
    return parser


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
