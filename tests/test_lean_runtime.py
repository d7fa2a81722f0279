"""The robot side never loads torch or transformers: every runtime/ and drivers/ module, plus a
real inference per head, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers")
# Optional extras whose absence only disables a module (see pyproject extras).
OPTIONAL = ("mujoco", "tensorrt", "cuda", "pycuda", "cupy")

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import numpy as np

    heavy, optional = {heavy!r}, {optional!r}
    imported, skipped, culprit = [], [], None
    import vla_runtime.common, vla_runtime.drivers, vla_runtime.runtime
    for pkg in (vla_runtime.common, vla_runtime.runtime, vla_runtime.drivers):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            try:
                importlib.import_module(info.name)
            except ImportError as exc:
                root = (exc.name or "").split(".")[0]
                if root not in optional:
                    raise
                skipped.append([info.name, root])
                continue
            imported.append(info.name)
            if culprit is None and any(h in sys.modules for h in heavy):
                culprit = info.name

    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.types import Frame

    shapes = {{}}
    for head, bundle in {bundles!r}.items():
        with load_policy(bundle, backend="auto") as policy:
            image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
            chunk = policy.infer(Frame(image, 0.0), "pick up the red block")
            shapes[head] = list(chunk.actions.shape)
        if culprit is None and any(h in sys.modules for h in heavy):
            culprit = "inference with the " + head + " head"
    print(json.dumps(dict(imported=imported, skipped=skipped, culprit=culprit, shapes=shapes,
                          loaded=[h for h in heavy if h in sys.modules])))
    """
)


def test_runtime_and_drivers_import_and_infer_without_torch(tiny_bundle, tmp_path):
    bundles = {head: str(tiny_bundle(head)) for head in ("tokens", "parallel", "flow")}
    script = SCRIPT.format(heavy=HEAVY, optional=OPTIONAL, bundles=bundles)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [], f"{report['loaded']} loaded, first by {report['culprit']}"
    assert "vla_runtime.runtime.policy" in report["imported"]
    assert "vla_runtime.runtime.backends.onnxrt" in report["imported"]
    assert len(report["imported"]) > 10
    assert set(report["shapes"]) == set(bundles)
