"""Trace each graph wrapper with the dynamo ONNX exporter and prove the file is well formed.

Dynamic axes are traced with example sizes >= 2 (torch.export specialises 0 and 1), the
opset is pinned so TensorRT 10 parsers accept the file, and every graph must pass
`onnx.checker` with full shape inference and hold only default-domain ops.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from vla_runtime.export.graphs import (
    DecodeGraph,
    HeadGraph,
    PrefillGraph,
    StateHeadGraph,
    VelocityGraph,
    VisionGraph,
)
from vla_runtime.export.model import ReferenceVLA
from vla_runtime.export.precision import dtype_name, softmax_in_float32, upcast_compute
from vla_runtime.runtime.onnx_refs import EXTERNAL_DATA_BYTES

logger = logging.getLogger(__name__)

OPSET = 18  # TensorRT 10.x parses opsets 9-20; 18 is the exporter's native opset
_EXAMPLE_PROMPT = 5  # T while tracing: any length >= 2 keeps the axis symbolic
_EXAMPLE_PAST = 7  # P while tracing the decode graph


_NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration", "onnx_ir", "onnxscript")


class ExportError(RuntimeError):
    """A graph could not be traced or failed its structural checks."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple  # ints for fixed dims, strings for symbolic dims


@dataclass(frozen=True)
class GraphInfo:
    role: str
    file: str  # relative to the bundle root
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    seconds: float  # wall time of trace + checks
    data_files: tuple[str, ...] = ()  # external-data side files next to `file`


def _kv_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def graph_plan(model: ReferenceVLA) -> dict:
    """role -> (wrapper, example args, input names, output names, dynamic shapes) for this head."""
    c = model.cfg
    n, e, layers = c.prefix_image_tokens, c.text_hidden, c.text_layers  # n: image tokens of every view
    seq = torch.export.Dim("seq", min=1, max=512)
    ctx = torch.export.Dim("context", min=2, max=1024)
    past = torch.export.Dim("past", min=1, max=1024)
    pixels = torch.zeros(1, 3, c.image_size, c.image_size)  # [1, 3, S, S]
    image = torch.zeros(1, n, e)  # [1, N, E]
    prompt = torch.ones(1, _EXAMPLE_PROMPT, dtype=torch.long)  # [1, T]
    state = torch.zeros(1, max(c.state_dim, 1))  # [1, S] normalised measured state (when the head reads it)
    plan = {"vision": (VisionGraph(model), (pixels,), ["pixel_values"], ["image_embeds"], None)}
    prefill_in = ["image_embeds", "input_ids"]
    prefill_dyn = {"image_embeds": None, "input_ids": {1: seq}}
    if c.head == "tokens":
        outs = ["action_logits"] + _kv_names("present", layers)
        plan["prefill"] = (PrefillGraph(model), (image, prompt), prefill_in, outs, prefill_dyn)
        kv = torch.zeros(1, c.text_kv_heads, _EXAMPLE_PAST, c.head_dim)  # [1, KV, P, Dh]
        ids = torch.full((1, 1), model.tokens.token_id(0), dtype=torch.long)  # [1, 1]
        pos = torch.full((1, 1), _EXAMPLE_PAST, dtype=torch.long)  # [1, 1]
        past_names = _kv_names("past_key_values", layers)
        dyn = {"input_ids": None, "position_ids": None, "past": [{2: past} for _ in past_names]}
        plan["decode"] = (
            DecodeGraph(model),
            (ids, pos, *[kv.clone() for _ in past_names]),
            ["input_ids", "position_ids", *past_names],
            ["action_logits", *_kv_names("present", layers)],
            dyn,
        )
    elif c.head == "parallel":
        plan["prefill"] = (PrefillGraph(model), (image, prompt), prefill_in, ["pooled"], prefill_dyn)
        pooled = torch.zeros(1, e)  # [1, E]
        past_action = torch.zeros(1, c.action_dim, dtype=torch.long)  # [1, D]
        if c.condition_on_past_action and c.state_dim:
            args, names, wrapper = (pooled, past_action, state), ["pooled", "past_action", "state"], HeadGraph(model)
        elif c.condition_on_past_action:
            args, names, wrapper = (pooled, past_action), ["pooled", "past_action"], HeadGraph(model)
        elif c.state_dim:
            args, names, wrapper = (pooled, state), ["pooled", "state"], StateHeadGraph(model)
        else:
            args, names, wrapper = (pooled,), ["pooled"], HeadGraph(model)
        plan["head"] = (wrapper, args, names, ["action_logits"], None)
    else:
        plan["prefill"] = (PrefillGraph(model), (image, prompt), prefill_in, ["hidden_states"], prefill_dyn)
        context = torch.zeros(1, n + _EXAMPLE_PROMPT, e)  # [1, L, E]
        noisy = torch.zeros(1, c.horizon, c.action_dim)  # [1, H, D]
        t = torch.full((1,), 0.5)  # [1]
        dyn = {"context": {1: ctx}, "noisy_actions": None, "timestep": None}
        args, names = (context, noisy, t), ["context", "noisy_actions", "timestep"]
        if c.state_dim:
            args, names, dyn = (*args, state), [*names, "state"], {**dyn, "state": None}
        plan["velocity"] = (VelocityGraph(model), args, names, ["velocity"], dyn)
    return plan


_ONNX_TO_NUMPY = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool", 2: "uint8"}


def _value_infos(values) -> tuple[TensorInfo, ...]:
    infos = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        infos.append(TensorInfo(v.name, _ONNX_TO_NUMPY.get(t.elem_type, str(t.elem_type)), dims))
    return tuple(infos)


def check_graph(path: Path) -> onnx.ModelProto:
    """Checker + strict shape inference; only default-domain ops (TensorRT-portable fp32)."""
    onnx.checker.check_model(str(path), full_check=True)  # by path: works past protobuf's 2 GiB limit
    model = onnx.load(str(path), load_external_data=False)  # initializer shapes suffice from here on
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    foreign = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise ExportError(f"{path.name}: non-default op domains {foreign}; TensorRT cannot parse them")
    return model


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the unique parameters (tied embeddings once) in their stored dtype."""
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())


def needs_external_data(model: torch.nn.Module, threshold: int = EXTERNAL_DATA_BYTES) -> bool:
    """Weights beyond `threshold` (~1.5 GiB) go to a side file: one protobuf cannot exceed 2 GiB."""
    return weight_bytes(model) > threshold


def export_graph(role: str, entry, out_dir: Path, external_data: bool = False) -> GraphInfo:
    """Trace one graph into `out_dir/<role>.onnx` (+ `<role>.onnx.data` with external data) and check it."""
    wrapper, args, input_names, output_names, dynamic = entry
    for noisy in _NOISY_LOGGERS:  # registry notes about optional torchvision ops, optimizer chatter
        logging.getLogger(noisy).setLevel(logging.ERROR)
    path = out_dir / f"{role}.onnx"
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                dynamo=True,
                opset_version=OPSET,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=_flatten_dynamic(dynamic, input_names, len(args)),
                external_data=external_data,
                optimize=True,
                verbose=False,
                report=False,
            )
        except Exception as exc:  # the exporter raises many types; keep the first line
            raise ExportError(f"{role}: torch.onnx.export failed: {str(exc).splitlines()[0]}") from exc
    dtype = dtype_name(wrapper)
    if dtype == "bf16":  # onnxruntime's CPU provider has no bfloat16 kernels: compute in fp32
        upcast_compute(path, "bf16")
    elif dtype == "fp16":
        softmax_in_float32(path)
    model = check_graph(path)
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != input_names or got_out != output_names:
        raise ExportError(f"{role}: exported names {got_in} -> {got_out} differ from {input_names} -> {output_names}")
    seconds = time.perf_counter() - start
    logger.info("exported %s in %.1f s", role, seconds)
    data_files = tuple(sorted(p.name for p in out_dir.glob(f"{role}.onnx.*")))  # external weights, if any
    return GraphInfo(
        role,
        path.name,
        _value_infos(model.graph.input),
        _value_infos(model.graph.output),
        round(seconds, 2),
        data_files,
    )


def _flatten_dynamic(dynamic, input_names: list[str], n_args: int):
    """Dynamic shapes as a tuple matching the positional args (the decode graph takes *past)."""
    if dynamic is None:
        return None
    spec = []
    for name in input_names[: n_args if "past" not in dynamic else 2]:
        spec.append(dynamic.get(name))
    if "past" in dynamic:
        spec.append(tuple(dynamic["past"]))  # one entry for the *past varargs: a tuple per tensor
    return tuple(spec)
