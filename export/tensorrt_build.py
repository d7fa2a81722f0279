"""TensorRT 10 engines from a bundle's ONNX graphs (FP32 or QDQ), built on the target device.

Everything that decides *what* to build is plain Python and tested on any machine: which
precision the bundle and the GPU allow (refused loudly, never silently downgraded, since
TensorRT has been seen to accept flags it then ignores), the min/opt/max shapes of every
dynamic axis (prompt length, image + prompt context, KV-cache length), and the build record
kept beside each engine. The TensorRT calls themselves are one thin function.

Precision rules (TensorRT 10, weakly typed builder):

- ``fp16``: FP32 bundle, BuilderFlag.FP16; compute capability >= 5.3.
- ``int8``: QDQ bundle from `vla-export quantize --variant qdq`; explicit quantization, so
  no calibrator and no dynamic ranges: BuilderFlag.INT8 plus FP16 for the float layers;
  compute capability >= 6.1. Graphs the quantizer kept float (the parallel head) build in FP16.
- anything else (fp8, fp4, int4, bf16) is refused here; cpu-fast graphs (contrib ops) too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vla_runtime.runtime.manifest import GraphSpec, Manifest

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
_MIN_CC = {"fp16": (5, 3), "int8": (6, 1)}  # TensorRT's hardware support for fast fp16 / int8
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EngineError(ValueError):
    """An engine cannot or must not be built as asked; one line with the fix."""


@dataclass(frozen=True)
class EngineConfig:
    precision: str  # "fp16" or "int8"
    workspace_mb: int = 2048  # MiB of scratch memory TensorRT may use per layer (Orin shares it with the CPU)
    optimization_level: int = 3  # builder effort 0..5; 3 is TensorRT's default
    shapes: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)  # symbol -> (min, opt, max) overrides
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
            f"precision {precision!r} is not supported for TensorRT 10 engines here; choose fp16 or int8"
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
    if precision == "fp16" and qdq:
        raise EngineError(
            f"graphs {qdq} hold int8 Q/DQ nodes; build --precision int8 (float layers then run in fp16) "
            "or build fp16 from the FP32 bundle"
        )
    if compute_capability is not None:
        major, minor = (int(x) for x in compute_capability.split(".")[:2])
        need = _MIN_CC[precision]
        if (major, minor) < need:
            raise EngineError(
                f"{precision} needs compute capability >= {need[0]}.{need[1]}; this GPU is {compute_capability}"
            )


def symbol_ranges(manifest: Manifest, opt_prompt: int, overrides: Mapping[str, tuple[int, int, int]] = ()) -> dict:
    """(min, opt, max) for every dynamic axis name the exporter uses.

    seq: prompt tokens T; context: image tokens + prompt (flow prefix); past: the KV cache a
    decode step reads, from the prefill length up to the last action token.
    """
    n = int(manifest.graphs["prefill"].input("image_embeds").shape[1])  # image tokens N
    t_max = manifest.prompt.max_tokens
    t_opt = max(1, min(opt_prompt, t_max))
    steps = manifest.action.dim * manifest.action.horizon if manifest.head == "tokens" else 0
    ranges = {
        "seq": (1, t_opt, t_max),
        "context": (n + 1, n + t_opt, n + t_max),
        "past": (n + 1, n + t_opt + max(steps // 2, 0), n + t_max + max(steps, 1)),
    }
    ranges.update(dict(overrides))
    return ranges


def profile_shapes(spec: GraphSpec, ranges: Mapping[str, tuple[int, int, int]]) -> dict[str, tuple]:
    """input name -> (min shape, opt shape, max shape) for one optimization profile."""
    shapes = {}
    for tensor in spec.inputs:
        dims = [[], [], []]
        for d in tensor.shape:
            if isinstance(d, int) and d >= 0:
                for k in range(3):
                    dims[k].append(d)
                continue
            name = str(d).strip()
            if not _SYMBOL.match(name) or name not in ranges:
                raise EngineError(
                    f"graph {spec.role!r} input {tensor.name!r} has dynamic axis {name!r} with no known range; "
                    f"pass --shape {name if _SYMBOL.match(name) else 'NAME'}=MIN:OPT:MAX"
                )
            for k in range(3):
                dims[k].append(int(ranges[name][k]))
        shapes[tensor.name] = tuple(tuple(x) for x in dims)
    return shapes


def graph_precision(bundle_precision: str, requested: str) -> str:
    """Manifest precision of one engine: QDQ graphs become int8, float graphs fp16."""
    return "int8" if requested == "int8" and bundle_precision == "int8" else "fp16"


def build_engine(onnx_path: Path, shapes: Mapping[str, tuple], cfg: EngineConfig,
                 timing_cache: bytes = b"") -> tuple[bytes, bytes]:
    """Parse, configure and build one engine: (serialized engine, updated timing cache)."""
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):  # also reads external-data files beside it
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EngineError(f"{onnx_path.name}: TensorRT's ONNX parser failed: {(errors or ['unknown'])[0][:200]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    config.builder_optimization_level = cfg.optimization_level
    config.set_flag(trt.BuilderFlag.FP16)  # float layers in fp16 for both precisions
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # honour the Q/DQ nodes; no calibrator
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{onnx_path.name}: TensorRT could not build a {cfg.precision} engine (see its log above)")
    return bytes(plan), bytes(cache.serialize())
