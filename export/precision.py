"""Export precision: which dtype the graphs store and compute in, and how parity judges them.

What onnxruntime's CPU provider runs (onnxruntime 1.32, x86-64, checked op by op):
- float16: no kernels for MatMul, Add, Mul, Softmax, Erf, Tanh...; only LayerNormalization and
  data movement (Transpose, Concat, Gather). The provider inserts Casts itself and computes in
  float32; Casts on weights are constant-folded at session load, so a float16 graph's weights sit
  in memory as float32 (half the disk, not half the RAM, no speed-up). CUDA and TensorRT run the
  same file in float16.
- bfloat16: no compute kernels and no automatic Casts: a bfloat16 graph does not load.

Hence two honest designs, both with float32 graph inputs and outputs (the runtime, its
decoders and the KV cache stay float32; the graphs cast at their edges):
- fp16: the real half-precision graph, numerically sensitive ops kept in float32 the way
  transformers computes them (Gemma's RMSNorm upcasts, eager softmax runs in float32, the rotary
  angles and `inv_freq` stay float32; LayerNormalization accumulates in float32 inside the op).
- bf16: weights stored as bfloat16, compute in float32: `upcast_compute` adds one Cast per
  weight and retypes every bfloat16 activation to float32, so the file loads on any provider.

Parity compares against the same half-precision weights in PyTorch, computed in float32
(`float32_compute`): PyTorch's float16 CPU matmul runs at ~0.2 GFLOP/s, and holding a float32
copy would double the memory the dtype was chosen to save.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, numpy_helper

logger = logging.getLogger(__name__)

DTYPES = ("fp32", "fp16", "bf16")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ONNX_HALF = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}


@dataclass(frozen=True)
class Tolerance:
    """Elementwise parity bound, numpy.allclose style: |got - ref| <= atol + rtol * |ref|."""

    atol: float = 1e-3  # absolute bound, in the tensor's own units (logits, hidden states, KV, actions)
    rtol: float = 1e-4  # relative bound, as a fraction of |ref|: large activations carry larger error

    def __post_init__(self):
        if not (self.atol >= 0 and self.rtol >= 0):  # also refuses NaN
            raise ValueError(f"parity tolerances must be >= 0 (atol {self.atol}, rtol {self.rtol})")

    def bound(self, ref_abs: float) -> float:
        return self.atol + self.rtol * ref_abs


# Per-dtype defaults, with margin over what was measured (worst max abs error over every graph
# output, presets tiny and small, all heads, 2026-11-30): fp32 4e-7; fp16 2.2e-3 per graph and
# 1.6e-2 on a flow chunk after 10 Euler steps (activations are rounded to 11 bits between ops);
# bf16 1.8e-2 (compute is float32 on the same rounded weights; what differs is where inputs are
# rounded to bf16's 8 bits).
DEFAULT_TOLERANCES = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-4),
    "fp16": Tolerance(atol=2e-2, rtol=2e-2),
    "bf16": Tolerance(atol=5e-2, rtol=2e-2),
}


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {DTYPES}; pass --dtype fp32, fp16 or bf16")
    return dtype


def default_tolerance(dtype: str) -> Tolerance:
    return DEFAULT_TOLERANCES[check_dtype(dtype)]


def dtype_name(model: torch.nn.Module) -> str:
    """The export dtype of a model: the dtype of its parameters (all of them share one)."""
    found = {p.dtype for p in model.parameters()}
    names = [name for name, dt in TORCH_DTYPES.items() if dt in found]
    if len(found) != 1 or not names:
        raise ValueError(f"model parameters mix dtypes {sorted(map(str, found))}; cast the whole model")
    return names[0]


def cast_parameters(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """Parameters to `dtype` in place, one tensor at a time; buffers (rotary `inv_freq`) stay float32.

    `model.to(dtype)` would also round the rotary frequencies, as transformers' own half-precision
    loading does not.
    """
    target = TORCH_DTYPES[check_dtype(dtype)]
    for p in model.parameters():
        if p.dtype != target:
            p.data = p.data.to(target)
    return model


def release_weights(*models: torch.nn.Module) -> None:
    """Free every parameter's storage (the models keep their structure but can no longer run)."""
    for model in models:
        for p in model.parameters():
            p.data = torch.empty(0, dtype=p.dtype)
    gc.collect()
    logger.info("PyTorch weights released")


@contextmanager
def building_in(dtype: str) -> Iterator[None]:
    """Create parameters directly in `dtype` (torch's default dtype for the duration).

    A 3B model built in float32 and cast afterwards would pass through 11.7 GB; built in
    float16 it never exceeds its 5.9 GB. Buffers computed explicitly in float32 (the rotary
    `inv_freq`) stay float32.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(TORCH_DTYPES[check_dtype(dtype)])
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def float32_compute(model: torch.nn.Module) -> Iterator[None]:
    """Run `model` in float32 while its weights stay stored in half precision.

    Every module with its own parameters gets them upcast just before it runs and restored
    after, and its floating inputs upcast too, so extra memory is one module's weights.
    A no-op for float32 models.
    """
    if all(p.dtype == torch.float32 for p in model.parameters()):
        yield
        return
    saved: dict[int, list[tuple[torch.nn.Parameter, torch.Tensor]]] = {}

    def before(module, args, kwargs):
        stash = []
        for p in module.parameters(recurse=False):
            if p.dtype != torch.float32:
                stash.append((p, p.data))
                p.data = p.data.float()
        saved.setdefault(id(module), []).append(stash)
        return tuple(_upcast(a) for a in args), {k: _upcast(v) for k, v in kwargs.items()}

    def after(module, args, output):
        for p, data in saved[id(module)].pop():
            p.data = data

    handles = []
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _upcast(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    return value


def softmax_in_float32(path: Path) -> int:
    """Wrap every float16 Softmax of a graph file in Casts so it runs in float32; returns how many.

    transformers asks for a float32 softmax (`softmax(..., dtype=float32).to(fp16)`), but the
    exporter's optimizer folds that Cast pair away; attention probabilities over hundreds of
    keys need the float32 exponent sums back. Weights (external data included) are not touched.
    """
    model = onnx.load(str(path), load_external_data=False)
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input]}
    nodes, wrapped = [], 0
    for node in model.graph.node:
        if node.op_type != "Softmax" or types.get(node.input[0]) != TensorProto.FLOAT16:
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        node.input[0], node.output[0] = f"{x}__float32_in", f"{y}__float32_out"
        nodes.append(onnx.helper.make_node("Cast", [x], [node.input[0]], name=f"{node.name}_to_f32",
                                           to=TensorProto.FLOAT))
        nodes.append(node)
        nodes.append(onnx.helper.make_node("Cast", [node.output[0]], [y], name=f"{node.name}_to_f16",
                                           to=TensorProto.FLOAT16))
        wrapped += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))  # external initializers keep their location: the data file is reused
    logger.info("%s: %d float16 softmax nodes now run in float32", path.name, wrapped)
    return wrapped


def upcast_compute(path: Path, dtype: str) -> int:
    """Rewrite a half-precision graph file to compute in float32 with its weights kept in `dtype`.

    Initializers keep their bytes (external data files are not touched) and gain one Cast to
    float32 each; Cast/Constant/ConstantOfShape nodes producing `dtype` produce float32 instead.
    Returns the number of weights cast. Used for bf16, which onnxruntime's CPU provider cannot run.
    """
    half = _ONNX_HALF[dtype]
    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"{path.name}: node {node.name or node.op_type} has a subgraph; cannot upcast it")
    weights = {t.name for t in g.initializer if t.data_type == half}
    renamed = {name: f"{name}__float32" for name in weights}
    casts = [onnx.helper.make_node("Cast", [n], [renamed[n]], name=f"upcast_{n}", to=TensorProto.FLOAT)
             for n in sorted(weights)]
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == half:
                attr.i = TensorProto.FLOAT
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == half:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float32"), attr.t.name))
    for value in list(g.input) + list(g.output) + list(g.value_info):
        if value.name not in weights and value.type.tensor_type.elem_type == half:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(path))  # external initializers keep their location: the data file is reused
    logger.info("%s: %d %s weights now cast to float32 at load", path.name, len(weights), dtype)
    return len(weights)
