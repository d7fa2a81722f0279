"""The resize graph: PIL's resize + normalise as two MatMuls, run by onnxruntime, inside a bundle.

Parity is against the bit-exact PIL path (preprocess_exact.py, itself checked against Pillow in
test_preprocess.py), in uint8 levels; the bundle tests run the real policy on a real
onnxruntime session and compare what the vision graph receives with the host path's pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("onnx", reason="building the resize graph needs onnx (pip install vla-runtime[export])")

from vla_runtime.export.cli import main as export_main  # noqa: E402
from vla_runtime.export.manifest_writer import siglip_preprocess  # noqa: E402
from vla_runtime.export.resize_graph import (  # noqa: E402
    ResizeGraphError,
    add_resize_graph,
    parity_frames,
    resize_graph,
    resize_parity,
)
from vla_runtime.runtime.backends.profiles import bundle_profiles  # noqa: E402
from vla_runtime.runtime.manifest import load_manifest  # noqa: E402
from vla_runtime.runtime.preprocess_graph import ResizeFeed, filter_matrix  # noqa: E402
from vla_runtime.runtime.types import Frame  # noqa: E402


@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "nearest"])
def test_graph_matches_pil_within_one_level(tmp_path, resample):
    import onnx

    pre = dataclasses.replace(siglip_preprocess(32), resample=resample)
    path = tmp_path / "resize.onnx"
    onnx.save(resize_graph(pre), str(path))
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((48, 85, 3), (37, 301, 3), (20, 24, 3))]
    frames.append(frames[0][:, ::-1])  # a mirrored view: not C-contiguous
    report = resize_parity(path, pre, frames + parity_frames()[2:])  # sharp noise, enlarging, odd sizes
    assert report["max_levels"] <= (0.0 if resample == "nearest" else 1.0)
    assert report["mean_levels"] < 0.3


def test_filter_rows_are_pils_normalised_taps():
    rows = filter_matrix(1080, 64, "bicubic")  # [64, 1080]
    assert rows.shape == (64, 1080) and rows.dtype == np.float32
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-5)
    assert (np.count_nonzero(rows, axis=1) <= 4 * 1080 / 64 + 2).all()  # support 2 * scale each side
    np.testing.assert_array_equal(filter_matrix(8, 8, "nearest"), np.eye(8, dtype=np.float32))


def test_bundle_with_resize_graph_feeds_vision_the_pil_pixels(tiny_bundle, tmp_path):
    from vla_runtime.runtime.policy import load_policy

    source = tiny_bundle("parallel")
    out = add_resize_graph(source, tmp_path / "in-graph")
    m = load_manifest(out)
    assert m.graphs["resize"].inputs[0].dtype == "uint8" and m.model["preprocess_in_graph"] is True
    assert m.parity["resize"]["max_levels"] <= 1.0
    assert bundle_profiles(m)["resize"]["image"] == ((1, 1, 3), (480, 854, 3), (2160, 3840, 3))
    frame = Frame(np.random.default_rng(2).integers(0, 256, (72, 128, 3), dtype=np.uint8), 0.0)
    seen = {}
    with load_policy(out, threads=1) as in_graph, load_policy(out, threads=1, exact_preprocess=True) as exact:
        in_graph.graph_tap = lambda role, inputs: seen.setdefault(("graph", role), inputs)
        exact.graph_tap = lambda role, inputs: seen.setdefault(("exact", role), inputs)
        in_graph.infer(frame, "pick up the red block")
        exact.infer(frame, "pick up the red block")
        assert "resize" in in_graph.stage_times and "resize" not in exact.stage_times
    assert seen[("graph", "resize")]["image"].shape == (72, 128, 3)
    level = 2.0 / 255.0  # SigLIP: rescale 1/255, std 0.5
    delta = np.abs(seen[("graph", "vision")]["pixel_values"] - seen[("exact", "vision")]["pixel_values"])
    assert delta.max() <= level + 1e-6
    with load_policy(source, threads=1) as old:  # bundles without the graph keep the host path
        assert old._resize_feeds is None and "resize" not in old._runners


def test_resize_graph_refusals_are_one_line(tiny_bundle, tmp_path, capsys):
    out = add_resize_graph(tiny_bundle("parallel"), tmp_path / "once")
    with pytest.raises(ResizeGraphError, match="already resizes in a graph"):
        add_resize_graph(out, tmp_path / "twice")
    assert export_main(["resize-graph", str(out), "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already resizes in a graph" in err[0]
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\] RGB, got float32"):
        ResizeFeed(siglip_preprocess(32))(np.zeros((8, 8, 3), dtype=np.float32))


def test_build_option_writes_the_graph_and_refuses_a_full_destination(tmp_path, capsys):
    out = tmp_path / "built"
    args = ["build", "--head", "parallel", "--preset", "tiny", "--out", str(out), "--resize-in-graph"]
    assert export_main(args) == 0
    assert "resize    max " in capsys.readouterr().out  # the build prints the graph's parity against PIL
    m = load_manifest(out)
    assert "resize" in m.graphs and m.parity["resize"]["max_levels"] <= 1.0 and m.parity["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built"]  # the host-path build was removed
    assert export_main(args) == 2  # non-empty --out without --force: refused before exporting anything
    assert "--force" in capsys.readouterr().err
