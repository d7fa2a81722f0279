"""Signatures: keygen and sign on the workstation, a trust store on the robot, key rotation."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from bundle_factory import read_doc, write_bundle, write_manifest
from test_seal import snapshot
from vla_runtime.export.cli import main as export_main
from vla_runtime.runtime import trust
from vla_runtime.runtime.bundle import BundleError, open_bundle
from vla_runtime.runtime.cli import main
from vla_runtime.runtime.policy import load_policy
from vla_runtime.runtime.types import Frame

pytest.importorskip("cryptography", reason="signatures need the cryptography package")


@pytest.fixture
def keys(tmp_path):
    """Three key pairs made through the CLI: name -> (private key path, public key path)."""
    out = {}
    for name in ("ci-2026", "ci-2027", "stranger"):
        assert export_main(["keygen", "--out", str(tmp_path / "keys"), "--name", name]) == 0
        out[name] = (tmp_path / "keys" / f"{name}.key", tmp_path / "keys" / f"{name}.pub")
    assert (out["ci-2026"][0].stat().st_mode & 0o777) == 0o600
    return out


def store(tmp_path, keys, *names):
    path = tmp_path / ("store-" + "-".join(names))
    path.mkdir()
    for name in names:
        shutil.copy(keys[name][1], path)
    return path


def sign(bundle, keys, name):
    assert export_main(["sign", str(bundle), "--key", str(keys[name][0])]) == 0


def test_signed_bundle_passes_a_matching_store_and_others_are_refused(tmp_path, keys, capsys):
    trusted = store(tmp_path, keys, "ci-2026")
    robot = tmp_path / "robot"
    signed = write_bundle(tmp_path / "signed", payload=b"s")
    sign(signed, keys, "ci-2026")
    assert main(["flash", str(signed), "--to", str(robot), "--trusted-keys", str(trusted)]) == 0
    assert "signature: trusted key" in capsys.readouterr().out
    assert main(["inspect", str(signed), "--trusted-keys", str(trusted)]) == 0
    assert "signature: verified, trusted key" in capsys.readouterr().out

    unsigned = write_bundle(tmp_path / "unsigned", payload=b"u")
    stranger = write_bundle(tmp_path / "stranger", payload=b"x")
    sign(stranger, keys, "stranger")
    before = snapshot(robot)
    for bundle, expect in ((unsigned, "is not signed"), (stranger, "signed only by unknown key")):
        for argv in (["flash", str(bundle), "--to", str(robot)], ["inspect", str(bundle)]):
            assert main([*argv, "--trusted-keys", str(trusted)]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and expect in err and "Traceback" not in err
        with pytest.raises(BundleError, match=expect):
            load_policy(bundle, trusted_keys=trusted)
    assert snapshot(robot) == before


def test_default_store_from_environment_enforces_at_flash_and_run(tmp_path, keys, capsys, monkeypatch):
    monkeypatch.setenv(trust.TRUST_ENV, str(store(tmp_path, keys, "ci-2026")))
    bundle = write_bundle(tmp_path / "b")
    assert main(["flash", str(bundle), "--to", str(tmp_path / "robot")]) == 2
    assert "is not signed" in capsys.readouterr().err
    assert main(["run", "--bundle", str(bundle), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not signed" in err and err.count("\n") == 1
    assert not (tmp_path / "robot").exists()


def test_rotation_two_trusted_keys_at_once(tmp_path, keys):
    both = store(tmp_path, keys, "ci-2026", "ci-2027")
    only_new = store(tmp_path, keys, "ci-2027")
    old, new = write_bundle(tmp_path / "old", payload=b"o"), write_bundle(tmp_path / "new", payload=b"n")
    sign(old, keys, "ci-2026")
    sign(new, keys, "ci-2027")
    kid = {n: trust.key_id(trust.load_public_key(keys[n][1])) for n in ("ci-2026", "ci-2027")}
    assert trust.enforce(open_bundle(old), both) == kid["ci-2026"]
    assert trust.enforce(open_bundle(new), both) == kid["ci-2027"]
    with pytest.raises(BundleError, match="unknown key"):
        trust.enforce(open_bundle(old), only_new)  # the old key retired: its bundles stop running
    sign(old, keys, "ci-2027")  # re-signing adds the new signature beside the old one
    entries = json.loads((old / "signatures.json").read_text())["signatures"]
    assert sorted(e["key_id"] for e in entries) == sorted(kid.values())
    assert trust.enforce(open_bundle(old), only_new) == kid["ci-2027"]


def test_resealed_edit_after_signing_and_forged_signatures_are_refused(tmp_path, keys):
    trusted = store(tmp_path, keys, "ci-2026")
    bundle = write_bundle(tmp_path / "b")
    sign(bundle, keys, "ci-2026")
    doc = read_doc(bundle)
    doc["safety"] = {"max_translation_step": 0.5}
    write_manifest(bundle, doc)  # the attacker re-seals; the signature still names the old seal
    with pytest.raises(BundleError, match="signatures are for another seal"):
        trust.enforce(open_bundle(bundle), trusted)
    sigs = json.loads((bundle / "signatures.json").read_text())
    sigs["seal"] = open_bundle(bundle).seal  # ... and claims the new seal
    (bundle / "signatures.json").write_text(json.dumps(sigs))
    with pytest.raises(BundleError, match="does not verify"):
        trust.enforce(open_bundle(bundle), trusted)


def test_broken_trust_stores_fail_closed(tmp_path, keys):
    bundle = open_bundle(write_bundle(tmp_path / "b"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="holds no"):
        trust.enforce(bundle, empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.pub").write_text("not a key")
    with pytest.raises(BundleError, match="not a PEM public key"):
        trust.enforce(bundle, bad)
    with pytest.raises(BundleError, match="does not exist"):
        trust.enforce(bundle, tmp_path / "missing")


def test_without_a_store_signatures_are_not_enforced_and_said_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(trust, "_warned", False)
    bundle = open_bundle(write_bundle(tmp_path / "b"))
    with caplog.at_level(logging.WARNING, logger="vla_runtime.runtime.trust"):
        assert trust.enforce(bundle) is None
        assert trust.enforce(bundle) is None
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "signatures are not enforced" in caplog.text


def test_signed_real_bundle_runs_on_a_robot_with_the_key(tiny_bundle_copy, tmp_path, keys):
    bundle = tiny_bundle_copy("parallel")
    sign(bundle, keys, "ci-2027")
    with load_policy(bundle, trusted_keys=store(tmp_path, keys, "ci-2027", "ci-2026"), threads=1) as policy:
        chunk = policy.infer(Frame(np.zeros((32, 32, 3), np.uint8), 0.0), "pick up the red block")
    assert np.isfinite(chunk.actions).all()


def test_parity_of_an_unsigned_build_runs_on_a_workstation_with_a_trust_store(tmp_path, keys, monkeypatch, tiny_bundle):
    """Signing comes after the build, so the build's parity must not demand a signature."""
    from vla_runtime.export.checkpoint import from_preset
    from vla_runtime.export.parity import run_parity
    from vla_runtime.runtime.bundle import BundleError, open_bundle

    bundle = tiny_bundle("parallel")
    monkeypatch.setenv("VLA_RUNTIME_TRUSTED_KEYS", str(store(tmp_path, keys, "ci-2026")))
    with pytest.raises(BundleError):
        load_policy(bundle)  # the robot path still refuses the unsigned bundle
    report = run_parity(from_preset("tiny", "parallel", seed=0).model, bundle, open_bundle(bundle).manifest)
    assert report["passed"] is True
