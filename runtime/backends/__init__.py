"""Inference backends behind one small runner interface, found by naming convention.

`backends/<name>.py` provides `<Name>Backend` (a `Backend` subclass). Modules are imported only
when a bundle asks for them, so a robot without TensorRT still runs ONNX graphs, and a missing
optional package disables exactly one entry with a one-line reason.

`--backend` names a device, not a module: `cpu`, `cuda` or `tensorrt`. The device picks the
module by the bundle's graph format: ONNX graphs run on onnxruntime with that execution
provider; serialized engines need the native runner. `auto` lists every device that probes
usable here, best first (tensorrt, cuda, cpu); the policy loader activates them in that order
and falls through to the next, saying why, when one fails to activate (a provider onnxruntime
lists but cannot start, an engine TensorRT refuses).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from vla_runtime.common.cli import missing_dependency
from vla_runtime.runtime.backends.base import DEVICES, Backend, BackendError, BackendOptions
from vla_runtime.runtime.manifest import GraphSpec

logger = logging.getLogger(__name__)

__all__ = ["DEVICES", "Backend", "BackendError", "BackendOptions", "Selection", "backend_class", "candidates",
           "select"]

BACKENDS = ("onnxrt", "tensorrt")  # module names under runtime/backends/, tried in this order
CHOICES = ("auto",) + DEVICES  # what `--backend` accepts


@dataclass(frozen=True)
class Selection:
    device: str  # one of DEVICES
    cls: type[Backend]  # the runner class for every graph of the bundle
    reason: str  # why this one, for the log line


def backend_class(name: str) -> type[Backend] | str:
    """The `<Name>Backend` class of backends/<name>.py, or a one-line reason it is unavailable."""
    module_name = f"{__name__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name:
            return f"backend {name!r} is not part of this install"
        missing = missing_dependency(exc)
        if missing is None:
            raise
        return f"backend {name!r} is unavailable: {missing} is not installed"
    cls = getattr(module, f"{name.capitalize()}Backend", None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        return f"backend {name!r}: {module_name} does not define {name.capitalize()}Backend"
    return cls


def _candidate(device: str, graphs: Iterable[GraphSpec]) -> tuple[type[Backend] | None, str]:
    """The first backend that runs every graph on `device`, or None and the reasons."""
    graphs = list(graphs)
    reasons, wrong_format = [], []
    for name in BACKENDS:
        cls = backend_class(name)
        if isinstance(cls, str):
            reasons.append(cls)
            continue
        if device not in cls.devices:
            continue
        foreign = [g for g in graphs if g.format not in cls.formats]
        if foreign:  # not this backend's kind of file; only worth saying if nothing else fits
            wrong_format.append(f"{cls.__name__} does not load {foreign[0].format} graphs ({foreign[0].role!r})")
            continue
        problem = next((p for g in graphs if (p := cls.check_graph(g, device))), None)
        if problem is None:
            problem = cls.probe(device)
        if problem is None:
            return cls, f"{cls.__name__} on {device}"
        reasons.append(problem)
    return None, "; ".join(reasons or wrong_format) or f"no backend supports {device!r}"


def candidates(requested: str, graphs: Iterable[GraphSpec]) -> list[Selection]:
    """The selections to try in order: the requested device alone, or for `auto` every usable one.

    Raises BackendError with the fix when there is none.
    """
    graphs = list(graphs)
    if requested not in CHOICES:
        raise BackendError(f"--backend {requested!r} is not one of {', '.join(CHOICES)}")
    if requested != "auto":
        cls, why = _candidate(requested, graphs)
        if cls is None:
            raise BackendError(f"backend {requested!r} requested but unusable here: {why}")
        return [Selection(requested, cls, why)]
    found, skipped = [], []
    for device in DEVICES:
        cls, why = _candidate(device, graphs)
        if cls is not None:
            found.append(Selection(device, cls, f"auto picked {device}: {why}"))
        else:
            skipped.append(f"{device}: {why}")
            logger.info("backend auto: skipping %s (%s)", device, why)
    if not found:
        raise BackendError("no backend can run this bundle here (" + " | ".join(skipped) + ")")
    rest = ", ".join(s.device for s in found[1:])
    logger.info("backend auto: picked %s%s", found[0].reason, f" (then {rest} if it fails to activate)" if rest else "")
    return found


def select(requested: str, graphs: Iterable[GraphSpec]) -> Selection:
    """The first of `candidates`: what `requested` resolves to before anything is activated."""
    return candidates(requested, graphs)[0]
