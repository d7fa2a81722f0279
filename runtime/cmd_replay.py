"""`vla-runtime replay REC.mcap --bundle B`: a bundle's actions on a recorded episode, offline.

Prints per action dimension how far the bundle's actions are from the recorded ones, in the
action's physical units, and saves a plot (PNG) when matplotlib is installed. Nothing moves:
no robot is opened.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vla_runtime.common.cli import missing_dependency
from vla_runtime.common.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("replay", help="run a recording's frames through a bundle and compare the actions")
    p.add_argument("recording", metavar="REC.mcap", help="an episode written by `vla-runtime --record DIR`")
    p.add_argument("--bundle", metavar="DIR", required=True, help="the bundle to check (e.g. an INT8 build)")
    p.add_argument("--backend", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"),
                   help="device that runs the graphs (default cpu)")
    p.add_argument("--allow-failed-gate", action="store_true", help="replay a bundle whose INT8 gate failed")
    p.add_argument("--camera", help="recorded camera to feed (default: the first)")
    p.add_argument("--plot", metavar="OUT.png", help="where to save the plot (default: REC.replay.png)")
    p.add_argument("--json", metavar="OUT.json", help="also save the per-dimension statistics as JSON")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args) -> int:
    from vla_runtime.runtime.backends import BackendError
    from vla_runtime.runtime.bundle import BundleError
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.recording import Recording, RecordingError
    from vla_runtime.runtime.replay import ReplayError, plot, replay

    try:
        recording = Recording(args.recording)
    except RecordingError as exc:
        raise UserError(str(exc)) from None
    try:
        policy = load_policy(args.bundle, backend=args.backend, allow_failed_gate=args.allow_failed_gate)
    except (BundleError, BackendError, ValueError) as exc:
        raise UserError(str(exc)) from None
    with policy:
        try:
            result = replay(recording, policy, args.camera)
        except (ReplayError, RecordingError) as exc:
            raise UserError(str(exc)) from None
    run = recording.run
    images = recording.metadata.get("images", "jpeg")
    print(f"recording: {recording.describe()}")
    print(f"recorded with: {run.bundle} ({run.bundle_id})")
    print(f"replayed with: {args.bundle} ({policy.manifest.model.get('name', '?')}, {policy.backend_name})")
    print(f"compared {len(result.t)} ticks from {result.inferences} inferences"
          + (f"; {result.skipped} ticks skipped (starved, no frame or beyond the new chunk)" if result.skipped else ""))
    if images == "jpeg":
        print("note: frames were recorded as JPEG; part of any difference is JPEG loss (--record-raw is exact)")
    print(result.table())
    if args.json:
        doc = {"recording": str(recording.path), "bundle": str(args.bundle), "ticks": len(result.t),
               "inferences": result.inferences, "skipped": result.skipped,
               "units": dict(zip(result.names, result.units, strict=True)), "per_dimension": result.stats()}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"json: {args.json}")
    out = Path(args.plot) if args.plot else recording.path.with_suffix(".replay.png")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        if missing_dependency(exc) != "matplotlib":
            raise
        print("plot: skipped (matplotlib is not installed; pip install matplotlib)", file=sys.stderr)
        return 0
    plot(result, out, f"{recording.path.name}: recorded {Path(run.bundle).name} vs replayed {Path(args.bundle).name}")
    print(f"plot: {out}")
    return 0
