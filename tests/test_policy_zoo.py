"""A zoo of tiny hand-built bundles that honour the manifest's graph contract, plus their checks.

The graphs are small but real ONNX (patch-embedding conv, embedding gather, KV concat, mean
pooling), built with onnx.helper so the runtime's sessions, IO binding, decoders and policy
are tested without the exporter. Each graph also has a plain numpy twin (`reference_*`) so
tests compare the runtime against an independent computation instead of stored numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers
from vla_runtime.runtime.bundle import hash_tree
from vla_runtime.runtime.manifest import Manifest, save_manifest

S, PATCH, E, DH, LAYERS, BINS = 16, 8, 8, 4, 2, 256  # image side, patch, width, head dim, layers, bins
N = (S // PATCH) ** 2  # image tokens
WORDS = "what should the robot do to pick up place push the red blue green block cup in on bowl ?".split()
SPECIALS = ["<pad>", "<bos>", "<unk>"]
BASE_VOCAB = len(SPECIALS) + len(dict.fromkeys(WORDS))
VOCAB = BASE_VOCAB + BINS  # the last 256 ids are action tokens
TEMPLATE = "what should the robot do to {task} ?"
OPSET = 18


def _weights(seed: int, head: str, dim: int, horizon: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {
        "conv": rng.normal(0, 0.05, (E, 3, PATCH, PATCH)),
        "emb": rng.normal(0, 0.5, (VOCAB, E)),
        "wh": rng.normal(0, 0.5, (E, E)),
        "wa": rng.normal(0, 1.0, (E, BINS)),
        "wc": rng.normal(0, 1.0, (DH, BINS)),
        "wpos": rng.normal(0, 0.05, (E,)),
        "wl": rng.normal(0, 3.0, (BINS,)),  # position enters the logits directly: off-by-one shows
        "wp": rng.normal(0, 1.0, (E, horizon * dim * BINS)),
        "wq": rng.normal(0, 1.0, (dim, horizon * dim * BINS)),
        "wv": rng.normal(0, 1.0, (E, horizon * dim)),
        "bt": rng.normal(0, 0.3, (horizon, dim)),
    }
    for i in range(LAYERS):
        w[f"k{i}"] = rng.normal(0, 0.5, (E, DH))
        w[f"v{i}"] = rng.normal(0, 0.5, (E, DH))
    return {k: v.astype(np.float32) for k, v in w.items()}


def _init(w: dict, *names: str) -> list:
    return [numpy_helper.from_array(w[n], n) for n in names]


def _const(name: str, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def vision_graph(w: dict, path: Path) -> None:
    nodes = [
        helper.make_node("Conv", ["pixel_values", "conv"], ["p"], strides=[PATCH, PATCH]),  # [1,E,2,2]
        helper.make_node("Reshape", ["p", "shape_ben"], ["f"]),  # [1,E,N]
        helper.make_node("Transpose", ["f"], ["image_embeds"], perm=[0, 2, 1]),  # [1,N,E]
    ]
    g = helper.make_graph(
        nodes, "vision",
        [_vi("pixel_values", TensorProto.FLOAT, [1, 3, S, S])],
        [_vi("image_embeds", TensorProto.FLOAT, [1, N, E])],
        _init(w, "conv") + [_const("shape_ben", [1, E, N])],
    )
    _save(g, path)


def _kv_nodes(src: str, prefix: str) -> list:
    nodes = []
    for i in range(LAYERS):
        for kv in ("k", "v"):
            nodes += [
                helper.make_node("MatMul", [src, f"{kv}{i}"], [f"{prefix}{kv}{i}_m"]),  # [1,L,DH]
                helper.make_node("Unsqueeze", [f"{prefix}{kv}{i}_m", "axis1"], [f"{prefix}{kv}{i}_u"]),  # [1,1,L,DH]
            ]
    return nodes


def prefill_graph(w: dict, head: str, path: Path) -> list[str]:
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["te"]),  # [1,T,E]
        helper.make_node("Concat", ["image_embeds", "te"], ["h"], axis=1),  # [1,L,E]
        helper.make_node("MatMul", ["h", "wh"], ["hm"]),
        helper.make_node("Tanh", ["hm"], ["hidden_states"]),  # [1,L,E]
        helper.make_node("ReduceMean", ["hidden_states", "axis1"], ["pooled"], keepdims=0),  # [1,E]
        helper.make_node("Gather", ["hidden_states", "last"], ["lasth"], axis=1),  # [1,E]
        helper.make_node("MatMul", ["lasth", "wa"], ["action_logits"]),  # [1,256]
    ] + _kv_nodes("hidden_states", "")
    outs = {"tokens": ["action_logits"], "parallel": ["pooled"], "flow": ["hidden_states"]}[head]
    for i in range(LAYERS):
        nodes += [helper.make_node("Identity", [f"k{i}_u"], [f"present.{i}.key"]),
                  helper.make_node("Identity", [f"v{i}_u"], [f"present.{i}.value"])]
    if head == "tokens":
        outs = outs + [f"present.{i}.{kv}" for i in range(LAYERS) for kv in ("key", "value")]
    shapes = {"action_logits": [1, BINS], "pooled": [1, E], "hidden_states": [1, "prefix", E]}
    outputs = [_vi(o, TensorProto.FLOAT, shapes.get(o, [1, 1, "prefix", DH])) for o in outs]
    g = helper.make_graph(
        nodes, "prefill",
        [_vi("image_embeds", TensorProto.FLOAT, [1, N, E]), _vi("input_ids", TensorProto.INT64, [1, "seq"])],
        outputs,
        _init(w, "emb", "wh", "wa", *[f"{kv}{i}" for i in range(LAYERS) for kv in "kv"])
        + [_const("axis1", [1]), _const("last", -1)],
    )
    _save(g, path)
    return outs


def decode_graph(w: dict, path: Path) -> None:
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["te"]),  # [1,1,E]
        helper.make_node("Cast", ["position_ids"], ["posf"], to=TensorProto.FLOAT),  # [1,1]
        helper.make_node("Unsqueeze", ["posf", "axis2"], ["posu"]),  # [1,1,1]
        helper.make_node("Mul", ["posu", "wpos"], ["pe"]),  # [1,1,E]
        helper.make_node("Add", ["te", "pe"], ["x0"]),
        helper.make_node("MatMul", ["x0", "wh"], ["xm"]),
        helper.make_node("Tanh", ["xm"], ["x"]),  # [1,1,E]
    ] + _kv_nodes("x", "n")
    for i in range(LAYERS):
        nodes += [
            helper.make_node("Concat", [f"past_key_values.{i}.key", f"nk{i}_u"], [f"present.{i}.key"], axis=2),
            helper.make_node("Concat", [f"past_key_values.{i}.value", f"nv{i}_u"], [f"present.{i}.value"], axis=2),
        ]
    nodes += [
        helper.make_node("ReduceMean", ["present.0.value", "axis2"], ["ctx"], keepdims=0),  # [1,1,DH]
        helper.make_node("Reshape", ["ctx", "shape_1dh"], ["ctx2"]),  # [1,DH]
        helper.make_node("Reshape", ["x", "shape_1e"], ["x2"]),  # [1,E]
        helper.make_node("MatMul", ["x2", "wa"], ["la"]),
        helper.make_node("MatMul", ["ctx2", "wc"], ["lc"]),
        helper.make_node("Add", ["la", "lc"], ["lac"]),
        helper.make_node("Sin", ["posf"], ["psin"]),  # [1,1] periodic, so every position differs
        helper.make_node("Mul", ["psin", "wl"], ["lpos"]),  # [1,256]
        helper.make_node("Add", ["lac", "lpos"], ["action_logits"]),  # [1,256]
    ]
    past = [_vi(f"past_key_values.{i}.{kv}", TensorProto.FLOAT, [1, 1, "past", DH])
            for i in range(LAYERS) for kv in ("key", "value")]
    present = [_vi(f"present.{i}.{kv}", TensorProto.FLOAT, [1, 1, "total", DH])
               for i in range(LAYERS) for kv in ("key", "value")]
    g = helper.make_graph(
        nodes, "decode",
        [_vi("input_ids", TensorProto.INT64, [1, 1]), _vi("position_ids", TensorProto.INT64, [1, 1])] + past,
        [_vi("action_logits", TensorProto.FLOAT, [1, BINS])] + present,
        _init(w, "emb", "wh", "wa", "wc", "wpos", "wl", *[f"{kv}{i}" for i in range(LAYERS) for kv in "kv"])
        + [_const("axis1", [1]), _const("axis2", [2]), _const("shape_1dh", [1, DH]), _const("shape_1e", [1, E])],
    )
    _save(g, path)


def head_graph(w: dict, dim: int, horizon: int, conditioned: bool, path: Path) -> None:
    nodes = [helper.make_node("MatMul", ["pooled", "wp"], ["lp"])]  # [1,H*D*256]
    inputs = [_vi("pooled", TensorProto.FLOAT, [1, E])]
    last = "lp"
    if conditioned:
        inputs.append(_vi("past_action", TensorProto.INT64, [1, dim]))
        nodes += [
            helper.make_node("Cast", ["past_action"], ["paf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["paf", "inv_bins"], ["pan"]),
            helper.make_node("MatMul", ["pan", "wq"], ["lq"]),
            helper.make_node("Add", ["lp", "lq"], ["lsum"]),
        ]
        last = "lsum"
    nodes.append(helper.make_node("Reshape", [last, "shape_hdb"], ["action_logits"]))
    g = helper.make_graph(
        nodes, "head", inputs, [_vi("action_logits", TensorProto.FLOAT, [1, horizon, dim, BINS])],
        _init(w, "wp", "wq") + [_const("shape_hdb", [1, horizon, dim, BINS]),
                                _const("inv_bins", np.float32(1.0 / BINS), np.float32)],
    )
    _save(g, path)


def velocity_graph(w: dict, dim: int, horizon: int, path: Path) -> None:
    nodes = [
        helper.make_node("ReduceMean", ["context", "axis1"], ["c"], keepdims=0),  # [1,E]
        helper.make_node("MatMul", ["c", "wv"], ["cm"]),  # [1,H*D]
        helper.make_node("Reshape", ["cm", "shape_hd"], ["c3"]),  # [1,H,D]
        helper.make_node("Tanh", ["c3"], ["target"]),
        helper.make_node("Sub", ["noisy_actions", "target"], ["d"]),
        helper.make_node("Mul", ["timestep", "bt"], ["tb"]),  # [H,D]
        helper.make_node("Add", ["d", "tb"], ["velocity"]),  # [1,H,D]
    ]
    g = helper.make_graph(
        nodes, "velocity",
        [_vi("context", TensorProto.FLOAT, [1, "prefix", E]),
         _vi("noisy_actions", TensorProto.FLOAT, [1, horizon, dim]),
         _vi("timestep", TensorProto.FLOAT, [1])],
        [_vi("velocity", TensorProto.FLOAT, [1, horizon, dim])],
        _init(w, "wv", "bt") + [_const("axis1", [1]), _const("shape_hd", [1, horizon, dim])],
    )
    _save(g, path)


def build_tokenizer(path: Path) -> int:
    vocab = {t: i for i, t in enumerate(SPECIALS + list(dict.fromkeys(WORDS)))}
    offset = len(vocab)
    vocab.update({f"<act_{j}>": offset + j for j in range(BINS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return offset


def _specs(path: Path) -> tuple[list, list]:
    """Manifest I/O specs read back from an ONNX file (symbolic dims stay strings)."""
    model = onnx.load(str(path))
    names = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64"}

    def spec(v):
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "dtype": names[v.type.tensor_type.elem_type], "shape": dims}

    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]


def build_zoo_bundle(
    out: Path,
    head: str,
    *,
    dim: int = 4,
    horizon: int | None = None,
    conditioned: bool = False,
    flow_steps: int = 5,
    seed: int = 0,
    target: dict | None = None,
    gate: dict | None = None,
    replan_every: int = 1,
) -> Path:
    """Write a complete, hash-sealed bundle for `head` into `out` and return it."""
    out.mkdir(parents=True, exist_ok=True)
    horizon = 1 if head == "tokens" else (horizon or 3)
    w = _weights(seed, head, dim, horizon)
    vision_graph(w, out / "vision.onnx")
    prefill_graph(w, head, out / "prefill.onnx")
    role = {"tokens": "decode", "parallel": "head", "flow": "velocity"}[head]
    if head == "tokens":
        decode_graph(w, out / "decode.onnx")
    elif head == "parallel":
        head_graph(w, dim, horizon, conditioned, out / "head.onnx")
    else:
        velocity_graph(w, dim, horizon, out / "velocity.onnx")
    np.savez(out / "weights.npz", **w)  # lets tests recompute the graphs in numpy
    offset = build_tokenizer(out / "tokenizer.json")
    graphs = {}
    for r in ("vision", "prefill", role):
        ins, outs = _specs(out / f"{r}.onnx")
        graphs[r] = {"file": f"{r}.onnx", "format": "onnx", "precision": "fp32", "inputs": ins, "outputs": outs}
    rng = np.random.default_rng(seed + 1)
    low = rng.uniform(-0.05, -0.01, dim)
    doc = {
        "schema_version": 1,
        "model": {"name": f"zoo-{head}", "preset": "zoo", "head": head},
        "graphs": graphs,
        "preprocess": {"image_size": S, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3,
                       "image_std": [0.5] * 3, "resample": "bicubic"},
        "prompt": {"template": TEMPLATE, "tokenizer_file": "tokenizer.json", "bos_token_id": 1, "max_tokens": 16},
        "action": {
            "dim": dim, "horizon": horizon, "names": [f"a{i}" for i in range(dim)], "units": ["m"] * dim,
            "kind": "ee_delta", "bins": BINS, "action_token_offset": offset,
            "normalization": {"kind": "q01_q99", "low": low.tolist(), "high": (-low * 2).tolist(),
                              "mask": [True] * (dim - 1) + [False]},
        },
        "decode": {"head": head, "flow_steps": flow_steps, "noise_seed": 7, "condition_on_past_action": conditioned,
                   "num_layers": LAYERS, "num_kv_heads": 1, "head_dim": DH},
        "control": {"rate_hz": 10.0, "replan_every": replan_every},
        "safety": {},
        "target": target or {"kind": "cpu"},
        "files": hash_tree(out),
        "gate": gate,
    }
    save_manifest(Manifest.from_json(doc), out)
    return out


def numpy_prefix(w: dict, pixels: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The vision + prefill graphs recomputed in numpy (float64)."""
    p = pixels[0].reshape(3, S // PATCH, PATCH, S // PATCH, PATCH)  # [3, gy, py, gx, px]
    embeds = np.einsum("cypxq,ecpq->yxe", p, w["conv"].astype(np.float64)).reshape(1, N, E)  # [1,N,E]
    h = np.concatenate([embeds, w["emb"][ids]], axis=1)  # [1,L,E]
    hidden = np.tanh(h @ w["wh"])  # [1,L,E]
    out = {"image_embeds": embeds, "hidden_states": hidden, "pooled": hidden.mean(1),
           "action_logits": hidden[:, -1] @ w["wa"]}
    for i in range(LAYERS):
        out[f"present.{i}.key"] = (hidden @ w[f"k{i}"])[:, None]
        out[f"present.{i}.value"] = (hidden @ w[f"v{i}"])[:, None]
    return out


@pytest.mark.parametrize("head", ["tokens", "parallel", "flow"])
def test_zoo_graphs_match_their_numpy_twins(tmp_path, head):
    bundle = build_zoo_bundle(tmp_path / head, head)
    w = dict(np.load(bundle / "weights.npz"))
    rng = np.random.default_rng(3)
    pixels = rng.normal(size=(1, 3, S, S)).astype(np.float32)
    ids = np.array([[1, 4, 5, 6]], dtype=np.int64)
    ref = numpy_prefix(w, pixels, ids)
    vis = ort.InferenceSession(str(bundle / "vision.onnx")).run(None, {"pixel_values": pixels})[0]
    np.testing.assert_allclose(vis, ref["image_embeds"], rtol=1e-4, atol=1e-5)
    pre = ort.InferenceSession(str(bundle / "prefill.onnx"))
    got = dict(zip([o.name for o in pre.get_outputs()], pre.run(None, {"image_embeds": vis, "input_ids": ids}),
                   strict=True))
    for name, value in got.items():
        np.testing.assert_allclose(value, ref[name], rtol=1e-4, atol=1e-4, err_msg=name)
