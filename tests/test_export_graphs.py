"""Structure of the exported graphs and the build's failure behaviour."""

from __future__ import annotations

import ast
from pathlib import Path

import onnx
import pytest
from vla_runtime.export.build import BuildError, build_from_source
from vla_runtime.export.checkpoint import from_preset
from vla_runtime.export.onnx_export import OPSET, check_graph
from vla_runtime.runtime.manifest import HEAD_GRAPHS, load_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("head", ["tokens", "parallel", "flow"])
def test_graphs_are_portable_and_match_the_manifest(tiny_bundle, head):
    bundle = tiny_bundle(head)
    manifest = load_manifest(bundle)
    assert tuple(manifest.graphs) == HEAD_GRAPHS[head]
    for role, spec in manifest.graphs.items():
        model = check_graph(bundle / spec.file)  # checker, strict shape inference, default domain only
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
        assert not model.graph.initializer or all(not t.external_data for t in model.graph.initializer)
        assert [i.name for i in model.graph.input] == list(spec.input_names), role
        assert [o.name for o in model.graph.output] == list(spec.output_names), role
    # Sequence axes stay symbolic (traced with sizes >= 2, so never specialised to 0/1).
    prefill_ids = manifest.graphs["prefill"].input("input_ids")
    assert isinstance(prefill_ids.shape[1], str)
    if head == "tokens":
        past = manifest.graphs["decode"].input("past_key_values.0.key")
        assert isinstance(past.shape[2], str) and past.shape[1] == manifest.decode.num_kv_heads
    if head == "flow":
        assert isinstance(manifest.graphs["velocity"].input("context").shape[1], str)


def test_destination_checks_happen_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildError, match="not a directory"):
        build_from_source(None, tmp_path / "file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(BuildError, match="not empty; pass --force"):
        build_from_source(None, tmp_path / "full")


def test_onboard_packages_never_import_torch():
    """runtime/ and drivers/ must run without torch or transformers installed."""
    offenders = []
    for folder in ("runtime", "drivers"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in ("torch", "transformers") or name.startswith("vla_runtime.export"):
                        offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert not offenders, offenders


def test_onnx_checker_rejects_a_broken_graph(tiny_bundle, tmp_path):
    model = onnx.load(str(tiny_bundle("parallel") / "head.onnx"))
    model.graph.node[0].input[0] = "no_such_tensor"
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(Exception, match="no_such_tensor"):
        check_graph(tmp_path / "bad.onnx")


def test_external_data_graph_runs_like_the_inline_one(tiny_bundle, tmp_path):
    """Models past ~1.5 GiB keep weights in `<role>.onnx.data`; the side file must load and agree."""
    import numpy as np
    import onnxruntime as ort
    from vla_runtime.export.onnx_export import export_graph, graph_plan

    source = from_preset("tiny", "parallel")
    info = export_graph("head", graph_plan(source.model)["head"], tmp_path, external_data=True)
    assert info.data_files == ("head.onnx.data",) and (tmp_path / "head.onnx.data").stat().st_size > 0
    pooled = np.random.default_rng(0).standard_normal((1, source.cfg.text_hidden)).astype(np.float32)  # [1, E]
    external = ort.InferenceSession(str(tmp_path / "head.onnx")).run(None, {"pooled": pooled})[0]
    inline = ort.InferenceSession(str(tiny_bundle("parallel") / "head.onnx")).run(None, {"pooled": pooled})[0]
    np.testing.assert_array_equal(external, inline)
