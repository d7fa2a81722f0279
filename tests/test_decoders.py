"""Decoders on real ORT sessions of the zoo graphs, checked against numpy twins of those graphs."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from test_policy_zoo import LAYERS, build_zoo_bundle, numpy_prefix
from vla_runtime.runtime.backends import BackendOptions
from vla_runtime.runtime.backends.onnxrt import OrtBackend
from vla_runtime.runtime.conventions import bin_centres
from vla_runtime.runtime.decoders import (
    FlowDecoder,
    ParallelDecoder,
    TokensDecoder,
    Unnormalizer,
    make_decoder,
)
from vla_runtime.runtime.manifest import ActionSpace, ManifestError, Normalization, load_manifest

IDS = np.array([[1, 4, 5, 6, 7, 3]], dtype=np.int64)  # BOS + a few words


class Graphs:
    """The runtime's view of a bundle: one runner per role, plus a log of every call."""

    def __init__(self, bundle):
        self.manifest = load_manifest(bundle)
        self.runners = {r: OrtBackend(s, bundle / s.file, "cpu", BackendOptions(threads=1))
                        for r, s in self.manifest.graphs.items()}
        for r in self.runners.values():
            r.activate()
        self.calls = []

    def run(self, role, inputs, keep=()):
        runner = self.runners[role]
        self.calls.append((role, {k: runner.fetch(v) for k, v in inputs.items()}))
        return runner.run(inputs, keep)

    def prefix(self, decoder, pixels):
        embeds = self.run("vision", {"pixel_values": pixels}, ("image_embeds",))["image_embeds"]
        out = self.run("prefill", {"image_embeds": embeds, "input_ids": IDS}, decoder.prefill_keep)
        return out, 4 + IDS.shape[1]  # N + T


def pixels(seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)


def numpy_tokens(w, pix, dim, offset):
    """Greedy decoding recomputed in float64 numpy, KV cache as plain arrays."""
    pre = numpy_prefix(w, pix, IDS)
    past = {k: v for k, v in pre.items() if k.startswith("present.")}
    logits, prefix_len, bins = pre["action_logits"][0], 4 + IDS.shape[1], []
    for k in range(dim):
        if k > 0:
            x = np.tanh((w["emb"][offset + bins[-1]] + (prefix_len + k - 1) * w["wpos"]) @ w["wh"])  # [E]
            for i in range(LAYERS):
                for kv in "kv":
                    name = f"present.{i}.{'key' if kv == 'k' else 'value'}"
                    past[name] = np.concatenate([past[name], (x @ w[f"{kv}{i}"])[None, None, None]], axis=2)
            pos = prefix_len + k - 1
            logits = x @ w["wa"] + past["present.0.value"].mean(axis=2)[0, 0] @ w["wc"] + np.sin(pos) * w["wl"]
        bins.append(int(np.argmax(logits)))
    return np.array([bins])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tokens_greedy_with_resident_kv_matches_numpy(tmp_path, seed):
    bundle = build_zoo_bundle(tmp_path / "t", "tokens", dim=5, seed=seed)
    g = Graphs(bundle)
    dec = make_decoder(g.manifest)
    assert isinstance(dec, TokensDecoder)
    prefix, prefix_len = g.prefix(dec, pixels(seed))
    out = dec.decode(prefix, g.run, prefix_len)
    w = dict(np.load(bundle / "weights.npz"))
    want = numpy_tokens(w, pixels(seed).astype(np.float64), 5, g.manifest.action.action_token_offset)
    np.testing.assert_array_equal(out.bins, want)
    np.testing.assert_array_equal(out.normalized, bin_centres(256)[want])
    assert out.normalized.dtype == np.float32 and out.normalized.shape == (1, 5)


def test_tokens_feeds_previous_token_position_and_growing_cache(tmp_path):
    bundle = build_zoo_bundle(tmp_path / "t", "tokens", dim=4)
    g = Graphs(bundle)
    dec = make_decoder(g.manifest)
    prefix, prefix_len = g.prefix(dec, pixels())
    out = dec.decode(prefix, g.run, prefix_len)
    steps = [inputs for role, inputs in g.calls if role == "decode"]
    assert len(steps) == 3  # D - 1 decode graph runs; step 0 used prefill's logits
    offset = g.manifest.action.action_token_offset
    for k, inputs in enumerate(steps, start=1):
        assert inputs["input_ids"][0, 0] == offset + out.bins[0, k - 1]
        assert inputs["position_ids"][0, 0] == prefix_len + k - 1
        assert inputs["past_key_values.0.key"].shape == (1, 1, prefix_len + k - 1, 4)


def test_parallel_argmax_per_dimension_matches_numpy(tmp_path):
    bundle = build_zoo_bundle(tmp_path / "p", "parallel", dim=3, horizon=4)
    g = Graphs(bundle)
    dec = make_decoder(g.manifest)
    prefix, prefix_len = g.prefix(dec, pixels())
    out = dec.decode(prefix, g.run, prefix_len)
    w = dict(np.load(bundle / "weights.npz"))
    logits = (numpy_prefix(w, pixels().astype(np.float64), IDS)["pooled"] @ w["wp"]).reshape(4, 3, 256)
    np.testing.assert_array_equal(out.bins, logits.argmax(-1))
    assert out.normalized.shape == (4, 3)


def test_parallel_conditioned_head_sees_the_last_executed_action(tmp_path):
    bundle = build_zoo_bundle(tmp_path / "p", "parallel", dim=3, horizon=4, conditioned=True, replan_every=2)
    g = Graphs(bundle)
    dec = make_decoder(g.manifest)
    assert isinstance(dec, ParallelDecoder)
    first = dec.decode(g.prefix(dec, pixels(0))[0], g.run, 10)
    second = dec.decode(g.prefix(dec, pixels(1))[0], g.run, 10)
    seen = [inputs["past_action"] for role, inputs in g.calls if role == "head"]
    np.testing.assert_array_equal(seen[0], np.zeros((1, 3), np.int64))
    np.testing.assert_array_equal(seen[1][0], first.bins[1])  # replan_every=2: row 1 ran last
    assert second.bins.shape == (4, 3)
    dec.reset()
    dec.decode(g.prefix(dec, pixels(1))[0], g.run, 10)
    np.testing.assert_array_equal(g.calls[-1][1]["past_action"], np.zeros((1, 3), np.int64))


def numpy_flow(w, context, noise, steps):
    c = np.tanh((context.mean(axis=1) @ w["wv"]).reshape(noise.shape))  # [H, D]
    x = noise.astype(np.float64)
    for k in range(steps):
        t = 1.0 - k / steps
        x = x - (x - c + t * w["bt"]) / steps
    return x


def test_flow_euler_steps_from_seeded_noise_match_numpy(tmp_path):
    bundle = build_zoo_bundle(tmp_path / "f", "flow", dim=3, horizon=4, flow_steps=6)
    g = Graphs(bundle)
    dec = make_decoder(g.manifest)
    assert isinstance(dec, FlowDecoder)
    w = dict(np.load(bundle / "weights.npz"))
    rng = np.random.default_rng(g.manifest.decode.noise_seed)
    context = numpy_prefix(w, pixels().astype(np.float64), IDS)["hidden_states"]
    for _ in range(2):  # consecutive inferences take consecutive draws from one generator
        out = dec.decode(g.prefix(dec, pixels())[0], g.run, 10)
        want = numpy_flow(w, context, rng.standard_normal((4, 3)), 6)
        np.testing.assert_allclose(out.normalized, want, rtol=1e-4, atol=1e-5)
        assert out.bins is None and out.normalized.dtype == np.float32
    times = [float(inputs["timestep"][0]) for role, inputs in g.calls if role == "velocity"][:6]
    np.testing.assert_allclose(times, [1 - k / 6 for k in range(6)], rtol=1e-6)


def test_a_fresh_decoder_repeats_the_same_noise(tmp_path):
    bundle = build_zoo_bundle(tmp_path / "f", "flow")
    g = Graphs(bundle)
    a = make_decoder(g.manifest).decode(g.prefix(FlowDecoder, pixels())[0], g.run, 10)
    b = make_decoder(g.manifest).decode(g.prefix(FlowDecoder, pixels())[0], g.run, 10)
    np.testing.assert_array_equal(a.normalized, b.normalized)


@pytest.mark.parametrize("head", ["tokens", "parallel"])
def test_decoders_read_the_manifests_own_bin_centres(tmp_path, head):
    """The centres are manifest data: a bundle listing its own table decodes through it, not the formula."""
    g = Graphs(build_zoo_bundle(tmp_path / "t", head))
    action = g.manifest.action
    table = tuple(float(v) for v in np.linspace(-0.5, 0.9, action.bins) ** 3)  # any table, not uniform
    manifest = dataclasses.replace(g.manifest, action=dataclasses.replace(action, bin_centres=table))
    dec = make_decoder(manifest)
    prefix, prefix_len = g.prefix(dec, pixels())
    out = dec.decode(prefix, g.run, prefix_len)
    np.testing.assert_array_equal(out.normalized, np.asarray(table, np.float32)[out.bins])
    with pytest.raises(ManifestError, match=f"action.bin_centres needs {action.bins} values, got 3"):
        dataclasses.replace(action, bin_centres=(0.0, 0.1, 0.2))


def test_bin_centres():
    c = bin_centres(256)
    np.testing.assert_allclose(c[[0, 127, 128, 255]], [-1 + 1 / 256, -1 / 256, 1 / 256, 1 - 1 / 256])
    assert np.all(np.diff(c) > 0)


def space(kind, mask=(), **stats):
    return ActionSpace(dim=3, horizon=2, names=("x", "y", "g"), units=("m", "m", "open"), kind="ee_delta",
                       normalization=Normalization(kind=kind, mask=mask, **stats))


def test_unnormalize_q01_q99_with_mask():
    un = Unnormalizer(space("q01_q99", mask=(True, True, False), low=(-0.1, 0.0, -5.0), high=(0.1, 2.0, 5.0)))
    x = np.array([[-1.0, 1.0, 0.5], [0.0, -1.0, 0.25]], np.float32)
    np.testing.assert_allclose(un(x), [[-0.1, 2.0, 0.5], [0.0, 0.0, 0.25]], atol=1e-7)
    assert un(x).dtype == np.float64


def test_unnormalize_mean_std_and_none():
    un = Unnormalizer(space("mean_std", mean=(1.0, 2.0, 3.0), std=(0.5, 1.0, 2.0)))
    np.testing.assert_allclose(un(np.ones((2, 3), np.float32)), [[1.5, 3.0, 5.0]] * 2)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(Unnormalizer(space("none"))(x), x)


def test_non_finite_actions_pass_through_and_are_logged(caplog):
    un = Unnormalizer(space("none"))
    x = np.array([[np.nan, 0, 0], [0, np.inf, 0]], np.float32)
    with caplog.at_level(logging.WARNING):
        out = un(x)
    assert np.isnan(out[0, 0]) and np.isinf(out[1, 1])
    assert "2 non-finite" in caplog.text


def test_a_bundle_missing_a_needed_tensor_is_refused(tmp_path):
    import dataclasses

    manifest = load_manifest(build_zoo_bundle(tmp_path / "f", "flow"))
    velocity = manifest.graphs["velocity"]
    broken = dataclasses.replace(velocity, inputs=velocity.inputs[1:])
    manifest = dataclasses.replace(manifest, graphs={**manifest.graphs, "velocity": broken})
    with pytest.raises(ManifestError, match="graphs.velocity: lacks tensor"):
        make_decoder(manifest)
