"""TensorRT 10.x / 11 engines from a bundle's ONNX graphs (FP32 or QDQ), built on the target device.

Everything that decides *what* to build is plain Python and tested on any machine: which
precision the bundle and the GPU allow (refused loudly, never silently downgraded, since
TensorRT has been seen to accept flags it then ignores), how that precision is expressed for
the installed TensorRT (`build_recipe`), which layers must stay fp32 (`fp32_layers`), and the
build record kept beside each engine. Profile shapes come from runtime/backends/profiles.py,
the same generator the onnxruntime TensorRT provider uses. The TensorRT calls themselves are
one thin function, and each of their results is checked.

Precision rules:

- ``fp16`` (TensorRT 10.x, weakly typed): FP32 bundle, BuilderFlag.FP16; compute capability
  >= 5.3. Normalisation, softmax and reductions (with the layers feeding and following them:
  RMSNorm's square, epsilon and root) are pinned to fp32 with PREFER_PRECISION_CONSTRAINTS,
  because a Gemma-class backbone's activations overflow fp16 there (inf/NaN, then safety
  rejects every action).
- ``int8``: QDQ bundle from `vla-export quantize --variant qdq`; explicit quantization, no
  calibrator, no dynamic ranges. TensorRT 10.x: BuilderFlag.INT8 plus FP16 (same fp32 pins) for
  the float layers; compute capability >= 6.1. Float graphs of a QDQ bundle build like fp16.
- TensorRT 11 removed the weak-typing flags (FP16/INT8/precision constraints): networks are
  always strongly typed, so Q/DQ nodes give int8 and every other layer keeps the ONNX type
  (fp32). ``int8`` builds that way; ``fp16`` needs graphs already converted to fp16 (ModelOpt
  AutoCast) and is refused with that fix. ``--strongly-typed`` selects the same mode on 10.x.
- ``fp32`` (FP16 off): FP32 bundle; TensorRT 10.x builds weakly typed with no reduced-precision
  flag, 11 (or ``--strongly-typed``) takes fp32 from the graph. For a model whose activations
  overflow fp16 beyond the pinned layers; slower, any GPU.
- anything else (fp8, fp4, int4, bf16) is refused here; cpu-fast graphs (contrib ops) too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vla_runtime.runtime.backends.device import tensorrt_major
from vla_runtime.runtime.backends.profiles import Range
from vla_runtime.runtime.manifest import Manifest

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8", "fp32")
_MIN_CC = {"fp16": (5, 3), "int8": (6, 1)}  # TensorRT's hardware support for fast fp16 / int8
# layer types computed in fp32 under fp16 builds (TensorRT LayerType names)
FP32_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")
_PIN_AROUND = 3  # layers after a reduction kept fp32 too (RMSNorm: + eps, sqrt, reciprocal/div)
_POINTWISE = ("ELEMENTWISE", "UNARY", "ACTIVATION", "SCALE")  # what may be pinned beside a reduction


class EngineError(ValueError):
    """An engine cannot or must not be built as asked; one line with the fix."""


@dataclass(frozen=True)
class EngineConfig:
    precision: str  # "fp16", "int8" or "fp32" (FP16 off: every float layer in fp32)
    workspace_mb: int = 2048  # MiB of scratch memory TensorRT may use per layer (Orin shares it with the CPU)
    optimization_level: int = 3  # builder effort 0..5; 3 is TensorRT's default
    shapes: Mapping[str, Range] = field(default_factory=dict)  # symbol -> (min, opt, max) overrides
    # build a strongly typed network on TensorRT 10.x too (always so on 11): types from the ONNX
    strongly_typed: bool = False
    typical_task: str = "pick up the red block"  # sets the opt prompt length of the profiles

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision {self.precision!r} is not supported; choose one of {PRECISIONS}")
        if self.workspace_mb < 16:
            raise EngineError("workspace must be at least 16 MiB")
        if not 0 <= self.optimization_level <= 5:
            raise EngineError("optimization level must be 0..5")
        for name, (lo, opt, hi) in self.shapes.items():
            if not (1 <= lo <= opt <= hi):
                raise EngineError(f"--shape {name}={lo}:{opt}:{hi} needs 1 <= min <= opt <= max")


def check_precision(manifest: Manifest, precision: str, compute_capability: str | None) -> None:
    """Refuse a precision the bundle's graphs or the target GPU cannot honour, naming the fix."""
    if precision not in PRECISIONS:
        raise EngineError(
            f"precision {precision!r} is not supported for TensorRT 10 engines here; choose fp16, int8 or fp32"
        )
    graphs = manifest.graphs
    cpu_only = [r for r, g in graphs.items() if g.precision == "int8-cpu"]
    if cpu_only:
        raise EngineError(
            f"graphs {cpu_only} are int8-cpu (MatMulInteger/MatMulNBits) and TensorRT cannot parse them; "
            "quantize with --variant qdq"
        )
    not_onnx = [r for r, g in graphs.items() if g.format != "onnx"]
    if not_onnx:
        raise EngineError(f"graphs {not_onnx} are already engines; build from the ONNX bundle")
    qdq = [r for r, g in graphs.items() if g.precision == "int8"]
    if precision == "int8" and not qdq:
        raise EngineError("this bundle has no QDQ graphs; run `vla-export quantize --variant qdq` and build from that")
    if precision in ("fp16", "fp32") and qdq:
        raise EngineError(
            f"graphs {qdq} hold int8 Q/DQ nodes; build --precision int8 (float layers then run in fp16) "
            f"or build {precision} from the FP32 bundle"
        )
    half = [r for r, g in graphs.items() if g.precision == "fp16"]
    if precision == "fp32" and half:
        raise EngineError(f"graphs {half} are fp16 ONNX graphs; build --precision fp32 from an fp32 bundle")
    if compute_capability is not None:
        major, minor = (int(x) for x in compute_capability.split(".")[:2])
        need = _MIN_CC.get(precision, (0, 0))  # fp32 runs on every GPU TensorRT supports
        if (major, minor) < need:
            raise EngineError(
                f"{precision} needs compute capability >= {need[0]}.{need[1]}; this GPU is {compute_capability}"
            )


def graph_precision(bundle_precision: str, requested: str) -> str:
    """Manifest precision of one engine: QDQ graphs become int8, float graphs fp16 (fp32 when asked)."""
    if requested == "fp32":
        return "fp32"
    return "int8" if requested == "int8" and bundle_precision == "int8" else "fp16"


@dataclass(frozen=True)
class BuildRecipe:
    """How one precision is expressed for one TensorRT major version."""

    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED: types come from the ONNX
    flags: tuple[str, ...]  # BuilderFlag names to set
    pin_fp32: bool  # constrain norms/softmax/reductions to fp32 (weak typing with FP16 only)


def build_recipe(precision: str, trt_version: str, strongly_typed: bool = False) -> BuildRecipe:
    """The network mode and builder flags for `precision` on TensorRT `trt_version`."""
    major = tensorrt_major(trt_version)
    if major not in (10, 11):
        raise EngineError(f"TensorRT {trt_version} is not supported; install TensorRT 10.x or 11.x")
    if major >= 11 or strongly_typed:
        if precision == "fp16":
            raise EngineError(
                f"TensorRT {trt_version} builds strongly typed networks, which take fp16 from the graph, not a "
                "flag: convert the ONNX graphs to fp16 first (python -m modelopt.onnx.autocast), build int8 from "
                "a QDQ bundle, or use TensorRT 10.x"
            )
        return BuildRecipe(strongly_typed=True, flags=(), pin_fp32=False)
    if precision == "fp32":  # weak typing with no reduced-precision flag: every layer stays fp32
        return BuildRecipe(strongly_typed=False, flags=(), pin_fp32=False)
    flags = ("FP16", "INT8") if precision == "int8" else ("FP16",)
    return BuildRecipe(strongly_typed=False, flags=flags + ("PREFER_PRECISION_CONSTRAINTS",), pin_fp32=True)


def fp32_layers(layers: Iterable[tuple[str, tuple[str, ...], tuple[str, ...]]]) -> list[int]:
    """Indices of layers to pin to fp32, from (LayerType name, input names, output names) per layer.

    Normalisation and softmax layers, reductions, the layers that produce a reduction's input
    (RMSNorm's square) and up to _PIN_AROUND layers downstream of a reduction (epsilon, root,
    reciprocal): where fp16's 65504 ceiling is reached first.
    """
    layers = list(layers)
    producer = {out: i for i, (_, _, outs) in enumerate(layers) for out in outs}
    consumers: dict[str, list[int]] = {}
    for i, (_, ins, _) in enumerate(layers):
        for name in ins:
            consumers.setdefault(name, []).append(i)
    pinned = set()
    for i, (kind, ins, outs) in enumerate(layers):
        if kind not in FP32_TYPES:
            continue
        pinned.add(i)
        if kind != "REDUCE":
            continue
        pinned.update(producer[name] for name in ins if name in producer and layers[producer[name]][0] in _POINTWISE)
        frontier = list(outs)
        for _ in range(_PIN_AROUND):
            nxt = [j for name in frontier for j in consumers.get(name, ()) if layers[j][0] in _POINTWISE]
            pinned.update(nxt)
            frontier = [out for j in nxt for out in layers[j][2]]
    return sorted(pinned)


def build_engine(onnx_path: Path, shapes: Mapping[str, tuple], cfg: EngineConfig,
                 timing_cache: bytes = b"") -> tuple[bytes, bytes]:
    """Parse, configure and build one engine: (serialized engine, updated timing cache)."""
    import tensorrt as trt

    recipe = build_recipe(cfg.precision, str(trt.__version__), cfg.strongly_typed)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    mode = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if recipe.strongly_typed else 0
    network = _need(builder.create_network(mode), "create the network", onnx_path)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):  # also reads external-data files beside it
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EngineError(f"{onnx_path.name}: TensorRT's ONNX parser failed: {(errors or ['unknown'])[0][:200]}")
    config = _need(builder.create_builder_config(), "create a builder config", onnx_path)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    config.builder_optimization_level = cfg.optimization_level
    for flag in recipe.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if recipe.pin_fp32:
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        described = [(layer.type.name, tuple(layer.get_input(k).name for k in range(layer.num_inputs)
                                             if layer.get_input(k) is not None),
                      tuple(layer.get_output(k).name for k in range(layer.num_outputs))) for layer in layers]
        pinned = fp32_layers(described)
        for i in pinned:
            layers[i].precision = trt.float32
            for k in range(layers[i].num_outputs):
                if layers[i].get_output(k).dtype in (trt.float32, trt.float16):
                    layers[i].set_output_type(k, trt.float32)
        logger.info("%s: %d of %d layers pinned to fp32 (norms, softmax, reductions)",
                    onnx_path.name, len(pinned), len(layers))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(profile) < 0:
        raise EngineError(f"{onnx_path.name}: TensorRT rejected the optimization profile {dict(shapes)}")
    cache = _need(config.create_timing_cache(timing_cache), "read the timing cache", onnx_path)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineError(f"{onnx_path.name}: the timing cache is from another device or TensorRT; delete it")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{onnx_path.name}: TensorRT could not build a {cfg.precision} engine (see its log above)")
    return bytes(plan), bytes(cache.serialize())


def _need(obj, what: str, onnx_path: Path):
    if obj is None:
        raise EngineError(f"{onnx_path.name}: TensorRT could not {what} (out of memory, or a broken install?)")
    return obj
