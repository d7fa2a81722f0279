"""Parity and the INT8 gate on the shipped *trained* demo checkpoints, on simulator frames.

On random weights bin agreement says little (the tokens head's bins barely depend on the
input, the parallel head's logits are near-tied). The trained heads choose different bins for
different scenes and instructions, so here agreement means the exported and quantized graphs
keep what the policy learnt. CI never retrains: every bundle is exported from the checkpoint
in the package.
"""

from __future__ import annotations

import numpy as np
import pytest
import vla_runtime.runtime.sim  # noqa: F401 - MuJoCo's offscreen GL platform, before any test imports MuJoCo

pytest.importorskip("torch", reason="exporting the trained checkpoints needs torch (pip install vla-runtime[export])")
pytest.importorskip("mujoco", reason="simulator frames need MuJoCo (pip install vla-runtime[sim])")

from vla_runtime.export.demo_checkpoints import shipped_heads  # noqa: E402
from vla_runtime.runtime.types import Frame  # noqa: E402

HEADS = shipped_heads()


@pytest.fixture(scope="module")
def expert_scenes(tmp_path_factory):
    """One short scripted episode per colour: real scenes, real instructions."""
    from vla_runtime.runtime.cli import main

    rec = tmp_path_factory.mktemp("trained-scenes") / "rec"
    argv = ["--policy", "scripted", "--episodes", "3", "--seed", "20", "--steps", "24", "--record", str(rec),
            "--record-raw", "--record-views", "front,wrist"]  # every view a shipped policy may read
    assert main(argv) == 0
    return rec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """head -> (FP32 bundle exported from the shipped checkpoint, the loaded checkpoint)."""
    from vla_runtime.export.build import build_bundle
    from vla_runtime.export.checkpoint import load_checkpoint
    from vla_runtime.export.demo_checkpoints import shipped_checkpoint

    root, cache = tmp_path_factory.mktemp("trained"), {}

    def get(head: str):
        if head not in cache:
            ckpt = shipped_checkpoint(head)
            cache[head] = (build_bundle(root / head, head, checkpoint=ckpt, progress=False),
                           load_checkpoint(ckpt, head=head))
        return cache[head]

    return get


def _observations(scenes, views: tuple[str, ...], every: int = 6):
    """(frames as the policy reads them, instruction, measured state) of every `every`-th tick."""
    from vla_runtime.runtime.episodes.readers import open_source
    from vla_runtime.runtime.state_input import recorded_state

    source = open_source(scenes)
    for e, n in enumerate(source.episode_lengths()):
        for i in range(0, n, every):
            f = source.frame(e, i)
            frames = Frame(f.image, 0.0) if len(views) == 1 else {v: Frame(f.views[v], 0.0) for v in views}
            yield frames, f.task, recorded_state(f.state)


@pytest.mark.parametrize("head", HEADS)
def test_exported_graphs_choose_the_eager_models_actions_on_sim_scenes(trained, expert_scenes, head):
    from vla_runtime.export.torch_policy import torch_policy
    from vla_runtime.runtime.policy import load_policy

    bundle, source = trained(head)
    eager, ort = torch_policy(bundle, source.model), load_policy(bundle, threads=1)
    chosen = []
    for frames, task, state in _observations(expert_scenes, ort.views):
        a = eager.infer(frames, task, state)
        b = ort.infer(frames, task, state)
        if head == "flow":
            np.testing.assert_allclose(b.actions, a.actions, atol=1e-4 * np.abs(a.actions).max() + 1e-6)
            chosen.append(np.round(eager.last_normalized, 2).tobytes())
        else:
            assert np.array_equal(eager.last_bins, ort.last_bins), (task, eager.last_bins, ort.last_bins)
            chosen.append(eager.last_bins.tobytes())
    eager.close(), ort.close()
    assert len(set(chosen)) >= len(chosen) // 2, "the trained policy should act differently per scene"


@pytest.mark.parametrize("head", HEADS)
def test_the_int8_gate_judges_a_trained_policy_whose_actions_depend_on_the_scene(trained, expert_scenes, head,
                                                                               tmp_path):
    """On trained weights the FP32 reference acts differently per frame, so agreement is a real measurement."""
    from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle
    from vla_runtime.runtime.episodes.readers import open_source
    from vla_runtime.runtime.policy import load_policy

    bundle, _ = trained(head)
    opts = QuantizeOptions(variant="cpu-fast", gate_frames=12, threads=1, progress=False)
    report = quantize_bundle(bundle, open_source(expert_scenes), tmp_path / "int8", opts)
    m = report["metrics"]
    if head == "flow":
        assert 0.9 < m["flow_cosine_min"] <= 1.0
    else:
        assert 0.5 < m["token_agreement"] <= 1.0
    assert report["worst_graph"] in report["per_graph"] and report["passed"] == (not report["failures"])
    fp32 = load_policy(bundle, threads=1)
    actions = {np.round(fp32.infer(frames, task, state).actions, 3).tobytes()
               for frames, task, state in _observations(expert_scenes, fp32.views, every=12)}
    fp32.close()
    assert len(actions) > 1  # different scenes, different actions: agreement cannot be had for free
