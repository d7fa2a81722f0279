"""Hostile archives and a flash that checks before it writes, survives a crash, and can roll back.

Each archive is built here, byte for byte, the way an attacker with write access to the
transport would. Every refusal must be one line ending "nothing was changed on the robot",
write nothing outside the install root and leave the install root exactly as it was.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib

import numpy as np
import pytest
from bundle_factory import write_bundle
from test_seal import snapshot
from vla_runtime.runtime import flash
from vla_runtime.runtime.archive import ArchiveLimits
from vla_runtime.runtime.bundle import open_bundle
from vla_runtime.runtime.cli import main


def _add(tar, name, data=b"", **fields):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _archive_with(tmp_path, name, extra, mode="w"):
    """A valid packed bundle plus hostile members appended by `extra(tar)`."""
    bundle = write_bundle(tmp_path / f"src-{name}", payload=name.encode())
    path = tmp_path / f"{name}.tar"
    with tarfile.open(path, mode) as tar:
        for child in sorted(bundle.iterdir()):
            tar.add(child, arcname=f"bundle/{child.name}")
        extra(tar)
    return path


HOSTILE_MEMBERS = {
    "dotdot": (lambda t: _add(t, "bundle/../../escaped.txt", b"x"), "not normalised"),
    "absolute": (lambda t: _add(t, "/tmp/abs-escaped.txt", b"x"), "absolute path"),
    "symlink-abs": (lambda t: _add(t, "bundle/link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "a symlink"),
    "symlink-rel": (lambda t: _add(t, "bundle/link", type=tarfile.SYMTYPE, linkname="../../x"), "a symlink"),
    "hardlink": (lambda t: _add(t, "bundle/hard", type=tarfile.LNKTYPE, linkname="/etc/passwd"), "a hard link"),
    "fifo": (lambda t: _add(t, "bundle/pipe", type=tarfile.FIFOTYPE), "a FIFO"),
    "chardev": (lambda t: _add(t, "bundle/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3), "a device file"),
    "blockdev": (lambda t: _add(t, "bundle/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0), "a device file"),
    "duplicate": (lambda t: _add(t, "bundle/manifest.json", b"{}"), "appears twice"),
    "two-bundles": (lambda t: _add(t, "other/manifest.json", b"{}"), "expected one manifest.json"),
    "unlisted-file": (lambda t: _add(t, "bundle/extra.bin", b"x"), "not listed in the manifest"),
}


def refused(archive, robot, capsys, expect, *extra_args):
    before = snapshot(robot)
    outside = sorted(os.listdir(robot.parent))
    assert main(["flash", str(archive), "--to", str(robot), *extra_args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err and err.rstrip().endswith("(nothing was changed on the robot)"), err
    assert snapshot(robot) == before
    assert sorted(os.listdir(robot.parent)) == outside


@pytest.fixture
def robot(tmp_path):
    root = tmp_path / "robot"
    flash.flash(write_bundle(tmp_path / "good", payload=b"good"), root)
    return root


@pytest.mark.parametrize("case", sorted(HOSTILE_MEMBERS))
def test_hostile_members_are_refused_before_extraction(tmp_path, robot, capsys, case):
    extra, expect = HOSTILE_MEMBERS[case]
    refused(_archive_with(tmp_path, case, extra), robot, capsys, expect)
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/abs-escaped.txt")


def test_not_a_tar_truncated_and_empty(tmp_path, robot, capsys):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"PK\x03\x04 this is a zip, not a tar" * 40)
    refused(junk, robot, capsys, "not a tar archive")
    good = _archive_with(tmp_path, "cut", lambda t: None)
    cut = tmp_path / "cut-short.tar"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    refused(cut, robot, capsys, "truncated or corrupt")
    gz = _archive_with(tmp_path, "gz", lambda t: None, mode="w:gz")
    cut_gz = tmp_path / "cut.tar.gz"
    cut_gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    refused(cut_gz, robot, capsys, "truncated or corrupt")
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    refused(empty, robot, capsys, "expected one manifest.json")


def test_hundred_thousand_members_are_refused_at_the_cap(tmp_path, robot, capsys):
    path = tmp_path / "many.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(100_000):
            _add(tar, f"bundle/f{i}")
    refused(path, robot, capsys, "more than 10000 members")


def _gzip_bomb(path, size=1 << 30):
    """A valid .tar.gz holding one `size`-byte file of zeros (~1 MB on disk), written in ~1 s.

    The deflate stream repeats one fully flushed block of compressed zeros, so nothing of the
    gigabyte is ever compressed here; gzip -t accepts the result."""
    info = tarfile.TarInfo("bundle/zeros.bin")
    info.size = size
    header, zeros, tail = info.tobuf(format=tarfile.GNU_FORMAT), bytes(1 << 20), bytes(1024)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    end = comp.compress(tail) + comp.flush()
    crc = zlib.crc32(header)
    for _ in range(size >> 20):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(tail, crc)
    total = (len(header) + size + len(tail)) & 0xFFFFFFFF
    with open(path, "wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head)
        for _ in range(size >> 20):
            fh.write(block)
        fh.write(end + crc.to_bytes(4, "little") + total.to_bytes(4, "little"))
    return path


def test_decompression_bomb_and_size_cap(tmp_path, robot, capsys):
    bomb = _gzip_bomb(tmp_path / "bomb.tar.gz")
    assert bomb.stat().st_size < 2 << 20
    refused(bomb, robot, capsys, "refused as a decompression bomb")
    refused(bomb, robot, capsys, "the --max-size cap", "--max-size", "0.5")
    big = _archive_with(tmp_path, "big", lambda t: _add(t, "bundle/pad.bin", bytes(4 << 20)))
    with pytest.raises(flash.BundleError, match="--max-size"):
        flash.flash(big, robot, flash.FlashOptions(limits=ArchiveLimits(max_total_bytes=1 << 20)))


def test_tar_gz_and_dot_slash_archives_install(tmp_path, capsys):
    bundle = write_bundle(tmp_path / "b")
    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # what `tar czf b.tar.gz -C b .` writes
        tar.add(bundle, arcname=".")
    assert main(["flash", str(archive), "--to", str(tmp_path / "robot")]) == 0
    installed = (tmp_path / "robot" / "current").resolve()
    assert open_bundle(installed).seal == open_bundle(bundle).seal
    assert sorted(p.name for p in (tmp_path / "robot").iterdir()) == ["bundles", "current"]


def test_failed_gate_is_refused_unless_allowed(tmp_path, robot, capsys):
    bundle = write_bundle(tmp_path / "g", edit=lambda d: d.update(gate={"passed": False, "summary": "agree 0.61"}))
    refused(bundle, robot, capsys, "INT8 accuracy gate failed (agree 0.61)")
    assert main(["flash", str(bundle), "--to", str(robot), "--allow-failed-gate"]) == 0
    assert (robot / "current").resolve().name.startswith("demo-")


def test_flash_fsyncs_file_data_and_directories_before_the_switch(tmp_path, monkeypatch):
    """Record the order of fsync and rename calls: every staged file and folder is synced
    before the bundle is renamed into bundles/, and that before `current` is swapped."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    bundle = write_bundle(tmp_path / "b")
    result = flash.flash(bundle, tmp_path / "robot")
    install = next(i for i, e in enumerate(events) if e == ("replace", str(result.installed)))
    switch = next(i for i, e in enumerate(events) if e == ("replace", str(tmp_path / "robot" / "current")))
    synced = {os.path.basename(p) for kind, p in events[:install] if kind == "fsync"}
    assert {"manifest.json", "vision.onnx", "prefill.onnx", "head.onnx", "tokenizer.json", "bundle"} <= synced
    assert ("fsync", str(tmp_path / "robot" / "bundles")) in events[install:switch]
    assert events[-1] == ("fsync", str(tmp_path / "robot")) or ("fsync", str(tmp_path / "robot")) in events[switch:]


def _break_head_outputs(bundle):
    """Scale the head graph's largest weight: the graph still loads, its outputs are wrong."""
    import onnx
    from bundle_factory import read_doc, write_manifest
    from onnx import numpy_helper
    from vla_runtime.runtime.bundle import hash_tree

    model = onnx.load(str(bundle / "head.onnx"))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weight.CopyFrom(numpy_helper.from_array(-3.0 * numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(bundle / "head.onnx"))
    doc = read_doc(bundle)
    doc["files"] = hash_tree(bundle)
    write_manifest(bundle, doc)  # sealed (a build bug or a compromised signer, not a byte flip)


def test_flash_check_rolls_back_a_bundle_that_loads_but_computes_wrong(tiny_bundle_copy, tmp_path, capsys):
    pytest.importorskip("onnx", reason="editing a graph's weights needs the onnx package")
    good = tiny_bundle_copy("parallel")
    robot = tmp_path / "robot"
    assert main(["flash", str(good), "--to", str(robot), "--check"]) == 0
    assert "check: one inference matches the stored sample" in capsys.readouterr().out
    before = (robot / "current").resolve()

    bad = tmp_path / "bad"
    bad.mkdir()
    for child in good.iterdir():
        (bad / child.name).write_bytes(child.read_bytes()) if child.is_file() else None
    (bad / "health").mkdir()
    for child in (good / "health").iterdir():
        (bad / "health" / child.name).write_bytes(child.read_bytes())
    _break_head_outputs(bad)
    assert main(["inspect", str(bad)]) == 0  # every byte verifies: only running it shows the fault
    capsys.readouterr()
    assert main(["flash", str(bad), "--to", str(robot), "--check"]) == 2
    err = capsys.readouterr().err
    assert "health check failed" in err and f"rolled back: current -> {before.name}" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (robot / "current").resolve() == before
    open_bundle(robot / "current")


def test_tampered_manifest_inside_an_archive_is_refused_naming_the_seal(tmp_path, robot, capsys):
    bundle = write_bundle(tmp_path / "b", edit=lambda d: d.update(gate={"passed": False, "summary": "agree 0.61"}))
    archive = flash.pack(bundle, tmp_path / "b.tar")
    data = archive.read_bytes()
    assert data.count(b'"passed": false') == 1
    archive.write_bytes(data.replace(b'"passed": false', b'"passed": true '))  # same length, same tar layout
    refused(archive, robot, capsys, "seal broken: gate.passed changed")


def test_absurd_declared_member_size_is_refused(tmp_path, robot, capsys):
    path = tmp_path / "absurd.tar"
    info = tarfile.TarInfo("bundle/huge.bin")
    info.size = 1 << 40  # 1 TiB declared by an 8 KiB file
    path.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(8192))
    refused(path, robot, capsys, "the --max-size cap")


def test_random_corruption_never_escapes_as_a_traceback(tmp_path, robot, capsys):
    """Flip, cut and splice bytes of a good archive 150 times: flash installs it or refuses in one line."""
    good = flash.pack(write_bundle(tmp_path / "b"), tmp_path / "good.tar").read_bytes()
    rng = np.random.default_rng(9)
    outcomes = {0: 0, 2: 0}
    for i in range(150):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        if i % 5 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        path = tmp_path / "fuzz.tar"
        path.write_bytes(bytes(data))
        code = main(["flash", str(path), "--to", str(robot)])
        err = capsys.readouterr().err
        assert code in outcomes and (code == 0 or (err.count("\n") == 1 and "Traceback" not in err)), err
        outcomes[code] += 1
        if code == 0:  # only a flip in padding or an unused header field can leave a valid bundle
            open_bundle(robot / "current")
    assert outcomes[2] > 100
    assert not [p for p in robot.iterdir() if p.name.startswith(".")]
