"""Inference backends behind one small runner interface, found by naming convention.

`backends/<name>.py` provides `<Name>Backend` (a `Backend` subclass). Modules are imported only
when a bundle asks for them, so a robot without TensorRT still runs ONNX graphs, and a missing
optional package disables exactly one entry with a one-line reason.

`--backend` names a device, not a module: `cpu`, `cuda` or `tensorrt` (`auto` tries them in
that order, best first). The device picks the module by the bundle's graph format: ONNX graphs
run on onnxruntime with that execution provider; serialized engines need the native runner.
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

__all__ = ["DEVICES", "Backend", "BackendError", "BackendOptions", "Selection", "backend_class", "select"]

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


def select(requested: str, graphs: Iterable[GraphSpec]) -> Selection:
    """Resolve `--backend` for a bundle's graphs; raise BackendError with the fix when impossible."""
    graphs = list(graphs)
    if requested not in CHOICES:
        raise BackendError(f"--backend {requested!r} is not one of {', '.join(CHOICES)}")
    if requested != "auto":
        cls, why = _candidate(requested, graphs)
        if cls is None:
            raise BackendError(f"backend {requested!r} requested but unusable here: {why}")
        return Selection(requested, cls, why)
    skipped = []
    for device in DEVICES:
        cls, why = _candidate(device, graphs)
        if cls is not None:
            logger.info("backend auto: picked %s (%s)", device, why)
            return Selection(device, cls, f"auto picked {device}: {why}")
        skipped.append(f"{device}: {why}")
    raise BackendError("no backend can run this bundle here (" + " | ".join(skipped) + ")")


def gpu_info(device_id: int = 0) -> tuple[str, str] | str:
    """(name, compute capability "major.minor") of one GPU, or why there is none.

    Asks the CUDA driver library directly (present on x86 and Jetson alike), so no CUDA
    toolkit, torch or TensorRT is needed to answer.
    """
    import ctypes

    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return "no NVIDIA driver (libcuda) on this machine"
    if cuda.cuInit(0) != 0:
        return "the CUDA driver failed to initialise (no GPU visible?)"
    dev = ctypes.c_int()
    if cuda.cuDeviceGet(ctypes.byref(dev), device_id) != 0:
        return f"no GPU with index {device_id}"
    major, minor = ctypes.c_int(), ctypes.c_int()
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, dev)
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or None when its Python package is absent."""
    try:
        import tensorrt
    except ImportError as exc:
        if missing_dependency(exc) != "tensorrt":
            raise
        return None
    return str(tensorrt.__version__)
