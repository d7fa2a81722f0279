"""`vla-export resize-graph BUNDLE --out DIR`: move the camera frame's preprocessing onto the accelerator.

The new bundle takes uint8 frames at the camera's resolution and resizes, rescales and
normalises them in a `resize` graph (export/resize_graph.py); its distance from PIL is measured
here and sealed into the manifest. Bundles without the graph keep the host's OpenCV path.
"""

from __future__ import annotations

import logging

from vla_runtime.common.errors import UserError

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "resize-graph",
        help="copy a bundle with the camera frame's resize + normalise as a graph (for GPU targets)",
        description="Write a copy of an ONNX bundle whose first graph takes the uint8 camera frame at any "
        "resolution and resizes, rescales and normalises it as transformers' processor (PIL) does, so a GPU "
        "does the work the host's OpenCV path does otherwise. On a CPU-only robot keep the original bundle: "
        "there the graph is slower than OpenCV.",
    )
    p.add_argument("bundle", help="ONNX bundle (fp32 or quantized); build engines from the result afterwards")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the new bundle")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=run)


def run(args) -> int:
    from vla_runtime.export.resize_graph import RESIZE_ROLE, ResizeGraphError, add_resize_graph
    from vla_runtime.runtime.bundle import BundleError
    from vla_runtime.runtime.derived_bundle import PackError
    from vla_runtime.runtime.manifest import ManifestError, load_manifest

    try:
        out = add_resize_graph(args.bundle, args.out, force=args.force)
    except (BundleError, ManifestError, PackError, ResizeGraphError) as exc:
        raise UserError(str(exc)) from None
    report = load_manifest(out).parity[RESIZE_ROLE]
    print(f"{out}: resize graph added; against PIL max {report['max_levels']:.2f} / mean "
          f"{report['mean_levels']:.3f} uint8 levels over {report['frames']} frames")
    return 0
