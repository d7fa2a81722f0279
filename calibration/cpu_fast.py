"""The CPU-only fast variant: int8 weights without calibration, for onnxruntime on the robot CPU.

Two onnxruntime recipes, both weight-only at rest and both refused by TensorRT:

- ``dynamic``: `quantize_dynamic` (int8 weights, activations quantized per call by
  DynamicQuantizeLinear + MatMulInteger), the path onnxruntime recommends for transformers;
- ``nbits``: `MatMulNBitsQuantizer`, blockwise 8- or 4-bit weights in the com.microsoft
  MatMulNBits contrib op, with int8 compute inside the kernel (accuracy_level 4).

Graphs made here are marked precision "int8-cpu" in the manifest; the backends refuse to
hand them to TensorRT. The same exclusions as the QDQ variant apply (norms, softmax, the
action projections, float-only graphs).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from vla_runtime.calibration.quantize import (
    QdqConfig,
    QuantizeError,
    data_file,
    float_nodes,
    initializer_bytes,
    name_nodes,
    preprocessed,
    save_graph,
)

logger = logging.getLogger(__name__)

METHODS = ("dynamic", "nbits")


@dataclass(frozen=True)
class CpuFastConfig:
    method: str = "dynamic"  # "dynamic" (MatMulInteger) or "nbits" (MatMulNBits contrib op)
    bits: int = 8  # nbits only: weight bits, 4 or 8
    block_size: int = 32  # nbits only: weights per scale along K; smaller is more accurate
    # dynamic only: 7-bit weights. u8 x s8 products saturate on AVX2 CPUs without VNNI when
    # weights are per-channel; onnxruntime's guidance is to reduce the range there.
    reduce_range: bool = True
    per_channel: bool = True  # dynamic only: one weight scale per output channel

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"cpu-fast method {self.method!r} is not one of {METHODS}")
        if self.bits not in (4, 8):
            raise ValueError("cpu-fast bits must be 4 or 8")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError("cpu-fast block_size must be a power of two >= 16")


@dataclass(frozen=True)
class CpuFastResult:
    role: str
    quantized: bool  # False: nothing eligible, the float graph was copied
    quantized_nodes: tuple[str, ...]  # original node names whose weights are now integer
    excluded_nodes: tuple[str, ...]  # MatMul/Gemm kept float
    data_files: tuple[str, ...] = ()  # external-data files written beside the graph (large graphs)


def quantize_cpu_fast(src: Path, dst: Path, role: str, cfg: CpuFastConfig, qdq: QdqConfig) -> CpuFastResult:
    """Write the CPU-fast graph of `src` to `dst`; exclusions come from the QDQ config."""
    model = name_nodes(onnx.load(str(src)))
    external = initializer_bytes(model) > qdq.external_data_bytes
    keep = set(float_nodes(model, role, qdq))
    matmuls = {n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")}
    weighted = {n.name for n in model.graph.node if n.name in matmuls and _const_b(model, n)}
    eligible = sorted(weighted - keep)
    if not eligible:
        return CpuFastResult(role, False, (), tuple(sorted(matmuls & keep)), save_graph(model, dst, external))
    try:
        if cfg.method == "dynamic":
            _dynamic(model, dst, sorted(keep), cfg, external)
        else:
            _nbits(model, dst, sorted(keep), cfg, external)
    except Exception as exc:  # ORT raises many types; keep the first line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise QuantizeError(f"graph {role!r}: cpu-fast ({cfg.method}) quantization failed: {first[:200]}") from None
    done = _integer_nodes(onnx.load(str(dst)), eligible)
    logger.info("%s: cpu-fast %s quantized %d of %d weight MatMuls", role, cfg.method, len(done), len(weighted))
    data = (data_file(dst),) if external else ()
    return CpuFastResult(role, bool(done), tuple(done), tuple(sorted(matmuls & keep)), data)


def _dynamic(model: onnx.ModelProto, dst: Path, exclude: list[str], cfg: CpuFastConfig, external: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="vla-dyn-") as tmp:
        named = preprocessed(model, Path(tmp), "cpu-fast", external)
        quantize_dynamic(
            str(named),
            str(dst),
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            use_external_data_format=external,
            extra_options={"MatMulConstBOnly": True},
        )


def _nbits(model: onnx.ModelProto, dst: Path, exclude: list[str], cfg: CpuFastConfig, external: bool) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=cfg.bits,
        block_size=cfg.block_size,
        is_symmetric=True,
        accuracy_level=4,  # int8 activations inside the kernel: the fast CPU path
        nodes_to_exclude=exclude,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=external)


def _const_b(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    inits = {t.name for t in model.graph.initializer}
    consts = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return len(node.input) > 1 and (node.input[1] in inits or node.input[1] in consts)


def _integer_nodes(model: onnx.ModelProto, eligible: list[str]) -> list[str]:
    """Which eligible nodes were replaced by integer kernels (their names are gone or renamed)."""
    float_names = {n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")}
    integer = [n for n in model.graph.node if n.op_type in ("MatMulInteger", "MatMulNBits", "DynamicQuantizeMatMul")]
    if not integer:
        return []
    return [name for name in eligible if name not in float_names]
