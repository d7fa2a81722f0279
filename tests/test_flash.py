"""Flashing: verified staging, atomic `current` swap, rollback, and refusal of tampered bundles."""

import tarfile

import pytest
from bundle_factory import write_bundle
from vla_runtime.runtime import flash
from vla_runtime.runtime.bundle import BundleError, open_bundle
from vla_runtime.runtime.cli import main


def _write_bundle(root, name="demo", payload=b"graph-bytes"):
    return write_bundle(root, name=name, payload=payload)


def test_flash_installs_verifies_and_rolls_back(tmp_path):
    first = _write_bundle(tmp_path / "a", payload=b"one")
    second = _write_bundle(tmp_path / "b", payload=b"two")
    robot = tmp_path / "robot"

    r1 = flash.flash(first, robot)
    assert (robot / "current").resolve() == r1.installed and r1.previous is None
    r2 = flash.flash(second, robot)
    assert (robot / "current").resolve() == r2.installed
    assert (robot / "previous").resolve() == r1.installed
    open_bundle(robot / "current")  # what is current verifies on the robot's disk

    assert flash.rollback(robot) == r1.installed
    assert (robot / "current").resolve() == r1.installed
    assert (robot / "previous").resolve() == r2.installed


def test_tampered_bundle_is_refused_and_current_untouched(tmp_path):
    good = _write_bundle(tmp_path / "good", payload=b"good")
    robot = tmp_path / "robot"
    installed = flash.flash(good, robot).installed

    bad = _write_bundle(tmp_path / "bad", payload=b"bad")
    data = bytearray((bad / "head.onnx").read_bytes())
    data[0] ^= 0xFF
    (bad / "head.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="head.onnx"):
        flash.flash(bad, robot)
    assert (robot / "current").resolve() == installed
    assert not [p for p in robot.iterdir() if p.name.startswith(".staging")]


def test_flash_from_tar_and_cli_errors_are_one_line(tmp_path, capsys):
    bundle = _write_bundle(tmp_path / "b")
    archive = flash.pack(bundle, tmp_path / "b.tar")
    assert tarfile.is_tarfile(archive)
    assert main(["flash", str(archive), "--to", str(tmp_path / "robot")]) == 0
    assert "installed" in capsys.readouterr().out

    assert main(["flash", str(tmp_path / "missing"), "--to", str(tmp_path / "robot")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing" in err and "\n" not in err
