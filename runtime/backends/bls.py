"""Graphs served by Triton itself, reached from a python model through BLS.

Inside NVIDIA's Triton container each bundle graph is its own onnxruntime (or TensorRT plan)
model, and the python `policy` model drives them through Business Logic Scripting: one
`InferenceRequest(...).exec()` per graph call. `BlsBackend` is that call behind the ordinary
runner interface, so the server decodes with the very same `BundlePolicy` and decoders as a
robot does. `triton_python_backend_utils` exists only inside a Triton python model, so the
caller hands the module in; nothing here imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from vla_runtime.runtime.backends.base import DEVICES, Backend, BackendError, BackendOptions
from vla_runtime.runtime.manifest import GraphSpec

logger = logging.getLogger(__name__)


class BlsBackend(Backend):
    """One bundle graph as a Triton model, called from inside the server (outputs come back to host memory)."""

    formats = ("onnx", "tensorrt")
    devices = DEVICES

    def __init__(self, spec: GraphSpec, path: Path, device: str, options: BackendOptions | None = None, *,
                 model_name: str, pb_utils: Any):
        super().__init__(spec, path, device, options)
        self.model_name = model_name  # the graph's model in the same repository
        self._pb = pb_utils  # triton_python_backend_utils, handed in by the python model
        self._outputs = list(spec.output_names)
        self._memory = None

    def _activate_impl(self) -> None:
        pb = self._pb
        preferred = getattr(pb, "PreferredMemory", None)  # host copies: decoders work on numpy
        if preferred is not None:
            self._memory = preferred(pb.TRITONSERVER_MEMORY_CPU, 0)

    def _run_impl(self, inputs: Mapping[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
        pb = self._pb
        tensors = [pb.Tensor(name, np.ascontiguousarray(value)) for name, value in inputs.items()]
        extra = {"preferred_memory": self._memory} if self._memory is not None else {}
        request = pb.InferenceRequest(model_name=self.model_name, requested_output_names=self._outputs,
                                      inputs=tensors, **extra)
        response = request.exec()
        if response.has_error():
            raise BackendError(f"graph {self.spec.role!r} (Triton model {self.model_name!r}): "
                               f"{response.error().message()}")
        return {name: pb.get_output_tensor_by_name(response, name).as_numpy() for name in self._outputs}

    def _deactivate_impl(self) -> None:
        pass
