"""Native TensorRT 10 runner for serialized engines, with CUDA through cuda-python (no torch).

Engines are tied to one GPU architecture and one TensorRT release, so before deserializing
anything the runner compares the engine's build record (written beside it by `vla-export
engine`) with the live device and refuses a mismatch in one line. Running uses TensorRT 10's
name-based API: set_input_shape / set_tensor_address / execute_async_v3 on one CUDA stream.
Outputs named in `keep` stay in device memory as `DeviceTensor`s and are bound straight back
as inputs (the KV cache, the flow context), each in its own allocation so a runner that
reads its previous output never writes over it.

The onnxruntime TensorRT execution provider is the other way to reach TensorRT: it runs the
bundle's ONNX graphs (QDQ for int8) and builds engines itself (see backends/onnxrt.py).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from vla_runtime.runtime.backends.base import Backend, BackendError
from vla_runtime.runtime.manifest import GraphSpec

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'vla-runtime[tensorrt]' (on Jetson: JetPack's python3-libnvinfer and cuda-python)"


def engine_record_path(engine_path: Path) -> Path:
    """The JSON build record kept beside an engine: <name>.engine -> <name>.json."""
    return Path(engine_path).with_suffix(".json")


@dataclass(frozen=True)
class DeviceFacts:
    """What an engine is bound to, for the device it was built on or the one it should run on."""

    gpu_name: str  # e.g. "Orin"
    compute_capability: str  # "major.minor", e.g. "8.7"
    tensorrt_version: str  # e.g. "10.3.0"
    cuda_version: str  # CUDA runtime, "major.minor"


def engine_mismatch(record: Mapping, live: DeviceFacts) -> str | None:
    """None when an engine built as `record` says can run on `live`, else a one-line reason + fix."""
    built_cc, built_trt = str(record.get("compute_capability", "")), str(record.get("tensorrt_version", ""))
    where = f"{record.get('gpu_name', '?')} (compute capability {built_cc}, TensorRT {built_trt})"
    here = f"{live.gpu_name} (compute capability {live.compute_capability}, TensorRT {live.tensorrt_version})"
    fix = "rebuild it on this device with `vla-export engine`"
    if built_cc != live.compute_capability:
        return f"engine was built for {where}, this device is {here}; {fix}"
    if _release(built_trt) != _release(live.tensorrt_version):
        return f"engine was built with TensorRT {built_trt}, this device has TensorRT {live.tensorrt_version}; {fix}"
    return None


def _release(version: str) -> tuple[str, ...]:
    """Engines are only portable within one TensorRT release (major.minor.patch)."""
    return tuple(version.split(".")[:3])


# ---------------------------------------------------------------------------------------------
# CUDA through cuda-python: the few calls a runner needs.
# ---------------------------------------------------------------------------------------------


def import_cudart():
    """cuda-python's runtime module (new and old package layouts); ImportError when absent."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result, what: str):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA {what} failed with error {int(err)} ({err}); check the GPU and driver")
    return rest[0] if len(rest) == 1 else tuple(rest)


def live_device(device_id: int = 0) -> DeviceFacts:
    """Facts of the GPU and TensorRT on this machine (needs tensorrt and cuda-python)."""
    import tensorrt as trt

    cudart = import_cudart()
    prop = _check(cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    version = int(_check(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))  # e.g. 12040
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return DeviceFacts(
        gpu_name=name.strip("\x00 "),
        compute_capability=f"{prop.major}.{prop.minor}",
        tensorrt_version=str(trt.__version__),
        cuda_version=f"{version // 1000}.{(version % 1000) // 10}",
    )


class DeviceTensor:
    """One tensor in device memory, freed when the last reference goes."""

    def __init__(self, cudart, nbytes: int, shape: tuple[int, ...], dtype: np.dtype):
        self.shape, self.dtype, self.nbytes = tuple(shape), np.dtype(dtype), int(nbytes)
        self.ptr = int(_check(cudart.cudaMalloc(max(1, self.nbytes)), "cudaMalloc"))  # never 0, even when empty
        self._free = weakref.finalize(self, cudart.cudaFree, self.ptr)


# ---------------------------------------------------------------------------------------------
# The runner.
# ---------------------------------------------------------------------------------------------


class TensorrtBackend(Backend):
    """Deserializes one engine on activate(); one execution context and stream per graph."""

    formats = ("tensorrt",)
    devices = ("tensorrt",)

    @classmethod
    def probe(cls, device: str) -> str | None:
        if device not in cls.devices:
            return f"native TensorRT runs only on 'tensorrt', not {device!r}"
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return f"the tensorrt Python package is not installed; {INSTALL_HINT}"
        try:
            import_cudart()
        except ImportError:
            return f"cuda-python is not installed; {INSTALL_HINT}"
        return None

    @classmethod
    def check_graph(cls, spec: GraphSpec, device: str) -> str | None:
        if spec.format != "tensorrt":
            return f"graph {spec.role!r} is {spec.format}, not a TensorRT engine; build one with `vla-export engine`"
        if spec.precision == "int8-cpu":
            return f"graph {spec.role!r} is int8-cpu, which TensorRT cannot run; use a qdq bundle"
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    def _activate_impl(self) -> None:
        import tensorrt as trt

        self._cudart = import_cudart()
        live = live_device(self.options.device_id)
        record_path = engine_record_path(self.path)
        if record_path.is_file():
            problem = engine_mismatch(json.loads(record_path.read_text()), live)
            if problem:
                raise BackendError(f"graph {self.spec.role!r}: {problem}")
        _check(self._cudart.cudaSetDevice(self.options.device_id), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"graph {self.spec.role!r}: TensorRT {live.tensorrt_version} could not deserialize "
                f"{self.path.name}; rebuild it on this device with `vla-export engine`"
            )
        self._context = self._engine.create_execution_context()
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._outputs = tuple(n for n in names if not is_input[n])
        declared = set(self.spec.input_names)
        actual = {n for n in names if is_input[n]}
        if declared != actual or any(o not in self._outputs for o in self.spec.output_names):
            raise BackendError(
                f"graph {self.spec.role!r}: engine tensors {sorted(names)} differ from the manifest; rebuild the engine"
            )
        self._staging: dict[str, DeviceTensor] = {}  # host inputs are copied here, grown as needed

    def _deactivate_impl(self) -> None:
        self._staging = {}
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
        self._stream = self._context = self._engine = self._runtime = None

    # -- running -----------------------------------------------------------------------------

    def describe(self, value: Any) -> tuple[str, tuple[int, ...]]:
        if isinstance(value, DeviceTensor):
            return value.dtype.name, value.shape
        return super().describe(value)

    def fetch(self, value: Any) -> np.ndarray:
        if isinstance(value, DeviceTensor):
            host = np.empty(value.shape, value.dtype)
            self._copy(host.ctypes.data, value.ptr, value.nbytes, to_host=True)
            _check(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            return host
        return super().fetch(value)

    def _run_impl(self, inputs: Mapping[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
        ctx = self._context
        for name, value in inputs.items():
            if isinstance(value, DeviceTensor):
                ctx.set_input_shape(name, value.shape)
                ctx.set_tensor_address(name, value.ptr)
                continue
            host = np.ascontiguousarray(value, dtype=self._dtypes[name])
            buf = self._staging.get(name)
            if buf is None or buf.nbytes < host.nbytes:
                buf = self._staging[name] = DeviceTensor(self._cudart, host.nbytes, host.shape, host.dtype)
            ctx.set_input_shape(name, host.shape)
            ctx.set_tensor_address(name, buf.ptr)
            self._copy(buf.ptr, host.ctypes.data, host.nbytes, to_host=False)
        produced: dict[str, DeviceTensor] = {}
        for name in self._outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize
            produced[name] = DeviceTensor(self._cudart, nbytes, shape, self._dtypes[name])  # fresh: never aliased
            ctx.set_tensor_address(name, produced[name].ptr)
        if not ctx.execute_async_v3(int(self._stream)):
            raise BackendError(f"graph {self.spec.role!r}: TensorRT execution failed (see the TensorRT log)")
        out: dict[str, Any] = {}
        for name, tensor in produced.items():
            if name in keep:
                out[name] = tensor
            else:
                host = np.empty(tensor.shape, tensor.dtype)
                self._copy(host.ctypes.data, tensor.ptr, tensor.nbytes, to_host=True)
                out[name] = host
        _check(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out

    def _copy(self, dst: int, src: int, nbytes: int, to_host: bool) -> None:
        if nbytes == 0:
            return
        kind = (self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost if to_host
                else self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        _check(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream), "cudaMemcpyAsync")
