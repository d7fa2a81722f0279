"""`vla-export engine BUNDLE --precision fp16|int8|fp32 --out DIR`: TensorRT engines, built on the target.

Everything checkable without a GPU is checked first (bundle, gate, precision, profile
shapes), so a wrong request fails in one line on any machine; only then is TensorRT needed.
The engine bundle records the GPU, compute capability, TensorRT and CUDA versions in its
manifest target and beside each engine, and the runtime refuses it anywhere else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
from pathlib import Path

from vla_runtime.common.cli import missing_dependency
from vla_runtime.common.errors import UserError

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "engine",
        help="build TensorRT engines from a bundle's ONNX graphs (run this on the robot's GPU)",
        description="FP16 engines from an FP32 bundle, INT8 engines from a QDQ bundle (vla-export quantize), "
        "FP32 engines (FP16 off) from an FP32 bundle.",
    )
    p.add_argument("bundle", help="ONNX bundle: FP32 (for fp16 or fp32) or QDQ int8 (for int8)")
    p.add_argument("--precision", required=True, help="fp16, int8 or fp32 (FP16 off, e.g. for a model that "
                   "overflows in fp16); anything else is refused")
    p.add_argument("--out", required=True, help="directory for the engine bundle")
    p.add_argument("--workspace-mb", type=int, default=2048, help="TensorRT scratch memory in MiB (default 2048)")
    p.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5 (default 3)")
    p.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache to reuse and update")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=MIN:OPT:MAX",
                   help="range of a dynamic axis (seq, context, past), overriding the bundle's")
    p.add_argument("--allow-failed-gate", action="store_true", help="build from a bundle whose INT8 gate failed")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--strongly-typed", action="store_true",
                   help="strongly typed network on TensorRT 10.x too (always so on 11; int8 from QDQ only)")
    p.add_argument("--no-progress", action="store_true", help="no per-engine progress lines")
    p.set_defaults(func=run)


def parse_shapes(items: list[str]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for item in items:
        try:
            name, spec = item.split("=", 1)
            lo, opt, hi = (int(x) for x in spec.split(":"))
        except ValueError:
            raise UserError(f"--shape {item!r}: expected NAME=MIN:OPT:MAX, e.g. seq=1:16:48") from None
        out[name.strip()] = (lo, opt, hi)
    return out


def plan(bundle_dir: str | Path, precision: str, shapes: dict, allow_failed_gate: bool,
         workspace_mb: int = 2048, opt_level: int = 3, strongly_typed: bool = False):
    """(bundle, config, role -> profile shapes): every check that needs no GPU."""
    from vla_runtime.export.tensorrt_build import EngineConfig, EngineError, check_precision
    from vla_runtime.runtime.backends.profiles import ProfileError, bundle_profiles
    from vla_runtime.runtime.bundle import BundleError, open_bundle
    from vla_runtime.runtime.tokenizer import PromptTokenizer

    try:
        bundle = open_bundle(bundle_dir)
    except BundleError as exc:
        raise UserError(str(exc)) from None
    m = bundle.manifest
    if m.gate_failed and not allow_failed_gate:
        raise UserError(f"{bundle.root.name}: its INT8 accuracy gate failed; re-quantize or pass --allow-failed-gate")
    try:
        cfg = EngineConfig(precision=precision, workspace_mb=workspace_mb, optimization_level=opt_level, shapes=shapes,
                           strongly_typed=strongly_typed)
        check_precision(m, precision, None)
        if m.head == "pi0":  # LeRobot policies: the prompt is padded to its full length, every shape static
            opt_prompt = m.prompt.max_tokens
        else:
            opt_prompt = PromptTokenizer(m.prompt, bundle.path(m.prompt.tokenizer_file))(cfg.typical_task).shape[1]
        profiles = bundle_profiles(m, opt_prompt, shapes)
    except (EngineError, ProfileError) as exc:
        raise UserError(str(exc)) from None
    return bundle, cfg, profiles


def run(args: argparse.Namespace) -> int:
    from vla_runtime.runtime.backends.device import INSTALL_HINT
    from vla_runtime.runtime.backends.tensorrt import import_cudart

    bundle, cfg, profiles = plan(args.bundle, args.precision, parse_shapes(args.shape), args.allow_failed_gate,
                                 args.workspace_mb, args.opt_level, args.strongly_typed)
    try:
        import tensorrt  # noqa: F401

        import_cudart()
    except ImportError as exc:
        if missing_dependency(exc) is None:
            raise  # TensorRT or cuda-python is installed but broken: show why, not "not installed"
        raise UserError(
            f"{missing_dependency(exc)} is not installed here; engines are GPU-specific, so build them on the "
            f"target device: {INSTALL_HINT}"
        ) from None
    out = build_engine_bundle(bundle, cfg, profiles, Path(args.out), args.timing_cache, args.force,
                              progress=not args.no_progress)
    print(f"{out}: {cfg.precision} TensorRT engines for {', '.join(profiles)}")
    return 0


def build_engine_bundle(bundle, cfg, profiles: dict, out: Path, timing_cache: str | None, force: bool,
                        progress: bool = True) -> Path:
    """Build every engine (GPU required) and write the engine bundle."""
    from vla_runtime.export.tensorrt_build import (
        EngineError,
        build_engine,
        build_recipe,
        check_precision,
        graph_precision,
    )
    from vla_runtime.runtime.backends.device import live_device
    from vla_runtime.runtime.backends.tensorrt import engine_record_path
    from vla_runtime.runtime.derived_bundle import NewGraph, PackError, set_gate, write_derived_bundle
    from vla_runtime.runtime.manifest import Target

    m = bundle.manifest
    live = live_device()
    if isinstance(live, str):
        raise UserError(f"cannot build TensorRT engines here: {live}")
    try:
        check_precision(m, cfg.precision, live.compute_capability)
        build_recipe(cfg.precision, live.tensorrt_version, cfg.strongly_typed)  # refuse before any build
    except EngineError as exc:
        raise UserError(str(exc)) from None
    cache_path = Path(timing_cache) if timing_cache else None
    cache = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    with tempfile.TemporaryDirectory(prefix="vla-engine-") as tmp:
        graphs, records = {}, {}
        for n, (role, shapes) in enumerate(profiles.items(), 1):
            if progress:  # no progress-bar package: the robot-side install must not need one
                print(f"engine {n}/{len(profiles)}: {role} ({cfg.precision}) ...", flush=True)
            spec = m.graphs[role]
            precision = graph_precision(spec.precision, cfg.precision)
            engine = Path(tmp) / "engines" / f"{role}.{precision}.engine"
            engine.parent.mkdir(exist_ok=True)
            try:
                plan_bytes, cache = build_engine(bundle.path(spec.file), shapes, cfg, cache)
            except EngineError as exc:
                raise UserError(str(exc)) from None
            engine.write_bytes(plan_bytes)
            record = engine_record_path(engine)
            record.write_text(json.dumps({
                "role": role, "precision": precision, "gpu_name": live.gpu_name,
                "compute_capability": live.compute_capability, "tensorrt_version": live.tensorrt_version,
                "cuda_version": live.cuda_version, "profile": {k: [list(s) for s in v] for k, v in shapes.items()},
                "source_onnx_sha256": hashlib.sha256(bundle.path(spec.file).read_bytes()).hexdigest(),
            }, indent=2))
            graphs[role] = NewGraph(engine, f"engines/{engine.name}", precision, format="tensorrt")
            records[f"engines/{record.name}"] = record
        if cache_path:
            cache_path.write_bytes(cache)
        target = Target(kind="tensorrt", gpu_name=live.gpu_name, compute_capability=live.compute_capability,
                        tensorrt_version=live.tensorrt_version, cuda_version=live.cuda_version)
        try:
            out = write_derived_bundle(bundle, out, graphs, extra_files=records, target=target,
                                       versions={"tensorrt": live.tensorrt_version, "cuda": live.cuda_version},
                                       force=force)
        except PackError as exc:
            raise UserError(str(exc)) from None
    if m.gate:
        set_gate(out, {**m.gate, "measured_on": "the ONNX QDQ graphs on onnxruntime CPU, before engine build"})
    return out
