"""Parity of the exported tiny bundles against the PyTorch reference, for every head.

The build already gates on parity; these tests recompute it independently on observations
the build never saw (other images, prompt lengths the graphs were not traced with) so a
report that merely claims success cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_runtime.export.checkpoint import from_preset
from vla_runtime.export.parity import Tolerance, graph_errors, parity_failure, run_parity
from vla_runtime.runtime.bundle import open_bundle
from vla_runtime.runtime.conventions import flow_noise
from vla_runtime.runtime.policy import load_policy
from vla_runtime.runtime.types import Frame

HEADS = ("tokens", "parallel", "flow")
# Prompt lengths the graphs were not traced with (tracing used T=5): 2 ids, and a long prompt.
TASKS = ("go", "slide the purple towel onto the plate then rotate the white lid to the right of the bowl")


@pytest.fixture(scope="module")
def sources():
    """The PyTorch models the tiny bundles were built from (same preset and seed)."""
    return {head: from_preset("tiny", head, seed=0) for head in HEADS}


def _frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    return rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)  # [H, W, 3], not the model's size


@pytest.mark.parametrize("head", HEADS)
def test_parity_recomputed_through_the_runtime_passes(tiny_bundle, sources, head):
    """Parity run again here, on other observations than the build's (seed 1), not read back."""
    manifest = open_bundle(tiny_bundle(head)).manifest
    report = run_parity(sources[head].model, tiny_bundle(head), manifest, seed=1)
    assert report["passed"] is True and parity_failure(report) is None
    assert report["runner"] == "vla_runtime.runtime.policy (cpu)"
    assert set(report["graphs"]) == set(manifest.graphs)
    for role, entry in report["graphs"].items():
        assert entry["max_abs_err"] < 1e-4, role
    if head == "flow":
        assert report["action"]["max_abs_err"] < 1e-4
    else:
        assert report["action"]["identical_bins"] and report["action"]["bins_total"] >= manifest.action.dim


@pytest.mark.parametrize("head", HEADS)
def test_runtime_policy_matches_reference_on_unseen_inputs(tiny_bundle, sources, head):
    bundle = tiny_bundle(head)
    model = sources[head].model
    for i, task in enumerate(TASKS):
        policy = load_policy(bundle, backend="cpu")
        image = _frame(i)
        pixels = torch.from_numpy(np.array(policy.preprocess(image)))  # [1, 3, S, S]
        ids = torch.from_numpy(np.array(policy.tokenize(task)))  # [1, T]
        chunk = policy.infer(Frame(image=image, t_capture=1.0), task)
        m = policy.manifest
        assert chunk.actions.shape == (m.action.horizon, m.action.dim)
        if head == "tokens":
            assert policy.last_bins.reshape(-1).tolist() == model.reference_tokens(pixels, ids)
        elif head == "parallel":
            ref = model.reference_parallel_logits(pixels, ids)[0].argmax(-1).numpy()  # [H, D]
            np.testing.assert_array_equal(policy.last_bins, ref)
        else:
            noise = torch.from_numpy(flow_noise(m.decode.noise_seed, m.action.horizon, m.action.dim))
            ref = model.reference_flow(pixels, ids, noise, m.decode.flow_steps).numpy()  # [H, D]
            np.testing.assert_allclose(policy.last_normalized, ref, atol=1e-4)
        policy.close()


@pytest.mark.parametrize("head", HEADS)
def test_each_graph_matches_its_pytorch_wrapper(tiny_bundle, sources, head):
    bundle = open_bundle(tiny_bundle(head))
    rng = np.random.default_rng(7)
    size = bundle.manifest.preprocess.image_size
    pixels = rng.uniform(-1, 1, size=(1, 3, size, size)).astype(np.float32)  # [1, 3, S, S]
    ids = np.array([[2, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51]], dtype=np.int64)  # [1, 13]
    with load_policy(bundle.root, backend="cpu") as policy:
        errors = graph_errors(sources[head].model, policy, pixels, ids)
    assert set(errors) == set(bundle.manifest.graphs)
    assert max(errors.values()) < 1e-4, errors


def test_parity_detects_a_different_model(tiny_bundle):
    """A bundle checked against another model (other seed) must fail, naming what differs."""
    bundle = open_bundle(tiny_bundle("parallel"))
    other = from_preset("tiny", "parallel", seed=1).model
    report = run_parity(other, bundle.root, bundle.manifest, tol=Tolerance())
    assert report["passed"] is False
    message = parity_failure(report)
    assert "max abs err" in message and "action bins differ" in message
