"""`vla-runtime inspect`: the summary, and a named failure for any altered, missing or extra file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from vla_runtime.runtime.cli import main as runtime_main


@pytest.mark.parametrize("head", ["tokens", "parallel", "flow"])
def test_inspect_summarises_and_verifies(tiny_bundle, capsys, head):
    bundle = tiny_bundle(head)
    assert runtime_main(["inspect", str(bundle)]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((bundle / "manifest.json").read_text())
    for role in manifest["graphs"]:
        assert f"{role}.onnx" in out
    assert f"head: {head}" in out
    assert "parity: PASSED" in out and "normalisation: q01_q99" in out
    assert f"files: {len(manifest['files'])} verified (sha256)" in out
    assert "target: cpu" in out and "gate: none" in out


def _flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["vision.onnx", "prefill.onnx", "velocity.onnx", "tokenizer.json"])
def test_flipped_byte_names_the_file(tiny_bundle_copy, capsys, name):
    bundle = tiny_bundle_copy("flow")
    _flip_byte(bundle / name)
    assert runtime_main(["inspect", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {name}: sha256 does not match")


def test_every_file_is_covered(tiny_bundle_copy, capsys):
    """Flip one byte in each listed file in turn (restoring it after): each is caught and named."""
    bundle = tiny_bundle_copy("tokens")
    files = json.loads((bundle / "manifest.json").read_text())["files"]
    assert {"vision.onnx", "prefill.onnx", "decode.onnx", "tokenizer.json"} <= set(files)
    for name in files:
        original = (bundle / name).read_bytes()
        _flip_byte(bundle / name, offset=0)
        assert runtime_main(["inspect", str(bundle)]) == 2
        assert f"error: {name}:" in capsys.readouterr().err
        (bundle / name).write_bytes(original)
    assert runtime_main(["inspect", str(bundle)]) == 0


def test_missing_and_extra_files_are_named(tiny_bundle_copy, capsys):
    bundle = tiny_bundle_copy("parallel")
    (bundle / "head.onnx").unlink()
    assert runtime_main(["inspect", str(bundle)]) == 2
    assert "error: head.onnx: listed in the manifest but missing" in capsys.readouterr().err
    bundle = tiny_bundle_copy("tokens")
    (bundle / "notes.txt").write_text("hello")
    assert runtime_main(["inspect", str(bundle)]) == 2
    assert "error: notes.txt: file is not listed in the manifest" in capsys.readouterr().err


def test_not_a_bundle(tmp_path, capsys):
    assert runtime_main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "vla-export build" in err
    (tmp_path / "manifest.json").write_text("{not json")
    assert runtime_main(["inspect", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_inspect_never_imports_torch(tiny_bundle):
    """The onboard command must run where torch is not installed."""
    code = (
        "import sys\n"
        "from vla_runtime.runtime.cli import main\n"
        f"rc = main(['inspect', {str(tiny_bundle('flow'))!r}])\n"
        "assert rc == 0, rc\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
