"""`vla-export quantize BUNDLE --calib DATA --out BUNDLE_INT8`: calibrate, quantize, gate."""

from __future__ import annotations

import argparse
import logging
import sys

from vla_runtime.common.errors import UserError

logger = logging.getLogger(__name__)

EXIT_GATE_FAILED = 3  # the bundle was written but is marked failed


def register(subparsers) -> None:
    from vla_runtime.runtime.cmd_eval import EPISODE_STEPS
    from vla_runtime.runtime.sim.tasks import HELD_OUT_SEED_START

    p = subparsers.add_parser(
        "quantize",
        help="INT8 bundle from an FP32 bundle, calibrated on recorded episodes, gated on held-out frames",
        description=(
            "Replay calibration frames through the FP32 bundle, quantize every graph with onnxruntime, "
            "and compare the result with its source on held-out frames. A bundle that fails the gate "
            "is written but marked failed; the runtime refuses it unless --allow-failed-gate."
        ),
    )
    p.add_argument("bundle", help="FP32 bundle directory (from `vla-export build`)")
    p.add_argument("--calib", required=True, metavar="DATA",
                   help="recorded episodes (vla-runtime --record), a LeRobot dataset, or an image folder")
    p.add_argument("--out", required=True, metavar="BUNDLE_INT8", help="directory for the quantized bundle")
    p.add_argument("--variant", choices=("qdq", "cpu-fast"), default="qdq",
                   help="qdq: symmetric int8 QDQ for onnxruntime CPU and TensorRT (default); "
                        "cpu-fast: int8 weights for onnxruntime CPU only, not for TensorRT")
    p.add_argument("--instructions", metavar="FILE", help="image folders: instructions, one per line, or JSON")
    p.add_argument("--camera", help="LeRobot datasets: which camera feature to read")
    p.add_argument("--calib-frames", type=int, default=32, help="frames replayed for calibration (default 32)")
    p.add_argument("--gate-frames", type=int, default=16, help="held-out frames the gate compares (default 16)")
    p.add_argument("--seed", type=int, default=0, help="frame sampling seed (default 0)")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all usable cores)")
    q = p.add_argument_group("QDQ recipe")
    q.add_argument("--calibration", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="activation range estimator (default minmax)")
    q.add_argument("--percentile", type=float, default=99.999, help="percentile method: %% of |x| kept")
    q.add_argument("--exclude-nodes", nargs="*", default=[], metavar="PATTERN",
                   help="node name patterns (fnmatch) kept in float, added to the defaults")
    q.add_argument("--exclude-op-types", nargs="*", metavar="OP",
                   help="op types kept in float (replaces the default list of norms, softmax, ...)")
    q.add_argument("--float-graphs", nargs="*", default=["head"], metavar="ROLE",
                   help="graphs kept entirely in float (default: head, the parallel action head)")
    q.add_argument("--float-outputs", nargs="*", default=["action_logits", "velocity"], metavar="OUTPUT",
                   help="graph outputs whose producing projection stays float (default: action_logits velocity)")
    q.add_argument("--quantize-attention", action="store_true",
                   help="also quantize activation x activation MatMuls (attention); less accurate")
    q.add_argument("--quantize-outputs", action="store_true",
                   help="also quantize int8 op outputs: faster on onnxruntime CPU (fused QLinearMatMul), "
                        "slightly less accurate; TensorRT parses both")
    c = p.add_argument_group("cpu-fast recipe")
    c.add_argument("--cpu-fast-method", choices=("dynamic", "nbits"), default="dynamic",
                   help="dynamic: MatMulInteger (default); nbits: MatMulNBits blockwise weights")
    c.add_argument("--bits", type=int, choices=(4, 8), default=8, help="nbits: weight bits (default 8)")
    c.add_argument("--block-size", type=int, default=32, help="nbits: weights per scale (default 32)")
    g = p.add_argument_group("accuracy gate thresholds")
    g.add_argument("--max-mae-frac", type=float, default=0.02,
                   help="per-dimension MAE as a fraction of the dimension's span (default 0.02)")
    g.add_argument("--min-token-agreement", type=float, default=0.90, help="tokens/parallel heads (default 0.90)")
    g.add_argument("--min-flow-cosine", type=float, default=0.99, help="flow head (default 0.99)")
    g.add_argument("--max-flow-error", type=float, default=0.10, help="flow head, normalised units (default 0.10)")
    b = p.add_argument_group("closed-loop behaviour gate (simulator bundles only)")
    b.add_argument("--behaviour-episodes", type=int, default=0, metavar="N",
                   help="also run FP32 and INT8 on the same N held-out sim seeds and compare success (default 0: off)")
    b.add_argument("--behaviour-seed", type=int, default=HELD_OUT_SEED_START,
                   help=f"first held-out sim seed; episode i uses seed+i (default {HELD_OUT_SEED_START})")
    b.add_argument("--behaviour-steps", type=int, default=EPISODE_STEPS,
                   help=f"ticks per episode (default {EPISODE_STEPS})")
    b.add_argument("--max-success-drop", type=float, default=5.0, metavar="POINTS",
                   help="fail when INT8 success is more than this many percentage points below FP32 (default 5)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):
    """Typed options from the command line; a bad value is a one-line UserError."""
    from vla_runtime.calibration.behaviour import BehaviourOptions
    from vla_runtime.calibration.cpu_fast import CpuFastConfig
    from vla_runtime.calibration.gate import GateThresholds
    from vla_runtime.calibration.pipeline import QuantizeOptions
    from vla_runtime.calibration.quantize import SENSITIVE_OPS, QdqConfig

    try:
        qdq = QdqConfig(
            exclude_op_types=tuple(args.exclude_op_types) if args.exclude_op_types is not None else SENSITIVE_OPS,
            exclude_nodes=tuple(args.exclude_nodes),
            float_roles=tuple(args.float_graphs),
            float_outputs=tuple(args.float_outputs),
            weights_only=not args.quantize_attention,
            quantize_outputs=args.quantize_outputs,
            calibration=args.calibration,
            percentile=args.percentile,
        )
        cpu_fast = CpuFastConfig(method=args.cpu_fast_method, bits=args.bits, block_size=args.block_size)
        thresholds = GateThresholds(
            max_mae_fraction=args.max_mae_frac,
            min_token_agreement=args.min_token_agreement,
            min_flow_cosine=args.min_flow_cosine,
            max_flow_error=args.max_flow_error,
        )
        behaviour = BehaviourOptions(episodes=args.behaviour_episodes, first_seed=args.behaviour_seed,
                                     steps=args.behaviour_steps, max_success_drop=args.max_success_drop)
        if args.threads is not None and args.threads < 1:
            raise ValueError("--threads must be >= 1")
        return QuantizeOptions(
            variant=args.variant, calib_frames=args.calib_frames, gate_frames=args.gate_frames, seed=args.seed,
            threads=args.threads, qdq=qdq, cpu_fast=cpu_fast, thresholds=thresholds, behaviour=behaviour,
            progress=not args.no_progress, force=args.force,
        )
    except ValueError as exc:
        raise UserError(f"{exc}") from None


def run(args: argparse.Namespace) -> int:
    from vla_runtime.calibration.behaviour import BehaviourInputError
    from vla_runtime.calibration.pipeline import QuantizeInputError, quantize_bundle
    from vla_runtime.calibration.quantize import QuantizeError
    from vla_runtime.runtime.backends import BackendError
    from vla_runtime.runtime.bundle import BundleError
    from vla_runtime.runtime.derived_bundle import PackError
    from vla_runtime.runtime.episodes.readers import CalibDataError, open_source
    from vla_runtime.runtime.gate_report import format_gate

    opts = options_from_args(args)
    try:
        source = open_source(args.calib, instructions=args.instructions, camera=args.camera)
        report = quantize_bundle(args.bundle, source, args.out, opts)
    except (CalibDataError, QuantizeInputError, BehaviourInputError, QuantizeError, PackError, BundleError,
            BackendError) as exc:
        raise UserError(str(exc)) from None
    print(format_gate(report))
    if not report["passed"]:
        print(f"{args.out}: written but marked FAILED; the runtime refuses it unless --allow-failed-gate",
              file=sys.stderr)
        return EXIT_GATE_FAILED
    print(f"{args.out}: {opts.variant} bundle written, gate passed")
    return 0
