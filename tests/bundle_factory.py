"""Small sealed bundles written in milliseconds, for tests that never run the graphs' maths.

Each graph is a real one-node ONNX model (Identity), so every check that reads ONNX structure
runs for real; `tiny_bundle` in conftest.py gives bundles whose graphs compute a policy.
"""

from __future__ import annotations

import json
from pathlib import Path

from vla_runtime.runtime.bundle import hash_tree
from vla_runtime.runtime.seal import make_seal

ROLES = ("vision", "prefill", "head")


def identity_onnx(tag: bytes = b"") -> bytes:
    """A valid ONNX model whose doc string carries `tag` (so payloads differ per bundle)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, doc_string=tag.decode("latin-1"))
    return model.SerializeToString()


def manifest_doc(name: str = "demo", files: dict | None = None) -> dict:
    return {
        "schema_version": 1,
        "model": {"name": name},
        "graphs": {role: {"file": f"{role}.onnx"} for role in ROLES},
        "preprocess": {"image_size": 32, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
        "prompt": {"template": "do {task}", "tokenizer_file": "tokenizer.json"},
        "action": {
            "dim": 2, "horizon": 2, "names": ["dx", "gripper"], "units": ["m", "open"], "kind": "ee_delta",
            "normalization": {"kind": "q01_q99", "low": [-1, 0], "high": [1, 1]},
        },
        "decode": {"head": "parallel"},
        "control": {"rate_hz": 10},
        "safety": {},
        "target": {"kind": "cpu"},
        "files": files or {},
    }


def write_manifest(root: Path, doc: dict, seal: bool = True) -> None:
    doc = {k: v for k, v in doc.items() if k != "seal"}
    if seal:
        doc["seal"] = make_seal(doc)
    (root / "manifest.json").write_text(json.dumps(doc))


def write_bundle(root: Path, name: str = "demo", payload: bytes = b"graph", edit=None) -> Path:
    """A schema-valid, sealed bundle; `edit(doc)` may change the manifest before sealing."""
    root.mkdir(parents=True)
    for role in ROLES:
        (root / f"{role}.onnx").write_bytes(identity_onnx(payload + role.encode()))
    (root / "tokenizer.json").write_bytes(b'{"tokenizer": "' + payload + b'"}')
    doc = manifest_doc(name, hash_tree(root))
    if edit is not None:
        edit(doc)
    write_manifest(root, doc)
    return root


def read_doc(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())
