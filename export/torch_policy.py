"""The PyTorch model run as a robot policy: eager graph wrappers behind the runtime's own decoder.

To say whether export or INT8 changed a policy's *behaviour*, the reference must run the same
closed loop as the bundle: the same preprocessing, prompt, decoder (argmax bins, carried past
action, seeded flow noise), unnormalisation and safety. So the eager model is not a second
policy implementation: each exported graph's PyTorch wrapper (export/onnx_export.graph_plan)
becomes one more runtime `Backend`, and the runtime's `BundlePolicy` drives them exactly as it
drives onnxruntime sessions. Only the graph arithmetic differs, which is the point.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vla_runtime.export.model import ReferenceVLA
from vla_runtime.export.onnx_export import graph_plan
from vla_runtime.runtime.backends.base import Backend, BackendOptions
from vla_runtime.runtime.bundle import open_bundle
from vla_runtime.runtime.decoders import make_decoder
from vla_runtime.runtime.manifest import GraphSpec
from vla_runtime.runtime.policy import BundlePolicy

logger = logging.getLogger(__name__)


class TorchGraphBackend(Backend):
    """One graph's PyTorch wrapper under the runtime's Backend contract (inputs checked, timed)."""

    formats = ("onnx",)  # stands in for the bundle's ONNX file of the same role
    devices = ("cpu",)

    def __init__(self, spec: GraphSpec, path: Path, module: torch.nn.Module, input_names: list[str],
                 output_names: list[str], options: BackendOptions | None = None):
        super().__init__(spec, path, "cpu", options)
        if list(spec.input_names) != list(input_names) or list(spec.output_names) != list(output_names):
            raise ValueError(f"{spec.role}: the model's graph {input_names} -> {output_names} is not the bundle's "
                             f"{list(spec.input_names)} -> {list(spec.output_names)}; export this checkpoint again")
        self.module, self.input_names, self.output_names = module, list(input_names), list(output_names)

    def _activate_impl(self) -> None:
        self.module.eval()

    def _run_impl(self, inputs: Mapping[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
        with torch.inference_mode():
            out = self.module(*[torch.from_numpy(np.array(inputs[n])) for n in self.input_names])  # a writable copy
        out = out if isinstance(out, tuple | list) else (out,)
        return {n: t.numpy() for n, t in zip(self.output_names, out, strict=True)}

    def _deactivate_impl(self) -> None:
        pass


def torch_policy(bundle_dir: str | Path, model: ReferenceVLA, threads: int = 1) -> BundlePolicy:
    """The bundle's policy with every graph run by `model` in PyTorch eager (the FP32 bundle's source)."""
    torch.set_num_threads(threads)
    bundle = open_bundle(bundle_dir)
    m = bundle.manifest
    plan = graph_plan(model)
    runners = {}
    for role, (wrapper, _, names_in, names_out, _) in plan.items():
        backend = TorchGraphBackend(m.graphs[role], bundle.path(m.graphs[role].file), wrapper, names_in, names_out)
        backend.activate()
        runners[role] = backend
    return BundlePolicy(bundle, runners, make_decoder(m), "torch-eager")
