"""`vla-export`: the workstation command line (build, verify, quantize, engine, resize-graph, ...)."""

from __future__ import annotations

import argparse
import logging
import sys

from vla_runtime.common.cli import dispatch, register_subcommands

SUBCOMMANDS = {
    "build": "vla_runtime.export.cmd_build",
    "verify": "vla_runtime.export.cmd_verify",
    "quantize": "vla_runtime.calibration.cmd_quantize",
    "engine": "vla_runtime.export.cmd_engine",
    "resize-graph": "vla_runtime.export.cmd_resize_graph",
    "dataset": "vla_runtime.calibration.cmd_dataset",
    "keygen": "vla_runtime.export.cmd_keygen",
    "sign": "vla_runtime.export.cmd_sign",
    "train": "vla_runtime.export.cmd_train",
    "dagger": "vla_runtime.export.cmd_dagger",
    "triton": "vla_runtime.export.cmd_triton",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-export", description="Export a VLA into a verified bundle.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    register_subcommands(sub, SUBCOMMANDS, hint=" (pip install 'vla-runtime[export]')")
    return parser


def main(argv: list[str] | None = None) -> int:
    # The workstation loads its own fresh, unsigned bundles (parity, health sample); the robot's
    # "signatures are not enforced" notice would only be noise here.
    logging.getLogger("vla_runtime.runtime.trust").setLevel(logging.ERROR)
    return dispatch(build_parser(), list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
