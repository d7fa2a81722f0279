"""Native TensorRT 10/11 runner for serialized engines, with CUDA through cuda-python (no torch).

Engines are tied to one GPU architecture and one TensorRT release, so before deserializing
anything the runner compares the engine's build record (written beside it by `vla-export
engine`) with the live device (backends/device.py) and refuses a mismatch in one line.

Memory is allocated once, on activate(), at the optimization profile's maximum shapes: one
staging buffer per input, and per output a ring of two device buffers plus one host buffer.
A run only sets shapes and addresses, copies and launches; nothing is allocated or freed per
run (a cudaFree synchronises the whole device). Outputs named in `keep` stay on the device as
`DeviceTensor` views of their ring slot and are bound straight back as inputs (KV cache, flow
context); the two slots alternate so a step that reads its previous output never writes over
it, and a view whose slot was written again is refused instead of read stale.

When the same shapes and addresses repeat (every flow step, every tick of a fixed prompt),
the TensorRT launch is captured once as a CUDA graph and replayed, which removes the
per-kernel launch cost; engines TensorRT cannot capture fall back to plain launches.
Every TensorRT and CUDA call's result is checked.

The onnxruntime TensorRT execution provider is the other way to reach TensorRT: it runs the
bundle's ONNX graphs (QDQ for int8) and builds engines itself (see backends/onnxrt.py).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from vla_runtime.common.cli import missing_dependency
from vla_runtime.runtime.backends.base import Backend, BackendError
from vla_runtime.runtime.backends.device import INSTALL_HINT, engine_mismatch, live_device
from vla_runtime.runtime.manifest import GraphSpec

logger = logging.getLogger(__name__)

__all__ = ["DeviceTensor", "TensorrtBackend", "engine_record_path", "import_cudart", "INSTALL_HINT"]

_MAX_GRAPHS = 8  # captured CUDA graphs kept per runner (shape/address sets); a flow step needs 2
_CAPTURE_AFTER = 2  # capture a launch signature on its second launch, not for one-off shapes


def engine_record_path(engine_path: Path) -> Path:
    """The JSON build record kept beside an engine: <name>.engine -> <name>.json."""
    return Path(engine_path).with_suffix(".json")


def import_cudart():
    """cuda-python's runtime module (new and old package layouts); ImportError when absent."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result, what: str):
    """cuda-python returns (error, *values); raise on any error, return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA {what} failed with error {int(err)} ({err}); check the GPU and driver")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


class DeviceBuffer:
    """One device allocation, freed when the last reference goes; counts the writes into it."""

    def __init__(self, cudart, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(_check(cudart.cudaMalloc(max(1, self.nbytes)), "cudaMalloc"))  # never 0, even when empty
        self.writes = 0  # runs that wrote this buffer; a view remembers the count it was made at
        self._free = weakref.finalize(self, cudart.cudaFree, self.ptr)


class DeviceTensor:
    """A resident output: a view of a runner's ring slot, valid until that slot is written again."""

    def __init__(self, buffer: DeviceBuffer, shape: tuple[int, ...], dtype: np.dtype):
        self.buffer, self.shape, self.dtype = buffer, tuple(shape), np.dtype(dtype)
        self.ptr = buffer.ptr
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.generation = buffer.writes

    @property
    def valid(self) -> bool:
        return self.buffer.writes == self.generation


class TensorrtBackend(Backend):
    """Deserializes one engine on activate(); one execution context and stream per graph."""

    formats = ("tensorrt",)
    devices = ("tensorrt",)

    @classmethod
    def probe(cls, device: str) -> str | None:
        if device not in cls.devices:
            return f"native TensorRT runs only on 'tensorrt', not {device!r}"
        for name, load in (("tensorrt", lambda: __import__("tensorrt")), ("cuda-python", import_cudart)):
            try:
                load()
            except ImportError as exc:
                if missing_dependency(exc) is None:  # installed but broken: show why, not "not installed"
                    return f"{name} is installed but fails to import ({exc}); reinstall it"
                return f"the {name} Python package is not installed; {INSTALL_HINT}"
        live = live_device()
        return live if isinstance(live, str) else None

    @classmethod
    def check_graph(cls, spec: GraphSpec, device: str) -> str | None:
        if spec.format != "tensorrt":
            return f"graph {spec.role!r} is {spec.format}, not a TensorRT engine; build one with `vla-export engine`"
        if spec.precision == "int8-cpu":
            return f"graph {spec.role!r} is int8-cpu, which TensorRT cannot run; use a qdq bundle"
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    def _fail(self, what: str) -> BackendError:
        return BackendError(f"graph {self.spec.role!r}: {what}")

    def _activate_impl(self) -> None:
        import tensorrt as trt

        self._cudart = import_cudart()
        live = live_device(self.options.device_id)
        if isinstance(live, str):
            raise self._fail(live)
        record_path = engine_record_path(self.path)
        if record_path.is_file():
            problem = engine_mismatch(json.loads(record_path.read_text()), live)
            if problem:
                raise self._fail(problem)
        _check(self._cudart.cudaSetDevice(self.options.device_id), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise self._fail(f"TensorRT {live.tensorrt_version} could not deserialize {self.path.name}; "
                             "rebuild it on this device with `vla-export engine`")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise self._fail("TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._outputs = tuple(n for n in names if not is_input[n])
        declared, actual = set(self.spec.input_names), {n for n in names if is_input[n]}
        if declared != actual or any(o not in self._outputs for o in self.spec.output_names):
            raise self._fail(f"engine tensors {sorted(names)} differ from the manifest; rebuild the engine")
        self._allocate(sorted(actual))
        self._graphs: dict[tuple, Any] = {}  # launch signature -> instantiated CUDA graph
        self._seen: dict[tuple, int] = {}  # launch signature -> times launched without a graph
        self._graphs_ok = True  # False once TensorRT refused a capture: plain launches from then on

    def _allocate(self, inputs: list[str]) -> None:
        """Staging, ring and host buffers at the profile's maximum shapes, once."""
        ctx, cudart = self._context, self._cudart
        self._staging: dict[str, DeviceBuffer] = {}
        for name in inputs:
            shape = tuple(self._engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                shape = tuple(self._engine.get_tensor_profile_shape(name, 0)[2])  # (min, opt, max)[max]
            if not ctx.set_input_shape(name, shape):
                raise self._fail(f"TensorRT refused the profile's maximum shape {shape} for input {name!r}")
            self._staging[name] = DeviceBuffer(cudart, _nbytes(shape, self._dtypes[name]))
        self._ring: dict[str, tuple[DeviceBuffer, DeviceBuffer]] = {}
        self._host: dict[str, np.ndarray] = {}  # flat host buffers for non-kept outputs
        for name in self._outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise self._fail(f"output {name!r} has a data-dependent shape {shape}; this runner needs "
                                 "shapes that follow from the inputs")
            nbytes = _nbytes(shape, self._dtypes[name])
            self._ring[name] = (DeviceBuffer(cudart, nbytes), DeviceBuffer(cudart, nbytes))
            self._host[name] = np.empty(int(np.prod(shape, dtype=np.int64)), self._dtypes[name])
        self._slot = 0  # ring slot the next run writes

    def _deactivate_impl(self) -> None:
        self._staging, self._ring, self._host = {}, {}, {}
        for graph in getattr(self, "_graphs", {}).values():
            self._cudart.cudaGraphExecDestroy(graph)
        self._graphs = {}
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

    def _bind(self, name: str, shape: tuple[int, ...], ptr: int) -> None:
        ctx = self._context
        if not ctx.set_input_shape(name, shape):
            raise self._fail(f"input {name!r} shape {shape} is outside the engine's profile; rebuild with "
                             "a wider --shape range")
        if not ctx.set_tensor_address(name, ptr):
            raise self._fail(f"TensorRT refused the address of input {name!r}")

    def _run_impl(self, inputs: Mapping[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
        ctx, signature = self._context, []
        slot = self._slot
        writing = {id(ring[slot]) for ring in self._ring.values()}
        for name, value in inputs.items():
            if isinstance(value, DeviceTensor):
                if not value.valid:
                    raise self._fail(f"resident input {name!r} was overwritten by a later run of its graph; "
                                     "use each kept output before running that graph twice more")
                if id(value.buffer) in writing:
                    raise self._fail(f"resident input {name!r} is an output of this graph from two runs ago, so "
                                     "this run would overwrite its own input; pass the latest output")
                self._bind(name, value.shape, value.ptr)
                signature.append((name, value.shape, value.ptr))
                continue
            host = np.ascontiguousarray(value, dtype=self._dtypes[name])
            buf = self._staging[name]
            if host.nbytes > buf.nbytes:
                raise self._fail(f"input {name!r} shape {host.shape} exceeds the engine profile's maximum")
            self._bind(name, host.shape, buf.ptr)
            self._copy(buf.ptr, host.ctypes.data, host.nbytes, to_host=False)
            signature.append((name, host.shape, buf.ptr))
        self._slot ^= 1
        views: dict[str, DeviceTensor] = {}
        for name in self._outputs:
            buffer = self._ring[name][slot]
            buffer.writes += 1
            views[name] = DeviceTensor(buffer, tuple(ctx.get_tensor_shape(name)), self._dtypes[name])
            if not ctx.set_tensor_address(name, buffer.ptr):
                raise self._fail(f"TensorRT refused the address of output {name!r}")
        self._launch((tuple(signature), slot))
        out: dict[str, Any] = {}
        for name, view in views.items():
            if name in keep:
                out[name] = view
            else:
                host = self._host[name][: view.nbytes // view.dtype.itemsize].reshape(view.shape)
                self._copy(host.ctypes.data, view.ptr, view.nbytes, to_host=True)
                out[name] = host
        _check(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out

    def _launch(self, signature: tuple) -> None:
        """Replay this signature's CUDA graph, capturing it on its second launch; else launch plainly.

        TensorRT must have run a shape set once before a capture (it allocates lazily), hence
        the first launch of every signature is plain.
        """
        cudart = self._cudart
        graph = self._graphs.get(signature)
        if (graph is None and self._graphs_ok and len(self._graphs) < _MAX_GRAPHS
                and self._seen.get(signature, 0) >= _CAPTURE_AFTER - 1):
            graph = self._capture(signature)
        if graph is not None:
            _check(cudart.cudaGraphLaunch(graph, self._stream), "cudaGraphLaunch")
            return
        if not self._context.execute_async_v3(int(self._stream)):
            raise self._fail("TensorRT execution failed (see the TensorRT log above)")
        self._seen[signature] = self._seen.get(signature, 0) + 1

    def _capture(self, signature: tuple):
        """Record one enqueue as an instantiated CUDA graph, or None when TensorRT cannot be captured."""
        cudart = self._cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(cudart.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        enqueued = self._context.execute_async_v3(int(self._stream))
        err, graph = cudart.cudaStreamEndCapture(self._stream)  # always end the capture, even after a failure
        if not enqueued or int(err) != 0 or graph is None:
            self._graphs_ok = False  # e.g. engines with loops or data-dependent shapes
            logger.info("%s: this engine cannot be captured as a CUDA graph; launching plainly", self.spec.role)
            return None
        instance = _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        _check(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
        self._graphs[signature] = instance
        logger.debug("%s: captured a CUDA graph (%d kept)", self.spec.role, len(self._graphs))
        return instance

    def _copy(self, dst: int, src: int, nbytes: int, to_host: bool) -> None:
        if nbytes == 0:
            return
        kind = (self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost if to_host
                else self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        _check(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream), "cudaMemcpyAsync")


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
