"""What GPU and TensorRT this machine has, and whether engines built elsewhere can run on it.

The one place that asks: the bundle's target check (before any session exists), the native
TensorRT runner (before deserializing an engine), `vla-export engine` (what it records beside
each engine) and `--backend auto` (whether a GPU device is worth trying) all call these. The
GPU is asked through the CUDA driver library with ctypes (present on x86 and Jetson alike), so
no CUDA toolkit, cuda-python, torch or TensorRT is needed to answer.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from vla_runtime.common.cli import missing_dependency

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'vla-runtime[tensorrt]' (on Jetson: JetPack's python3-libnvinfer and cuda-python)"
REBUILD = "rebuild them on this device with `vla-export engine`"
_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR


@dataclass(frozen=True)
class DeviceFacts:
    """What an engine is bound to, for the device it was built on or the one it should run on."""

    gpu_name: str  # e.g. "Orin"
    compute_capability: str  # "major.minor", e.g. "8.7"
    tensorrt_version: str  # e.g. "10.3.0"
    cuda_version: str  # CUDA version the driver supports, "major.minor"


def _libcuda():
    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            return ctypes.CDLL(lib)
        except OSError:
            continue
    return None


def gpu_info(device_id: int = 0) -> tuple[str, str] | str:
    """(name, compute capability "major.minor") of one GPU, or a one-line reason there is none."""
    cuda = _libcuda()
    if cuda is None:
        return "no NVIDIA driver (libcuda) on this machine"
    if cuda.cuInit(0) != 0:
        return "the CUDA driver failed to initialise (no GPU visible?)"
    dev = ctypes.c_int()
    if cuda.cuDeviceGet(ctypes.byref(dev), device_id) != 0:
        return f"no GPU with index {device_id}"
    major, minor = ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if (cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev)
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev)
            or cuda.cuDeviceGetName(name, 256, dev)):
        return f"the CUDA driver could not describe GPU {device_id}"
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def cuda_driver_version() -> str:
    """Highest CUDA version the installed driver supports ("12.6"), or "" without a driver."""
    cuda = _libcuda()
    version = ctypes.c_int()
    if cuda is None or cuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return ""
    return f"{version.value // 1000}.{(version.value % 1000) // 10}"


def tensorrt_version() -> str | None:
    """The installed TensorRT Python package's version, or None when it is absent."""
    try:
        import tensorrt
    except ImportError as exc:
        if missing_dependency(exc) != "tensorrt":
            raise  # TensorRT is there but broken: say so, do not call it "not installed"
        return None
    return str(tensorrt.__version__)


def tensorrt_major(version: str | None = None) -> int:
    """10 for TensorRT 10.x, 11 for 11.x (the installed one by default); 0 when unknown."""
    version = tensorrt_version() if version is None else version
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def tensorrt_library() -> str | None:
    """The TensorRT runtime library the onnxruntime TensorRT provider would load, or None.

    onnxruntime-gpu lists TensorrtExecutionProvider whether or not TensorRT is installed; only a
    loadable libnvinfer makes the provider usable.
    """
    for name in ("libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so"):
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def live_device(device_id: int = 0) -> DeviceFacts | str:
    """Facts of this machine's GPU and TensorRT, or a one-line reason they are unavailable."""
    found = gpu_info(device_id)
    if isinstance(found, str):
        return found
    trt = tensorrt_version()
    if trt is None:
        return f"the tensorrt Python package is not installed; {INSTALL_HINT}"
    return DeviceFacts(gpu_name=found[0], compute_capability=found[1], tensorrt_version=trt,
                       cuda_version=cuda_driver_version())


def engine_mismatch(built: Mapping, live: DeviceFacts | str) -> str | None:
    """None when engines built as `built` says (gpu_name, compute_capability, tensorrt_version;
    a build record or a manifest target) can run on `live`, else one line with the fix."""
    built_cc, built_trt = str(built.get("compute_capability") or ""), str(built.get("tensorrt_version") or "")
    where = f"{built.get('gpu_name') or 'a GPU'} (compute capability {built_cc or '?'}, TensorRT {built_trt or '?'})"
    if isinstance(live, str):
        return f"engines were built for {where} but {live}"
    here = f"{live.gpu_name} (compute capability {live.compute_capability}, TensorRT {live.tensorrt_version})"
    if built_cc and built_cc != live.compute_capability:
        return f"engines were built for {where}, this device is {here}; {REBUILD}"
    if built_trt and _release(built_trt) != _release(live.tensorrt_version):
        have = live.tensorrt_version
        return f"engines were built with TensorRT {built_trt}, this device has TensorRT {have}; {REBUILD}"
    return None


def _release(version: str) -> tuple[str, ...]:
    """Engines are only portable within one TensorRT release (major.minor.patch)."""
    return tuple(version.split(".")[:3])
