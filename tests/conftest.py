"""Shared fixtures: each head's tiny bundle is built once per test session and reused.

Building a bundle traces three graphs and runs parity (~20-30 s per head on 2 cores), so
every test that needs one shares the session's copy. Tests that modify a bundle must use
`tiny_bundle_copy`, which hands out a private copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# MuJoCo reads MUJOCO_GL once, when first imported: whichever test imports it first must already
# find the offscreen backend, or every later render in the session fails.
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Factory: tiny_bundle(head) -> Path of a verified tiny bundle (read-only by convention)."""
    built: dict[str, Path] = {}

    def make(head: str) -> Path:
        if head not in built:
            from vla_runtime.export.build import build_bundle

            root = tmp_path_factory.mktemp(f"tiny-{head}")
            built[head] = build_bundle(root / "bundle", head, preset="tiny", seed=0, progress=False)
        return built[head]

    return make


@pytest.fixture
def tiny_bundle_copy(tiny_bundle, tmp_path):
    """Factory: tiny_bundle_copy(head) -> Path of a private copy the test may alter."""

    def make(head: str) -> Path:
        dest = tmp_path / f"bundle-{head}"
        if not dest.exists():
            shutil.copytree(tiny_bundle(head), dest)
        return dest

    return make


@pytest.fixture(autouse=True)
def _no_system_trust_store(monkeypatch, tmp_path_factory):
    """No test reads this machine's /etc/vla-runtime/trusted-keys: the default store is absent."""
    monkeypatch.setenv("VLA_RUNTIME_TRUSTED_KEYS", str(tmp_path_factory.getbasetemp() / "no-trust-store"))


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory):
    """The trained demo `parallel` checkpoint shipped in the package, exported once per session."""
    pytest.importorskip("torch", reason="exporting the demo checkpoint needs torch (pip install vla-runtime[export])")
    from vla_runtime.export.build import build_bundle
    from vla_runtime.export.demo_checkpoints import shipped_checkpoint

    root = tmp_path_factory.mktemp("demo-parallel")
    return build_bundle(root / "bundle", "parallel", checkpoint=shipped_checkpoint("parallel"), progress=False)


@pytest.fixture(params=["dynamixel", "feetech"])
def servo_rig(request):
    """Factory: servo_rig(**kw) -> a ServoRig of each servo family on a pty, closed after the test."""
    from lifecycle_rig import ServoRig

    made = []

    def build(**kw):
        made.append(ServoRig(request.param, **kw))
        return made[-1]

    yield build
    for r in made:
        r.close()
