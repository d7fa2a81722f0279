"""Command-line plumbing shared by `vla-runtime` and `vla-export`.

Subcommands register by naming convention and import lazily. A missing *optional third-party*
package disables one subcommand with a one-line reason; an ImportError inside the project itself
is a bug and is raised, never disguised as "not installed".
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from types import ModuleType

from vla_runtime.common.errors import UserError

PROJECT_PACKAGE = "vla_runtime"


def missing_dependency(exc: ImportError) -> str | None:
    """The third-party package whose absence caused `exc`, or None when something else is broken.

    Only a module that is not found counts: a project module that fails to import, or an installed
    package that imports badly (`cannot import name ...`, a missing shared library), is a bug to see.
    """
    name = exc.name or ""
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    if name == PROJECT_PACKAGE or name.startswith(PROJECT_PACKAGE + "."):
        return None
    return name.split(".")[0]


def require_modules(*modules: str, error: Callable[[str], Exception]) -> list[ModuleType]:
    """Import `modules`; when a third-party package is missing, raise `error(its name)` instead.

    Anything else (a broken project module, a package that imports badly) is raised as it is.
    """
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as exc:
        missing = missing_dependency(exc)
        if missing is None:
            raise
        raise error(missing) from exc


def import_optional(module: str, *, extra: str) -> ModuleType:
    """Import `module`; a missing third-party package becomes a UserError naming the pip extra."""
    return require_modules(module, error=lambda name: UserError(
        f"{name} is not installed; pip install 'vla-runtime[{extra}]'"))[0]


def add_unavailable(sub, name: str, reason: str) -> None:
    p = sub.add_parser(name, help=f"(unavailable: {reason})")
    p.set_defaults(func=lambda args: fail(f"`{name}` is unavailable here: {reason}"))


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def register_subcommands(sub, subcommands: Mapping[str, str], hint: str = "") -> None:
    """Let each module add its own parser; a missing optional package disables just that entry."""
    for name, module in subcommands.items():
        try:
            importlib.import_module(module).register(sub)
        except ImportError as exc:
            missing = missing_dependency(exc)
            if missing is None:
                raise
            add_unavailable(sub, name, f"{missing} is not installed{hint}")


def dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse, configure logging and run the chosen handler; user mistakes become one line."""
    args = parser.parse_args(argv)
    _stop_on_interrupt()
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _stop_on_interrupt() -> None:
    """Ctrl-C / `kill -INT` must stop every command, even one started in the background.

    A non-interactive shell starts `cmd &` with SIGINT ignored, and Python then never installs
    its KeyboardInterrupt handler: a simulated device, a recorder or a server started from a
    script would ignore the stop signal and have to be killed, skipping its clean shutdown.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
