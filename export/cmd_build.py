"""`vla-export build`: model -> verified bundle directory, with parity printed."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from vla_runtime.common.errors import UserError
from vla_runtime.export.precision import DEFAULT_TOLERANCES, DTYPES
from vla_runtime.export.presets import HEADS, PRESETS

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="export a VLA into verified ONNX component graphs and a bundle",
        description="Build the reference VLA (a size preset) or a local checkpoint, export its graphs, "
        "prove parity against PyTorch and write a bundle directory.",
    )
    p.add_argument("--head", choices=HEADS, help="action head (required unless --from-lerobot)")
    p.add_argument("--from-lerobot", metavar="DIR", help="a LeRobot pi0 / pi0.5 checkpoint folder (what its "
                   "save_pretrained writes); needs --tokenizer")
    p.add_argument("--tokenizer", metavar="FILE", help="the policy's tokenizer.json (LeRobot checkpoints do not "
                   "carry it), for --from-lerobot")
    p.add_argument("--state-names", metavar="A,B,..", help="the robot joints the LeRobot state lists, in order, "
                   "then gripper (default joint_0,..,gripper), for --from-lerobot")
    p.add_argument("--preset", default="tiny", choices=PRESETS, help="size preset (ignored with --checkpoint)")
    p.add_argument("--checkpoint", metavar="DIR", help="local checkpoint: a Hugging Face PaliGemma directory "
                   "(config.json, single or sharded safetensors, tokenizer.json or tokenizer.model) with "
                   "action_head.json (+ action_head.safetensors) and norm_stats.json, or the project's own "
                   "layout (README: Bring your own checkpoint)")
    p.add_argument("--demo-checkpoint", action="store_true",
                   help="build from the trained demo checkpoint shipped in the package (see `vla-export train`)")
    p.add_argument("--out", required=True, metavar="DIR", help="bundle directory to create")
    p.add_argument("--seed", type=int, default=0, help="weights seed (presets) and flow noise seed")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--save-checkpoint", metavar="DIR", help="also write the model as a checkpoint directory")
    p.add_argument("--save-hf-checkpoint", metavar="DIR",
                   help="also write the model in the Hugging Face PaliGemma layout (sharded safetensors + index, "
                   "action_head.json); `--checkpoint DIR` reads it back")
    p.add_argument("--views", metavar="NAMES", help="camera views the preset model reads, comma-separated, in "
                   "prefix order, e.g. front,wrist (the robot's [cameras.NAME]; default: front)")
    p.add_argument("--state", nargs="?", const="sim", metavar="ROBOT",
                   help="the preset model also reads the measured joint positions (+ gripper) of ROBOT "
                   "(a built-in name or robot TOML; default sim), normalised by its joint limits")
    p.add_argument("--resize-in-graph", action="store_true",
                   help="the bundle takes the uint8 camera frame and resizes + normalises it in a graph, on the "
                   "accelerator (GPU targets; on a CPU the host path is faster); same as `vla-export resize-graph`")
    p.add_argument("--dtype", default="fp32", choices=DTYPES,
                   help="weights precision of the graphs (inputs and outputs stay float32); fp16 graphs compute "
                   "in half precision with norms, softmax and rotary in fp32; bf16 graphs store bf16 weights and "
                   "compute in fp32 (onnxruntime's CPU provider has no bf16 kernels)")
    defaults = ", ".join(f"{d} {t.atol:g}/{t.rtol:g}" for d, t in DEFAULT_TOLERANCES.items())
    p.add_argument("--atol", type=float, metavar="X",
                   help=f"parity absolute tolerance per element (default per dtype, atol/rtol: {defaults})")
    p.add_argument("--rtol", type=float, metavar="X",
                   help="parity relative tolerance: an element passes if |onnx - torch| <= atol + rtol*|torch|")
    p.set_defaults(func=run)


def run(args) -> int:
    from vla_runtime.export.build import BuildError, build_from_source, load_source
    from vla_runtime.export.checkpoint import CheckpointError, save_checkpoint
    from vla_runtime.export.onnx_export import ExportError
    from vla_runtime.export.parity import ParityError
    from vla_runtime.export.precision import Tolerance, building_in, default_tolerance

    start = time.perf_counter()
    if args.from_lerobot:
        if args.resize_in_graph:
            raise UserError("--resize-in-graph is for our own presets and checkpoints here; run "
                            "`vla-export resize-graph` on the built LeRobot bundle instead")
        return _run_lerobot(args, start)
    if args.head is None:
        raise UserError("--head is required (or build a LeRobot checkpoint with --from-lerobot DIR --tokenizer FILE)")
    base = default_tolerance(args.dtype)
    atol = base.atol if args.atol is None else args.atol
    rtol = base.rtol if args.rtol is None else args.rtol
    if min(atol, rtol) < 0:
        raise UserError(f"--atol {atol} / --rtol {rtol}: tolerances must be >= 0")
    if args.demo_checkpoint and args.checkpoint:
        raise UserError("--demo-checkpoint and --checkpoint both name the weights; pass one of them")
    try:
        if args.demo_checkpoint:
            from vla_runtime.export.demo_checkpoints import shipped_checkpoint

            args.checkpoint = shipped_checkpoint(args.head)
        if args.views or args.state:
            with building_in(args.dtype):
                source = _preset_with_inputs(args)
        else:
            source = load_source(args.head, preset=args.preset, checkpoint=args.checkpoint, seed=args.seed,
                                 dtype=args.dtype)
        if args.save_checkpoint:
            saved = save_checkpoint(source, args.save_checkpoint)
            print(f"checkpoint written to {saved}")
        if args.save_hf_checkpoint:
            from vla_runtime.export.hf_checkpoint import save_hf_checkpoint

            saved = save_hf_checkpoint(source, args.save_hf_checkpoint)
            print(f"Hugging Face layout checkpoint written to {saved}")
        build = dict(dtype=args.dtype, tolerance=Tolerance(atol=atol, rtol=rtol), release_model=True)
        if args.resize_in_graph:
            out = _build_resizing(source, Path(args.out), args.seed, args.force, **build)
        else:
            out = build_from_source(source, Path(args.out), seed=args.seed, force=args.force, **build)
    except (BuildError, CheckpointError, ExportError, ParityError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return _report(out, start)


def _report(out: Path, start: float) -> int:
    """The build's closing summary: what was exported, how long each graph took, and its parity."""
    from vla_runtime.runtime.cmd_inspect import parity_lines
    from vla_runtime.runtime.manifest import load_manifest

    manifest = load_manifest(out)
    m = manifest.model
    print(f"model: {m['name']} ({m['parameters'] / 1e6:.2f}M parameters, {m.get('dtype', 'fp32')}, {m['source']})")
    for role, seconds in m.get("export_seconds", {}).items():
        print(f"  exported {role:<9} in {seconds:.1f} s")
    for line in parity_lines(manifest.parity):
        print(line)
    print(f"bundle: {out}  ({time.perf_counter() - start:.1f} s)")
    return 0


def _build_resizing(source, out: Path, seed: int, force: bool, **build) -> Path:
    """Build beside `out`, then write `out` with the resize graph added (both verified)."""
    import shutil

    from vla_runtime.export.build import BuildError, build_from_source
    from vla_runtime.export.resize_graph import add_resize_graph
    from vla_runtime.runtime.bundle import check_destination

    out = out.expanduser().absolute()
    check_destination(out, force, error=BuildError)  # refuse before the export, not after it
    host = out.with_name(f".{out.name}.host-preprocess")
    try:
        build_from_source(source, host, seed=seed, force=True, **build)
        return add_resize_graph(host, out, force=force)
    finally:
        shutil.rmtree(host, ignore_errors=True)


def _preset_with_inputs(args):
    """A preset model reading the --views cameras and the --state robot's measured state."""
    import dataclasses

    from vla_runtime.export.checkpoint import from_config
    from vla_runtime.export.presets import preset_config
    from vla_runtime.export.state_stats import robot_state_stats
    from vla_runtime.runtime.robot_description import RobotDescriptionError

    if args.checkpoint:
        raise UserError("--views / --state shape a preset model; a checkpoint's inputs come from its own config")
    views = tuple(v.strip() for v in args.views.split(",")) if args.views else ("front",)
    if not all(views):
        raise UserError(f"--views {args.views!r}: name each view, e.g. --views front,wrist")
    try:
        state = robot_state_stats(args.state) if args.state else None
    except RobotDescriptionError as exc:
        raise UserError(f"--state {args.state}: {exc}") from None
    cfg = dataclasses.replace(preset_config(args.preset, args.head), views=views,
                              state_dim=state.dim if state is not None else 0)
    return from_config(cfg, seed=args.seed, state_norm=state)


def _run_lerobot(args, start: float) -> int:
    from vla_runtime.export.lerobot_build import build_from_lerobot
    from vla_runtime.export.onnx_export import ExportError

    if not args.tokenizer:
        raise UserError("--from-lerobot needs --tokenizer FILE: LeRobot checkpoints name their tokenizer but do not "
                        "carry it (pi0 / pi0.5: the PaliGemma tokenizer.json)")
    if args.head or args.checkpoint or args.demo_checkpoint:
        raise UserError("--from-lerobot reads the head and weights from the LeRobot folder; drop --head/--checkpoint")
    try:
        names = tuple(n.strip() for n in args.state_names.split(",")) if args.state_names else None
        out = build_from_lerobot(args.from_lerobot, args.tokenizer, args.out, seed=args.seed, force=args.force,
                                 state_names=names)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    return _report(Path(out), start)
