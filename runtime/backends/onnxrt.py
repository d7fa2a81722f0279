"""ONNX Runtime runner: CPU, CUDA or TensorRT execution provider, always through IO binding.

Every run goes through one reused `IOBinding` so the same code path serves all providers:
resident inputs (`OrtValue`) are bound without a copy, kept outputs stay as `OrtValue` on the
provider's device, and host outputs are written into buffers this runner owns and reuses
whenever the input shapes repeat (every tick, for a fixed prompt). On CPU this only saves
allocations; on a GPU it keeps the KV cache and the flow context off the PCIe bus.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort
from vla_runtime.runtime.backends.base import Backend, BackendError
from vla_runtime.runtime.backends.device import gpu_info, tensorrt_library
from vla_runtime.runtime.manifest import GraphSpec

logger = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# Where kept outputs live, per device (the TensorRT EP hands tensors over in CUDA memory).
_RESIDENT_DEVICE = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
}
_MAX_SIGNATURES = 64  # distinct input-shape sets whose output buffers are kept (decode steps, prompts)


class OrtBackend(Backend):
    """One `InferenceSession` per graph, created on activate() and reused every tick."""

    formats = ("onnx",)
    devices = ("tensorrt", "cuda", "cpu")

    @classmethod
    def probe(cls, device: str) -> str | None:
        if device not in cls.devices:
            return f"onnxruntime has no {device!r} execution provider"
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            fix = {
                "cuda": "install onnxruntime-gpu (pip install onnxruntime-gpu) or use --backend cpu",
                "tensorrt": "install onnxruntime-gpu with TensorRT libraries, or use --backend cuda|cpu",
            }.get(device, "reinstall onnxruntime")
            return f"{provider} is not available in onnxruntime {ort.__version__}; {fix}"
        if device == "cpu":
            return None
        # onnxruntime-gpu lists its GPU providers on any machine; they need a GPU, and TensorRT's
        # its libnvinfer, or session creation fails (or quietly runs on the next provider).
        gpu = gpu_info()
        if isinstance(gpu, str):
            return f"{provider} is listed but {gpu}; use --backend cpu"
        if device == "tensorrt" and tensorrt_library() is None:
            return (f"{provider} is listed but the TensorRT libraries (libnvinfer) cannot be loaded; "
                    "install TensorRT (pip install tensorrt) or use --backend cuda")
        return None

    @classmethod
    def check_graph(cls, spec: GraphSpec, device: str) -> str | None:
        """None when this graph can run on `device`, else why not."""
        if spec.format not in cls.formats:
            return f"graph {spec.role!r} is a {spec.format} file, not ONNX"
        if device == "tensorrt" and spec.precision == "int8-cpu":
            return f"graph {spec.role!r} is int8-cpu (contrib ops TensorRT cannot parse); use --backend cuda|cpu"
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    def _activate_impl(self) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.options.threads
        opts.inter_op_num_threads = 1  # graphs run one op at a time on a small board
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.options.spin else "0")
        opts.log_severity_level = 3  # errors only; we report problems ourselves
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=self._providers())
        except Exception as exc:  # ORT raises several unrelated types; all mean "cannot load"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"graph {self.spec.role!r} ({self.path.name}) failed to load: {first}") from None
        wanted = PROVIDERS[self.device]
        if wanted not in self._session.get_providers():
            raise BackendError(
                f"graph {self.spec.role!r}: onnxruntime fell back to {self._session.get_providers()} "
                f"instead of {wanted}; check the CUDA/TensorRT libraries or use --backend cpu"
            )
        declared = set(self.spec.input_names)
        actual = {i.name for i in self._session.get_inputs()}
        if declared != actual:
            raise BackendError(
                f"graph {self.spec.role!r}: ONNX inputs {sorted(actual)} differ from the manifest's "
                f"{sorted(declared)}; rebuild the bundle"
            )
        self._outputs = tuple(o.name for o in self._session.get_outputs())
        missing = [n for n in self.spec.output_names if n not in self._outputs]
        if missing:
            raise BackendError(f"graph {self.spec.role!r}: ONNX file lacks declared outputs {missing}")
        self._binding = self._session.io_binding()
        self._buffers: dict[tuple, dict[str, np.ndarray]] = {}  # input shapes -> host output buffers
        self._resident_device = _RESIDENT_DEVICE[self.device]

    def _deactivate_impl(self) -> None:
        self._binding = None
        self._buffers = {}
        self._session = None

    def _providers(self) -> list:
        dev = {"device_id": self.options.device_id}
        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        if self.device == "cuda":
            return [("CUDAExecutionProvider", dev), "CPUExecutionProvider"]
        return [("TensorrtExecutionProvider", self._tensorrt_options()), ("CUDAExecutionProvider", dev),
                "CPUExecutionProvider"]

    def _tensorrt_options(self) -> dict:
        """TensorRT EP settings from the graph's precision; engines cached outside the bundle.

        FP16 is on unless the options ask for fp32 (`gpu_fp16=False`): an fp32 ONNX graph on the
        TensorRT provider otherwise runs at fp32 speed. INT8 is enabled only for QDQ graphs, with
        no calibration table (TensorRT refuses dynamic ranges beside Q/DQ nodes).
        """
        precision = self.spec.precision
        opts: dict[str, Any] = {
            "device_id": self.options.device_id,
            "trt_fp16_enable": self.options.gpu_fp16 or precision == "fp16",
            "trt_int8_enable": precision == "int8",  # QDQ graphs need it under TensorRT 10 weak typing
        }
        shapes = self.options.profiles.get(self.spec.role)
        if shapes:
            opts.update(
                trt_profile_min_shapes=_profile_option(shapes, 0),
                trt_profile_opt_shapes=_profile_option(shapes, 1),
                trt_profile_max_shapes=_profile_option(shapes, 2),
            )
        if self.options.engine_cache_dir is not None:
            cache = self.options.engine_cache_dir / self.spec.role
            cache.mkdir(parents=True, exist_ok=True)
            opts.update(
                trt_engine_cache_enable=True,
                trt_engine_cache_path=str(cache),
                trt_timing_cache_enable=True,
                trt_timing_cache_path=str(cache),
            )
        return opts

    # -- running -----------------------------------------------------------------------------

    def describe(self, value: Any) -> tuple[str, tuple[int, ...]]:
        if isinstance(value, ort.OrtValue):
            return _ORT_DTYPES.get(value.data_type(), value.data_type()), tuple(value.shape())
        return super().describe(value)

    def fetch(self, value: Any) -> np.ndarray:
        if isinstance(value, ort.OrtValue):
            return np.array(value.numpy(), copy=True)
        return super().fetch(value)

    def _run_impl(self, inputs: Mapping[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        shapes, held = [], []  # held: host arrays the binding points into, alive until the run ends
        for name, value in inputs.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
                shapes.append((name, tuple(value.shape())))
            else:
                held.append(np.ascontiguousarray(value))
                binding.bind_cpu_input(name, held[-1])
                shapes.append((name, value.shape))
        signature = (tuple(sorted(shapes)), keep)
        buffers = self._buffers.get(signature)
        for name in self._outputs:
            if name in keep:
                binding.bind_output(name, self._resident_device, self.options.device_id)
            elif buffers is not None:
                buf = buffers[name]
                binding.bind_output(name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)
            else:
                binding.bind_output(name, "cpu")
        try:
            self._session.run_with_iobinding(binding)
            if self.device != "cpu":
                binding.synchronize_outputs()  # host buffers are read right after this returns
        except Exception as exc:
            raise BackendError(f"graph {self.spec.role!r} failed to run: {str(exc).strip()[:300]}") from None
        values = binding.get_outputs()  # in binding order, i.e. self._outputs
        if buffers is None:
            buffers = {
                name: np.array(v.numpy(), copy=True)  # owned copies become this signature's buffers
                for name, v in zip(self._outputs, values, strict=True)
                if name not in keep
            }
            if len(self._buffers) >= _MAX_SIGNATURES:
                self._buffers.pop(next(iter(self._buffers)))
            self._buffers[signature] = buffers
        return {
            name: (value if name in keep else buffers[name])
            for name, value in zip(self._outputs, values, strict=True)
        }


def _profile_option(shapes: Mapping[str, tuple[tuple[int, ...], ...]], which: int) -> str:
    """TensorRT EP syntax: "name:1x16,other:1x1x17x32"."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in bounds[which])}" for name, bounds in shapes.items())


# Registry naming convention: backends/<name>.py provides <Name>Backend.
OnnxrtBackend = OrtBackend
