"""The seal, path confinement and schema bounds, tried as an attacker with write access would.

Every hostile bundle must be refused by `inspect`, by the runtime (load_policy) and by `flash`
with one line and no traceback, and flash must leave the robot's install root untouched.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from bundle_factory import read_doc, write_bundle, write_manifest
from vla_runtime.runtime import flash
from vla_runtime.runtime.bundle import BundleError, hash_tree, open_bundle
from vla_runtime.runtime.cli import main
from vla_runtime.runtime.policy import load_policy


def snapshot(root):
    """Every path under root with its link target or size: 'nothing changed' made checkable."""
    if not root.exists():
        return None
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[p] = os.readlink(p) if os.path.islink(p) else os.lstat(p).st_size
    return out


def refused_everywhere(bundle, robot, capsys, expect: str):
    """inspect, load_policy and flash all refuse with one line containing `expect`."""
    before = snapshot(robot)
    assert main(["inspect", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expect in err, err
    with pytest.raises(BundleError, match=expect.replace("(", r"\(").replace(")", r"\)")) as exc:
        load_policy(bundle)
    assert "\n" not in str(exc.value)
    assert main(["flash", str(bundle), "--to", str(robot)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err and err.rstrip().endswith("nothing was changed on the robot)")
    assert "Traceback" not in err
    assert snapshot(robot) == before


@pytest.fixture
def robot(tmp_path):
    """An install root that already runs a good bundle."""
    root = tmp_path / "robot"
    flash.flash(write_bundle(tmp_path / "good", payload=b"good"), root)
    return root


def _tamper(bundle, edit):
    doc = read_doc(bundle)
    edit(doc)
    (bundle / "manifest.json").write_text(json.dumps(doc))  # the seal is left as it was


def _gate_failed(doc):
    doc["gate"] = {"passed": False, "summary": "bin agreement 0.61"}


TAMPERING = {  # case -> (edit, the field the error must name)
    "safety-limit": (lambda d: d["safety"].update(max_translation_step=1e9), "safety.max_translation_step"),
    "norm-scaled": (lambda d: d["action"]["normalization"].update(high=[100, 100]), "action.normalization"),
    "norm-inverted": (lambda d: d["action"]["normalization"].update(low=[1, 1], high=[-1, 0]),
                      "action.normalization"),
    "gate-verdict": (lambda d: d["gate"].update(passed=True), "gate.passed"),
    "file-hash": (lambda d: d["files"].update({"head.onnx": "0" * 64}), "files.head.onnx"),
    "model-name": (lambda d: d["model"].update(name="other"), "model.name"),
    "target": (lambda d: d.update(target={"kind": "tensorrt"}), "target.kind"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_any_edited_manifest_field_breaks_the_seal_and_is_named(tmp_path, robot, capsys, case):
    edit, field = TAMPERING[case]
    bundle = write_bundle(tmp_path / "b", edit=_gate_failed)
    _tamper(bundle, edit)
    refused_everywhere(bundle, robot, capsys, f"seal broken: {field} changed")


def test_inverted_normalisation_and_scaled_limits_are_named(tmp_path, robot, capsys):
    bundle = write_bundle(tmp_path / "b")
    _tamper(bundle, lambda d: (d["action"]["normalization"].update(low=[1, 1], high=[-1, 0]),
                               d["safety"].update(max_rotation_step=100.0)))
    refused_everywhere(bundle, robot, capsys, "seal broken: action.normalization, safety.max_rotation_step changed")


def test_unsealed_and_seal_record_edits_are_refused(tmp_path, robot, capsys):
    bundle = write_bundle(tmp_path / "a")
    write_manifest(bundle, read_doc(bundle), seal=False)
    refused_everywhere(bundle, robot, capsys, "manifest is not sealed")
    bundle = write_bundle(tmp_path / "b")
    _tamper(bundle, lambda d: d["seal"].update(digest="0" * 64))
    refused_everywhere(bundle, robot, capsys, "seal broken: the seal record itself changed")


def _resealed(tmp_path, name, edit, prepare=None):
    """A hostile bundle whose attacker recomputed the seal (only a signature would stop that)."""
    bundle = write_bundle(tmp_path / name)
    if prepare is not None:
        prepare(bundle)
    doc = read_doc(bundle)
    edit(doc, bundle)
    write_manifest(bundle, doc)
    return bundle


def _outside(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"robot-private")
    return secret


CONFINEMENT = {
    "dotdot-file": (lambda d, b: d["files"].update({"../secret.bin": "0" * 64}), "not normalised"),
    "absolute-graph": (lambda d, b: d["graphs"]["head"].update(file="/etc/passwd"), "absolute path"),
    "dotdot-tokenizer": (lambda d, b: d["prompt"].update(tokenizer_file="../../tok.json"), "not normalised"),
    "dot-segment": (lambda d, b: d["graphs"]["vision"].update(file="./vision.onnx"), "not normalised"),
    "backslash": (lambda d, b: d["prompt"].update(tokenizer_file="..\\tok.json"), "backslash"),
    "data-file-outside": (lambda d, b: d["graphs"]["head"].update(data_files=["../w.bin"]), "not normalised"),
}


@pytest.mark.parametrize("case", sorted(CONFINEMENT))
def test_paths_leaving_the_bundle_are_refused(tmp_path, robot, capsys, case):
    edit, expect = CONFINEMENT[case]
    refused_everywhere(_resealed(tmp_path, case, edit), robot, capsys, expect)


def _link_tokenizer(target):
    def prepare(bundle):
        (bundle / "tokenizer.json").unlink()
        os.symlink(target, bundle / "tokenizer.json")
    return prepare


def test_symlinks_and_special_files_inside_a_bundle_are_refused(tmp_path, robot, capsys):
    secret = _outside(tmp_path)
    rehash = lambda d, b: d.update(files={**d["files"], "tokenizer.json": "0" * 64})  # noqa: E731
    for name, target in (("abs", str(secret)), ("rel", "../secret.bin")):
        bundle = _resealed(tmp_path, f"link-{name}", rehash, prepare=_link_tokenizer(target))
        refused_everywhere(bundle, robot, capsys, "tokenizer.json: is a symlink")
    bundle = write_bundle(tmp_path / "fifo")
    os.mkfifo(bundle / "pipe")
    refused_everywhere(bundle, robot, capsys, "pipe: is a special file")
    bundle = write_bundle(tmp_path / "dirlink")
    os.symlink(tmp_path, bundle / "escape")
    refused_everywhere(bundle, robot, capsys, "escape: is a symlink")


def test_onnx_external_data_outside_the_bundle_is_refused(tmp_path, robot, capsys):
    onnx = pytest.importorskip("onnx", reason="writing an external-data graph needs the onnx package")
    from onnx import TensorProto, helper, numpy_helper

    _outside(tmp_path)
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    weight.ClearField("raw_data")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    evil = helper.make_model(graph).SerializeToString()

    def edit(doc, bundle):
        (bundle / "head.onnx").write_bytes(evil)
        doc["files"] = hash_tree(bundle)

    bundle = _resealed(tmp_path, "extdata", edit)
    assert onnx.load(str(bundle / "head.onnx"), load_external_data=False).graph.initializer[0].external_data
    refused_everywhere(bundle, robot, capsys, "external data location '../secret.bin' is refused")


def test_model_name_never_becomes_a_path(tmp_path, capsys):
    robot = tmp_path / "robot"
    for name in ("../../../x", "/tmp/evil-abs", "a" * 5000, "\x1b[31m", ""):
        bundle = write_bundle(tmp_path / f"n{len(os.listdir(tmp_path))}", name=name)
        result = flash.flash(bundle, robot)
        assert result.installed.parent == robot / "bundles"
        label, _, seal = result.installed.name.rpartition("-")
        assert len(label) <= 40 and seal == open_bundle(bundle).seal[:16]
        assert all(c.isalnum() or c in "._-" for c in result.installed.name)
    assert not (tmp_path / "x").exists() and not os.path.exists("/tmp/evil-abs")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("n")) == ["robot"]


BOUNDS = {
    "preprocess.image_size": (lambda d: d["preprocess"].update(image_size=1_000_000), "outside the sane range"),
    "action.horizon": (lambda d: d["action"].update(horizon=10**9), "outside the sane range"),
    "action.bins": (lambda d: d["action"].update(bins=2**40), "outside the sane range"),
    "prompt.max_tokens": (lambda d: d["prompt"].update(max_tokens=10**7), "outside the sane range"),
    "safety.max_translation_step": (lambda d: d["safety"].update(max_translation_step=1e9), "outside the sane range"),
    "safety.workspace_min": (lambda d: d["safety"].update(workspace_min=[2, 0, 0], workspace_max=[1, 1, 1]),
                             "below workspace_max"),
    "safety.gripper_max": (lambda d: d["safety"].update(gripper_max=float("inf")), "outside the sane range"),
    "action.normalization": (lambda d: d["action"]["normalization"].update(low=[1, 1], high=[-1, 0]),
                             "below its high"),
    "decode.flow_steps": (lambda d: d["decode"].update(flow_steps=10**6), "outside the sane range"),
}


@pytest.mark.parametrize("field", sorted(BOUNDS))
def test_absurd_numbers_are_one_line(tmp_path, robot, capsys, field):
    edit, expect = BOUNDS[field]
    bundle = _resealed(tmp_path, "b", lambda d, b: edit(d))
    refused_everywhere(bundle, robot, capsys, field.split(".")[0])
    main(["inspect", str(bundle)])
    assert expect in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        (b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "JSON"),
        (b'{"model": {"name": "\xff\xfe"}}', "not UTF-8"),
        (b'{"schema_version": 1' + b"0" * 5000 + b"}", "unreadable JSON"),
        (b"\x00" * 64, "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
    ],
    ids=["deep", "utf8", "huge-int", "binary", "not-object"],
)
def test_hostile_manifest_bytes_are_one_line(tmp_path, robot, capsys, raw, expect):
    bundle = write_bundle(tmp_path / "b")
    (bundle / "manifest.json").write_bytes(raw)
    refused_everywhere(bundle, robot, capsys, expect)
