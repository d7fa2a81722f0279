"""INT8 QDQ graphs that run on onnxruntime CPU and parse in TensorRT, from one file.

onnxruntime's `quantize_static` does all the work (range calibration, Q/DQ insertion, weight
quantization); this module only chooses its settings and the nodes it must leave alone:

- signed int8 activations and weights, both symmetric, so every zero point is 0 (TensorRT
  accepts nothing else) and the file needs no conversion for the GPU;
- per-channel weight scales on the output-channel axis (MatMul B: its last axis, Gemm: 0 or 1
  depending on transB, Conv: 0), dedicated Q/DQ pairs (TensorRT cannot share one pair);
- only MatMul/Gemm/Conv take int8 inputs, and by default only MatMuls with a constant weight,
  so attention score products (activation x activation) stay float;
- norms, softmax and the projections that produce the action outputs (the action logits, the
  flow velocity) stay float; whole graphs (the parallel action head) can be kept float too.

Everything after the graphs (argmax, bins, the Euler integration of the flow) already runs
in float64/float32 numpy in the runtime, so it is never quantized.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from vla_runtime.runtime.onnx_refs import EXTERNAL_DATA_BYTES

logger = logging.getLogger(__name__)

QUANTIZABLE = ("MatMul", "Gemm", "Conv")
# Op types that stay float whatever `op_types` says: numerically sensitive (reductions over a
# row, exponentials) and cheap, so int8 would cost accuracy and buy nothing.
SENSITIVE_OPS = (
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "RMSNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Erf",
    "Tanh",
    "Exp",
    "Sin",
    "Cos",
)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


class QuantizeError(RuntimeError):
    """Quantization could not produce a valid graph; one line naming the graph and the fix."""


@dataclass(frozen=True)
class QdqConfig:
    """How the QDQ variant is made. Defaults are the TensorRT-compatible recipe."""

    op_types: tuple[str, ...] = QUANTIZABLE  # ops whose inputs become int8
    exclude_op_types: tuple[str, ...] = SENSITIVE_OPS  # stay float even when listed in op_types
    exclude_nodes: tuple[str, ...] = ()  # fnmatch patterns on node names that stay float
    float_roles: tuple[str, ...] = ("head",)  # graphs kept entirely float (the parallel action head)
    float_outputs: tuple[str, ...] = ("action_logits", "velocity")  # their producing projections stay float
    weights_only: bool = True  # MatMulConstBOnly: quantize x @ W only, never activation x activation
    quantize_outputs: bool = False  # also Q/DQ the outputs of int8 ops (lets onnxruntime CPU fuse QLinearMatMul)
    per_channel: bool = True  # one weight scale per output channel
    calibration: str = "minmax"  # range estimator: minmax | percentile | entropy
    percentile: float = 99.999  # percent of |x| kept inside the range (percentile method only)
    max_samples: int = 128  # calibration input sets per graph; more costs time, not accuracy past ~100
    batch_outputs: int = 16  # samples whose intermediate tensors are held at once (memory bound)
    # graphs whose weights exceed this many bytes are read and written with external data
    # (`<graph>.onnx.data`): protobuf stops at 2 GiB. Lower it to exercise that path on small graphs.
    external_data_bytes: int = EXTERNAL_DATA_BYTES

    def __post_init__(self):
        unknown = [op for op in self.op_types if op not in QUANTIZABLE]
        if unknown:
            raise ValueError(f"op_types {unknown} are not supported; choose from {QUANTIZABLE}")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"calibration {self.calibration!r} is not one of {CALIBRATION_METHODS}")
        if not (50.0 < self.percentile <= 100.0):
            raise ValueError("percentile must be in (50, 100]")
        if self.max_samples < 1 or self.batch_outputs < 1:
            raise ValueError("max_samples and batch_outputs must be >= 1")
        if self.external_data_bytes < 0:
            raise ValueError("external_data_bytes must be >= 0")


@dataclass(frozen=True)
class QdqResult:
    role: str
    quantized: bool  # False: nothing was eligible and the float graph was copied
    quantized_nodes: tuple[str, ...]  # nodes that take int8 inputs
    excluded_nodes: tuple[str, ...]  # eligible nodes kept float, and why is in the config
    samples: int  # calibration input sets used
    per_channel_axes: dict = field(default_factory=dict)  # weight initializer -> channel axis
    data_files: tuple[str, ...] = ()  # external-data files written beside the graph (large graphs)


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Serialized size of a loaded graph's initializers: what decides external data."""
    return sum(t.ByteSize() for t in model.graph.initializer)


def data_file(path: Path) -> str:
    """The one external-data file of a graph, beside it: onnxruntime's quantizers name it so too."""
    return Path(path).name + ".data"


def save_graph(model: onnx.ModelProto, path: Path, external: bool) -> tuple[str, ...]:
    """Write `model` to `path`, its weights to `data_file(path)` when `external`; returns the side files."""
    if not external:
        onnx.save(model, str(path))
        return ()
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data_file(path), size_threshold=1024)
    return (data_file(path),)


def float_nodes(model: onnx.ModelProto, role: str, cfg: QdqConfig) -> list[str]:
    """Names of nodes that must stay float in this graph under `cfg`."""
    nodes = list(model.graph.node)
    if role in cfg.float_roles:
        return [n.name for n in nodes]
    keep = {n.name for n in nodes if n.op_type in cfg.exclude_op_types}
    keep |= {n.name for n in nodes if any(fnmatch.fnmatchcase(n.name, p) for p in cfg.exclude_nodes)}
    keep |= set(output_projections(model, cfg.float_outputs))
    if cfg.weights_only:  # onnxruntime's MatMulConstBOnly is not applied in QDQ mode; do it here
        keep |= set(activation_matmuls(model))
    return sorted(keep)


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls whose B operand is computed at run time (attention scores, attention x values)."""
    const = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # graph order is topological
        if node.op_type == "Constant" or (node.input and all(i in const for i in node.input if i)):
            const.update(node.output)
    return sorted(n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in const)


def output_projections(model: onnx.ModelProto, outputs: Sequence[str]) -> list[str]:
    """The last MatMul/Gemm/Conv on every path into the named graph outputs.

    Walks backwards from each output through cheap ops (reshapes, slices, bias adds) and stops
    at the first projection on each path: that is the layer that writes the action values.
    """
    producer = {out: n for n in model.graph.node for out in n.output}
    wanted = [o.name for o in model.graph.output if o.name in outputs]
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(wanted)
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in QUANTIZABLE:
            found.add(node.name)
            continue
        stack.extend(i for i in node.input if i)
    return sorted(found)


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name: exclusion lists and reports refer to nodes by name."""
    used: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in used:
            node.name = f"{node.op_type}_{i}"
        used.add(node.name)
    return model


def quantize_qdq(
    src: Path,
    dst: Path,
    role: str,
    samples: Sequence[dict[str, np.ndarray]],
    cfg: QdqConfig,
    ranges_out: Path | None = None,
) -> QdqResult:
    """Calibrate on `samples` (graph input dicts) and write the QDQ graph to `dst`.

    `ranges_out` keeps onnxruntime's calibration cache (per-tensor ranges, JSON), so the same
    graph can be re-quantized, or inspected, without the calibration data.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = name_nodes(onnx.load(str(src)))
    external = initializer_bytes(model) > cfg.external_data_bytes
    keep_float = set(float_nodes(model, role, cfg))
    eligible = [n.name for n in model.graph.node if n.op_type in cfg.op_types and n.name not in keep_float]
    kept = tuple(sorted(keep_float & _of_types(model, cfg.op_types)))
    if not eligible:
        data = save_graph(model, dst, external)
        logger.info("%s: no node to quantize under this config; kept float", role)
        return QdqResult(role, False, (), kept, 0, data_files=data)
    if not samples:
        raise QuantizeError(f"graph {role!r}: no calibration samples were collected; check --calib")
    extra = {
        "ActivationSymmetric": True,  # zero point 0 for activations: TensorRT's only scheme
        "WeightSymmetric": True,
        # Biases stay float: an int32-quantized bias (zero point int32) is not the symmetric int8
        # TensorRT takes, and it fuses a float bias into the int8 conv/matmul anyway.
        "QuantizeBias": False,
        "DedicatedQDQPair": True,  # TensorRT cannot share one Q/DQ pair between consumers
        # Q/DQ only on the inputs of int8 ops (TensorRT's placement rule); their float outputs
        # then reach softmax, norms and the graph outputs without an extra rounding step.
        "OpTypesToExcludeOutputQuantization": [] if cfg.quantize_outputs else list(cfg.op_types),
        "MatMulConstBOnly": cfg.weights_only,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1},  # B's output channels, whatever its rank
    }
    with tempfile.TemporaryDirectory(prefix="vla-qdq-") as tmp:
        named = preprocessed(model, Path(tmp), role, external)
        del model  # the file is the source from here on: keep one copy of the weights in memory
        ranges = Path(tmp) / f"{role}.ranges.json"
        try:
            calibrate_ranges(named, samples, cfg, ranges, external)
            quantize_static(
                str(named),
                str(dst),
                None,  # the ranges come from the cache written above
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(cfg.op_types),
                per_channel=cfg.per_channel,
                reduce_range=False,  # full 8-bit weights; TensorRT has no 7-bit mode
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=sorted(keep_float),
                calibrate_method=_method(cfg.calibration),
                extra_options=extra,
                calibration_cache_path=str(ranges),
                use_external_data_format=external,
            )
        except Exception as exc:  # ORT raises many types; the first line says what broke
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise QuantizeError(f"graph {role!r}: onnxruntime quantization failed: {first[:200]}") from None
        if ranges_out is not None:
            shutil.copyfile(ranges, ranges_out)
    result = onnx.load(str(dst))
    summary = inspect_qdq(result)
    summary.require_symmetric_int8(role)
    quantized = tuple(sorted(summary.int8_consumers))
    logger.info("%s: %d nodes int8, %d eligible nodes kept float, %d samples", role, len(quantized), len(kept),
                len(samples))
    data = (data_file(dst),) if external else ()
    return QdqResult(role, bool(quantized), quantized, kept, len(samples), dict(summary.weight_axes), data)


def calibrate_ranges(
    model_path: Path, samples: Sequence[dict[str, np.ndarray]], cfg: QdqConfig, out: Path, external: bool = False
) -> None:
    """Run onnxruntime's calibrator and save its ranges in onnxruntime's cache format.

    The histogram calibrators (percentile, entropy) stack every sample of a tensor into one
    array, so samples are fed in groups of equal input shapes (prompts and KV caches differ
    in length); `collect_data` merges the groups.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    # Memory is bounded by feeding at most `batch_outputs` samples per collect_data() call, each
    # call merging into the running ranges. (onnxruntime's own max_intermediate_outputs option
    # is not used: in this onnxruntime it drops the batches it clears instead of merging them.)
    options = {"symmetric": True, "percentile": cfg.percentile}
    calibrator = create_calibrator(
        model_path,
        list(cfg.op_types),
        augmented_model_path=str(model_path.with_suffix(".augmented.onnx")),
        calibrate_method=_method(cfg.calibration),
        use_external_data_format=external,
        extra_options=options,
    )
    groups: dict[tuple, list[dict[str, np.ndarray]]] = {}
    for sample in samples:
        groups.setdefault(tuple(sorted((k, v.shape) for k, v in sample.items())), []).append(sample)
    for group in groups.values():
        for start in range(0, len(group), cfg.batch_outputs):
            calibrator.collect_data(_SampleReader(group[start : start + cfg.batch_outputs]))
    save_tensors_data(calibrator.compute_data(), out)


def preprocessed(model: onnx.ModelProto, tmp: Path, role: str, external: bool = False) -> Path:
    """onnxruntime's recommended pre-pass: symbolic shape inference, no graph rewriting.

    Optimization is skipped on purpose: it could fuse nodes into contrib ops TensorRT cannot
    parse, and it renames nodes the exclusion list refers to.
    """
    from onnxruntime.quantization import quant_pre_process

    named, out = tmp / f"{role}.named.onnx", tmp / f"{role}.pre.onnx"
    save_graph(model, named, external)
    try:
        quant_pre_process(str(named), str(out), skip_optimization=True, save_as_external_data=external,
                          all_tensors_to_one_file=True, external_data_location=data_file(out))
        return out
    except Exception as exc:  # shape inference fails on some exporter patterns; quantize anyway
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        logger.info("%s: shape-inference pre-pass skipped (%s)", role, first[:120])
        return named


def _of_types(model: onnx.ModelProto, op_types: Sequence[str]) -> set[str]:
    return {n.name for n in model.graph.node if n.op_type in op_types}


class _SampleReader:
    """onnxruntime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, samples: Sequence[dict[str, np.ndarray]]):
        self._samples = list(samples)
        self._start, self._end = 0, len(self._samples)
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        sample = self._samples[self._pos]
        self._pos += 1
        return sample

    def __len__(self) -> int:
        return len(self._samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end, self._pos = start_index, end_index, start_index

    def rewind(self) -> None:
        self._pos = self._start


# ---------------------------------------------------------------------------------------------
# Structure of a QDQ graph: what the tests assert and what every quantized file must satisfy.
# ---------------------------------------------------------------------------------------------


@dataclass
class QdqSummary:
    quantize_nodes: int = 0
    dequantize_nodes: int = 0
    zero_points: dict = field(default_factory=dict)  # tensor name -> (dtype name, all zero?)
    weight_axes: dict = field(default_factory=dict)  # int8 weight initializer -> DQ axis (None: per-tensor)
    int8_consumers: set = field(default_factory=set)  # nodes fed by a DequantizeLinear
    foreign_domains: set = field(default_factory=set)  # op domains other than the default one

    def require_symmetric_int8(self, role: str) -> None:
        """Refuse a graph TensorRT would reject: non-int8 or non-zero zero points, contrib ops."""
        bad = sorted(n for n, (dtype, zero) in self.zero_points.items() if dtype != "int8" or not zero)
        if bad:
            raise QuantizeError(f"graph {role!r}: zero point {bad[0]} is not int8 zero; TensorRT needs symmetric int8")
        if self.foreign_domains:
            raise QuantizeError(f"graph {role!r}: contrib op domains {sorted(self.foreign_domains)} in a QDQ graph")


def inspect_qdq(model: onnx.ModelProto) -> QdqSummary:
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    s = QdqSummary()
    for n in graph.node:
        if n.domain not in ("", "ai.onnx"):
            s.foreign_domains.add(n.domain)
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if n.op_type == "QuantizeLinear":
            s.quantize_nodes += 1
        else:
            s.dequantize_nodes += 1
            s.int8_consumers.update(c.name for c in consumers.get(n.output[0], []) if c.op_type in QUANTIZABLE)
        if len(n.input) < 3 or not n.input[2]:
            s.zero_points[f"{n.name}:<none>"] = ("uint8", True)  # ONNX default zero point type is uint8
            continue
        zp = _constant(n.input[2], inits, consts)
        if zp is not None:
            s.zero_points[n.input[2]] = (zp.dtype.name, bool(np.all(zp == 0)))
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            axis = next((a.i for a in n.attribute if a.name == "axis"), None)
            scale = _constant(n.input[1], inits, consts)
            s.weight_axes[n.input[0]] = axis if scale is not None and scale.size > 1 else None
    return s


def _constant(name: str, inits: dict, consts: dict) -> np.ndarray | None:
    if name in inits:
        return numpy_helper.to_array(inits[name])
    if name in consts:
        attr = next((a for a in consts[name].attribute if a.name == "value"), None)
        return numpy_helper.to_array(attr.t) if attr is not None else None
    return None
