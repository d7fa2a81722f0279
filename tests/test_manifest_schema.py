"""The manifest schema: a real tiny bundle's manifest, broken one field at a time.

Every error must name the JSON path of the bad field, both from the library and from
`vla-runtime inspect`, so an operator knows what to fix without reading a traceback.
"""

from __future__ import annotations

import copy
import json

import pytest
from vla_runtime.runtime.cli import main as runtime_main
from vla_runtime.runtime.manifest import SCHEMA_VERSION, Manifest, ManifestError
from vla_runtime.runtime.seal import make_seal


@pytest.fixture
def doc(tiny_bundle):
    return json.loads((tiny_bundle("tokens") / "manifest.json").read_text())


def test_built_manifest_round_trips(doc):
    manifest = Manifest.from_json(doc)
    assert manifest.to_json() == Manifest.from_json(manifest.to_json()).to_json()
    assert manifest.schema_version == SCHEMA_VERSION
    assert manifest.head == "tokens" and manifest.action.horizon == 1
    assert manifest.action.action_token_offset + manifest.action.bins == manifest.model["vocab_size"]
    assert manifest.decode.num_layers * 2 == len(manifest.graphs["decode"].inputs) - 2
    assert manifest.versions["opset"] == 18 and "torch" in manifest.versions
    assert manifest.preprocess.resample == "bicubic" and manifest.preprocess.image_mean == (0.5, 0.5, 0.5)


def _drop(doc, path):
    node = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    del node[last]


def _set(doc, path, value):
    node = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value


@pytest.mark.parametrize(
    "path",
    ["action.dim", "preprocess.image_size", "decode", "files", "prompt.template", "graphs.prefill.file"],
)
def test_missing_field_is_named(doc, path):
    bad = copy.deepcopy(doc)
    _drop(bad, path)
    with pytest.raises(ManifestError, match=rf"{path.replace('.', '[.]')}: required field is missing"):
        Manifest.from_json(bad)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("action.horizon", "1", "expected int"),
        ("control.rate_hz", "fast", "expected float"),
        ("action.names", "dx", "expected tuple"),
        ("decode.condition_on_past_action", 1, "expected bool"),
        ("model", [], "expected dict"),
    ],
)
def test_wrong_type_is_named(doc, path, value, expected):
    bad = copy.deepcopy(doc)
    _set(bad, path, value)
    with pytest.raises(ManifestError, match=rf"{path.replace('.', '[.]')}: {expected}"):
        Manifest.from_json(bad)


@pytest.mark.parametrize("version", [0, SCHEMA_VERSION + 1])
def test_unknown_schema_version(doc, version):
    bad = dict(doc, schema_version=version)
    with pytest.raises(ManifestError, match=rf"schema_version {version} is not supported.*rebuild"):
        Manifest.from_json(bad)


def test_invalid_values_are_named(doc):
    bad = copy.deepcopy(doc)
    bad["decode"]["head"] = "diffusion"
    with pytest.raises(ManifestError, match="decode.head"):
        Manifest.from_json(bad)
    bad = copy.deepcopy(doc)
    bad["action"]["normalization"]["low"] = [0.0]
    with pytest.raises(ManifestError, match="action.normalization.low needs 7 values"):
        Manifest.from_json(bad)
    bad = copy.deepcopy(doc)
    del bad["files"]["decode.onnx"]
    with pytest.raises(ManifestError, match="graphs.decode.file 'decode.onnx' has no sha256"):
        Manifest.from_json(bad)


def test_inspect_names_the_bad_field(tiny_bundle_copy, capsys):
    bundle = tiny_bundle_copy("tokens")
    doc = json.loads((bundle / "manifest.json").read_text())
    del doc["action"]["dim"]
    doc["seal"] = make_seal(doc)  # a sealed but wrong manifest (an exporter bug, not tampering)
    (bundle / "manifest.json").write_text(json.dumps(doc))
    assert runtime_main(["inspect", str(bundle)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "action.dim: required field is missing" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
