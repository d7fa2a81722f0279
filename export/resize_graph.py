"""The `resize` graph: a camera frame's resize, rescale and normalise run by the accelerator.

A bundle built with it takes the frame as the camera delivers it (uint8 [H, W, 3], any H and
W), so the robot's CPU never touches the pixels: on a GPU the 6 MB of a 1080p frame are one
upload, and the work that costs the host ~1 ms is a matrix product there.

PIL's antialiased resize (what transformers' SigLIP processor ran at training time) is a
separable linear filter: out = R @ image @ C per channel, with R [S, H] and C [W, S] holding
PIL's own filter taps (runtime/preprocess_graph.py builds them from the same `resample_taps`
the bit-exact reference uses, and feeds them as inputs, so one graph serves every camera
resolution). Written as two MatMuls with a uint8-like rounding and clipping after each
pass in PIL's order for landscape frames (horizontal first; bicubic overshoot is clipped in
between, so the order shows), it uses only ops that TensorRT 10/11 and every onnxruntime
provider run with dynamic shapes; ONNX Resize with `antialias=1` would be shorter, but
TensorRT's parser refuses it. PIL resizes vertically first only when the height shrinks by
more than twice as many pixels as the width (a tall portrait frame); there, bicubic edges can
differ by more than a level.

    image u8 [H,W,3] -> Cast -> Transpose [H, 3, W] -> . @ C [H, 3, S] -> round/clip
      -> Reshape [H, 3*S] -> R @ . [S, 3*S] -> round/clip -> Reshape [S, 3, S]
      -> Transpose [3, S, S] -> * scale + shift -> Unsqueeze -> pixel_values f32 [1, 3, S, S]

On a CPU the first product costs more than OpenCV's box pyramid (about S * H * W * 6 flops),
so the host path stays the default and this graph is a build option for GPU targets.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from vla_runtime.runtime.manifest import GraphSpec, Preprocess, TensorSpec, load_manifest, save_manifest
from vla_runtime.runtime.preprocess_graph import RESIZE_INPUTS, RESIZE_OUTPUT, RESIZE_ROLE

logger = logging.getLogger(__name__)

OPSET = 18  # as the exported graphs: TensorRT 10.x parses opsets 9-20
MAX_LEVELS = 2.0  # uint8 levels the graph may differ from PIL (float filter vs PIL's 22-bit fixed point)


def resize_graph(pre: Preprocess) -> onnx.ModelProto:
    """uint8 [H, W, 3] + filter matrices -> pixel_values float32 [1, 3, S, S], for `pre`."""
    s = pre.image_size
    mean = np.asarray(pre.image_mean, dtype=np.float64)  # [3]
    std = np.asarray(pre.image_std, dtype=np.float64)  # [3]
    image, rows, cols = RESIZE_INPUTS
    consts = [
        helper.make_tensor("flat_rows", TensorProto.INT64, [2], [0, -1]),  # [H, 3*S]
        helper.make_tensor("planes", TensorProto.INT64, [3], [s, 3, s]),  # [S, 3, S]
        helper.make_tensor("batch_axis", TensorProto.INT64, [1], [0]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("level_min", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("level_max", TensorProto.FLOAT, [], [255.0]),
        # (x * rescale - mean) / std == x * scale + shift, per channel [3, 1, 1]
        helper.make_tensor("scale", TensorProto.FLOAT, [3, 1, 1], (pre.rescale_factor / std).tolist()),
        helper.make_tensor("shift", TensorProto.FLOAT, [3, 1, 1], (-mean / std).tolist()),
    ]
    nodes = [
        helper.make_node("Cast", [image], ["image_f"], to=TensorProto.FLOAT),  # [H, W, 3]
        helper.make_node("Transpose", ["image_f"], ["image_hcw"], perm=[0, 2, 1]),  # [H, 3, W]
        helper.make_node("MatMul", ["image_hcw", cols], ["horizontal"]),  # [H, 3, S]
        *_levels("horizontal", "horizontal_u8"),  # PIL keeps a uint8 image between the passes
        helper.make_node("Reshape", ["horizontal_u8", "flat_rows"], ["horizontal_rows"]),  # [H, 3*S]
        helper.make_node("MatMul", [rows, "horizontal_rows"], ["both"]),  # [S, 3*S]
        *_levels("both", "both_u8"),
        helper.make_node("Reshape", ["both_u8", "planes"], ["both_planes"]),  # [S, 3, S]
        helper.make_node("Transpose", ["both_planes"], ["resized"], perm=[1, 0, 2]),  # [3, S, S]
        helper.make_node("Mul", ["resized", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["normalised"]),  # [3, S, S]
        helper.make_node("Unsqueeze", ["normalised", "batch_axis"], [RESIZE_OUTPUT]),  # [1, 3, S, S]
    ]
    graph = helper.make_graph(
        nodes,
        RESIZE_ROLE,
        [
            helper.make_tensor_value_info(image, TensorProto.UINT8, ["image_height", "image_width", 3]),
            helper.make_tensor_value_info(rows, TensorProto.FLOAT, [s, "image_height"]),
            helper.make_tensor_value_info(cols, TensorProto.FLOAT, ["image_width", s]),
        ],
        [helper.make_tensor_value_info(RESIZE_OUTPUT, TensorProto.FLOAT, [1, 3, s, s])],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vla-export")
    model.ir_version = 8  # readable by onnxruntime >= 1.10 and TensorRT 10's parser
    onnx.checker.check_model(model, full_check=True)
    return model


def _levels(name: str, out: str) -> list:
    """Round to whole uint8 levels and clip to [0, 255], as PIL stores each pass."""
    return [
        helper.make_node("Add", [name, "half"], [f"{name}_half"]),  # PIL rounds half up (ONNX Round: to even)
        helper.make_node("Floor", [f"{name}_half"], [f"{name}_round"]),
        helper.make_node("Clip", [f"{name}_round", "level_min", "level_max"], [out]),
    ]


class ResizeGraphError(ValueError):
    """The bundle cannot take a resize graph, or the graph missed PIL; one line with the fix."""


def parity_frames(seed: int = 0) -> list[np.ndarray]:
    """Camera-like test frames (textured, with sharp 1-px lines) at 480p, 720p and an odd size."""
    import cv2

    rng = np.random.default_rng(seed)
    frames = []
    for height, width in ((480, 854), (720, 1280), (37, 301)):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 1.5)
        for _ in range(8):  # thin lines: where a resize filter shows most
            p0 = (int(rng.integers(width)), int(rng.integers(height)))
            p1 = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(frame, p0, p1, tuple(int(c) for c in rng.integers(0, 256, 3)), 1)
        frames.append(frame)
    return frames


def resize_parity(graph_path, pre: Preprocess, frames: list[np.ndarray]) -> dict:
    """The graph on onnxruntime CPU against the bit-exact PIL path, in uint8 levels."""
    from vla_runtime.runtime.backends import BackendOptions
    from vla_runtime.runtime.backends.onnxrt import OrtBackend
    from vla_runtime.runtime.preprocess import Preprocessor
    from vla_runtime.runtime.preprocess_graph import RESIZE_ROLE, ResizeFeed

    spec = graph_spec(pre)
    runner = OrtBackend(spec, graph_path, "cpu", BackendOptions(threads=1))
    runner.activate()
    feed, exact = ResizeFeed(pre), Preprocessor(pre, exact=True)
    level = (pre.rescale_factor / np.asarray(pre.image_std)).reshape(1, 3, 1, 1)  # one uint8 level, normalised
    worst, means = 0.0, []
    try:
        for frame in frames:
            got = runner.fetch(runner.run(feed(frame))[RESIZE_OUTPUT])  # [1, 3, S, S]
            delta = np.abs(got - exact(frame)) / level  # [1, 3, S, S] in uint8 levels
            worst, means = max(worst, float(delta.max())), [*means, float(delta.mean())]
    finally:
        runner.deactivate()
    logger.info("%s graph vs PIL: max %.2f, mean %.3f levels", RESIZE_ROLE, worst, max(means))
    return {"max_levels": round(worst, 3), "mean_levels": round(max(means), 4), "frames": len(frames),
            "reference": "PIL-exact resize (transformers' processor)"}


def graph_spec(pre: Preprocess) -> GraphSpec:
    """The manifest entry of the resize graph for `pre` (file and precision as written)."""
    s = pre.image_size
    image, rows, cols = RESIZE_INPUTS
    return GraphSpec(
        role=RESIZE_ROLE,
        file=f"{RESIZE_ROLE}.onnx",
        inputs=(TensorSpec(image, "uint8", ("image_height", "image_width", 3)),
                TensorSpec(rows, "float32", (s, "image_height")),
                TensorSpec(cols, "float32", ("image_width", s))),
        outputs=(TensorSpec(RESIZE_OUTPUT, "float32", (1, 3, s, s)),),
    )


def add_resize_graph(bundle_dir: str | Path, out: str | Path, force: bool = False,
                     max_levels: float = MAX_LEVELS) -> Path:
    """Write a copy of an ONNX bundle that resizes in a graph; its parity against PIL is sealed in."""
    from vla_runtime.runtime.bundle import open_bundle
    from vla_runtime.runtime.derived_bundle import NewGraph, write_derived_bundle

    source = open_bundle(bundle_dir)
    m = source.manifest
    if RESIZE_ROLE in m.graphs:
        raise ResizeGraphError(f"{source.root.name} already resizes in a graph; nothing to add")
    sizes = sorted({m.preprocess.size_of(v) for v in m.preprocess.camera_views})
    if sizes != [m.preprocess.image_size]:
        raise ResizeGraphError(f"the camera views take different image sizes {sizes}; one resize graph serves one "
                               "size, so keep this bundle's host preprocessing")
    engines = [r for r, g in m.graphs.items() if g.format != "onnx"]
    if engines:
        raise ResizeGraphError(f"graphs {engines} are TensorRT engines; add the resize graph to the ONNX bundle, "
                               "then build the engines (vla-export engine)")
    with tempfile.TemporaryDirectory(prefix="vla-resize-") as tmp:
        path = Path(tmp) / f"{RESIZE_ROLE}.onnx"
        onnx.save(resize_graph(m.preprocess), str(path))
        report = resize_parity(path, m.preprocess, parity_frames())
        if report["max_levels"] > max_levels:
            raise ResizeGraphError(f"the resize graph misses PIL by {report['max_levels']:.2f} uint8 levels "
                                   f"(allowed {max_levels:g}); the bundle was not written")
        new = NewGraph(path, path.name, "fp32", spec=graph_spec(m.preprocess))
        written = write_derived_bundle(source, Path(out), {RESIZE_ROLE: new},
                                       model_notes={"preprocess_in_graph": True}, force=force)
    manifest = load_manifest(written)
    save_manifest(dataclasses.replace(manifest, parity={**manifest.parity, RESIZE_ROLE: report}), written)
    return written
