"""`vla-export build --from-lerobot DIR --tokenizer FILE`: a LeRobot pi0 / pi0.5 checkpoint -> bundle.

The three graphs of `export/lerobot_pi0.py` are traced with the same exporter and checks as
our own heads, the manifest records LeRobot's conventions as data (views, state statistics
and where the state goes, prompt template and length, padded widths, Euler steps and the time
embedding's periods), and parity runs the finished bundle through the runtime's own policy
(onnxruntime, numpy decoder) against the PyTorch modules stepping the same noise.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from vla_runtime.common.errors import UserError
from vla_runtime.export.lerobot_checkpoint import FeatureStats, LeRobotCheckpoint, read_checkpoint
from vla_runtime.export.lerobot_pi0 import build_pi0
from vla_runtime.export.manifest_writer import TOKENIZER_NAME, graph_spec_of, tool_versions
from vla_runtime.export.onnx_export import export_graph
from vla_runtime.runtime.bundle import check_destination, hash_tree, staged_directory
from vla_runtime.runtime.conventions import flow_time_embedding, flow_times
from vla_runtime.runtime.manifest import (
    SCHEMA_VERSION,
    ActionSpace,
    Control,
    DecodeSettings,
    Manifest,
    Normalization,
    Preprocess,
    Prompt,
    SafetyDefaults,
    StateSpace,
    Target,
    save_manifest,
)
from vla_runtime.runtime.types import Frame, RobotState

logger = logging.getLogger(__name__)

EE_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
PROMPTS = {"pi0": "{task}\n", "pi05": "Task: {task}, State: {state};\nAction: "}  # LeRobot's processors
GRAPH_TOLERANCE = 1e-4  # max abs error per graph output, ORT vs PyTorch (fp32)
CHUNK_TOLERANCE = 1e-3  # max abs error of the normalised chunk after all Euler steps


def _normalization(stats: FeatureStats, dim: int) -> Normalization:
    """LeRobot's statistics as the runtime's normalisation kinds (MEAN_STD, QUANTILES)."""
    s = stats.stats
    if stats.mode == "MEAN_STD":
        return Normalization(kind="mean_std", mean=tuple(s["mean"]), std=tuple(s["std"]))
    if stats.mode == "QUANTILES":
        return Normalization(kind="q01_q99", low=tuple(s["q01"]), high=tuple(s["q99"]))
    if stats.mode == "IDENTITY":
        return Normalization(kind="none")
    raise UserError(f"normalisation {stats.mode} is not supported yet for LeRobot checkpoints (MEAN_STD, QUANTILES)")


def _plan(ckpt: LeRobotCheckpoint, modules) -> dict:
    vision, prefix, expert = modules
    s, c = ckpt.sizes, len(ckpt.cameras)
    n = (ckpt.image_size // s.patch) ** 2  # image tokens per view
    t, layers = ckpt.tokenizer_max_length, s.layers
    kv_names = [f"{{}}.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    kv = [torch.zeros(1, s.kv_heads, c * n + t, s.head_dim) for _ in kv_names]  # [1, KV, L, Dh]
    state = () if ckpt.kind == "pi05" else (torch.zeros(1, ckpt.max_state_dim),)
    expert_args = (*kv, torch.ones(1, c * n + t, dtype=torch.long), *state,
                   torch.zeros(1, ckpt.chunk_size, ckpt.max_action_dim), torch.zeros(1, s.expert_width))
    expert_in = [k.format("past_key_values") for k in kv_names] + ["prefix_mask"] + (
        [] if ckpt.kind == "pi05" else ["state"]) + ["noisy_actions", "time_embedding"]
    return {
        "vision": (vision, (torch.zeros(1, 3, ckpt.image_size, ckpt.image_size),), ["pixel_values"],
                   ["image_embeds"], None),
        "prefill": (prefix, (torch.zeros(1, c * n, s.width), torch.ones(1, t, dtype=torch.long),
                             torch.ones(1, t, dtype=torch.long)),
                    ["image_embeds", "input_ids", "prompt_mask"], [k.format("present") for k in kv_names], None),
        "expert": (expert, expert_args, expert_in, ["velocity"], None),
    }


def _manifest(ckpt: LeRobotCheckpoint, tok: Tokenizer, infos, staging: Path, seed: int, parity: dict,
              state_names: tuple[str, ...]) -> Manifest:
    names = ckpt.action_names
    ee = names == EE_NAMES
    units = ("m", "m", "m", "rad", "rad", "rad", "open") if ee else tuple(
        "open" if n == "gripper" else "rad" for n in names)
    s = ckpt.sizes
    return Manifest(
        schema_version=SCHEMA_VERSION,
        model={
            "name": f"lerobot-{ckpt.kind}-{ckpt.root.name}", "architecture": "LeRobot " + ckpt.kind,
            "head": "pi0", "source": f"lerobot:{ckpt.root}", "seed": seed,
            "parameters": int(sum(v.size for v in ckpt.weights.values())),
            "vocab_size": s.vocab, "hidden_size": s.width, "expert_hidden_size": s.expert_width,
            "lerobot_type": ckpt.kind, "tokenizer_name": ckpt.tokenizer_name,
            "export_seconds": {g.role: g.seconds for g in infos},
        },
        graphs={g.role: graph_spec_of(g, "fp32") for g in infos},
        preprocess=Preprocess(image_size=ckpt.image_size, rescale_factor=1 / 255, image_mean=(0.5, 0.5, 0.5),
                              image_std=(0.5, 0.5, 0.5), resample="bilinear", camera_views=ckpt.cameras),
        prompt=Prompt(template=PROMPTS[ckpt.kind], tokenizer_file=TOKENIZER_NAME,
                      bos_token_id=tok.token_to_id("<bos>"), max_tokens=ckpt.tokenizer_max_length),
        action=ActionSpace(dim=ckpt.action_dim, horizon=ckpt.chunk_size, names=names,
                           units=units, kind="ee_delta" if ee else "joint_position",
                           normalization=_normalization(ckpt.action_stats, ckpt.action_dim)),
        decode=DecodeSettings(
            head="pi0", flow_steps=ckpt.num_steps, noise_seed=seed, num_layers=s.layers,
            num_kv_heads=s.kv_heads, head_dim=s.head_dim, action_pad=ckpt.max_action_dim,
            state_pad=0 if ckpt.kind == "pi05" else ckpt.max_state_dim, time_embedding_width=s.expert_width,
            time_periods=ckpt.periods, state_in_prompt=ckpt.kind == "pi05",
        ),
        control=Control(rate_hz=10.0, replan_every=max(1, min(int(ckpt.config.get("n_action_steps", 1)),
                                                              ckpt.chunk_size) // 2)),
        safety=SafetyDefaults(),
        target=Target(kind="cpu"),
        files=hash_tree(staging),
        parity=parity,
        versions=tool_versions(),
        state=StateSpace(names=state_names, units=tuple("open" if n == "gripper" else "rad" for n in state_names),
                         normalization=_normalization(ckpt.state_stats, ckpt.state_dim)),
    )


def torch_chunk(modules, ckpt: LeRobotCheckpoint, pixels, ids, mask, state, noise) -> np.ndarray:
    """The PyTorch side: LeRobot's sample_actions on our modules; normalised chunk [H, D]."""
    vision, prefix, expert = modules
    with torch.no_grad():
        kv = prefix(torch.cat([vision(torch.from_numpy(p)) for p in pixels], 1), torch.from_numpy(ids),
                    torch.from_numpy(mask))
        prefix_mask = torch.cat([torch.ones(1, kv[0].shape[2] - mask.shape[1], dtype=torch.long),
                                 torch.from_numpy(mask)], 1)
        x, st = torch.from_numpy(noise), torch.zeros(1, ckpt.max_state_dim)
        st[0, : state.shape[0]] = torch.from_numpy(state)
        for t in flow_times(ckpt.num_steps):
            emb = torch.from_numpy(flow_time_embedding(t, ckpt.sizes.expert_width, *ckpt.periods))
            v = expert(*kv, prefix_mask, x, emb) if ckpt.kind == "pi05" else expert(*kv, prefix_mask, st, x, emb)
            x = x - v / ckpt.num_steps
    return x[0, :, : ckpt.action_dim].numpy()


def _parity(staging: Path, ckpt: LeRobotCheckpoint, modules, seed: int) -> dict:
    """Per graph ORT vs PyTorch, then whole chunks: runtime policy vs PyTorch on the same noise."""
    from vla_runtime.runtime.policy import load_policy

    rng = np.random.default_rng(seed)
    graph_err: dict[str, float] = {}
    chunk_err, observations = 0.0, 2
    with load_policy(staging, backend="cpu", verify=False, threads=1) as policy:
        for _ in range(observations):
            images = {v: rng.integers(0, 256, (ckpt.image_size, ckpt.image_size, 3), dtype=np.uint8)
                      for v in ckpt.cameras}
            raw = rng.normal(0.0, 0.5, ckpt.state_dim)
            noise = rng.standard_normal((1, ckpt.chunk_size, ckpt.max_action_dim)).astype(np.float32)
            seen: dict[str, list] = {}
            policy.graph_tap = lambda role, feeds, seen=seen: seen.setdefault(role, []).append(feeds)
            policy.inject_noise(noise)
            state = RobotState(joint_positions=raw[:-1], ee_position=np.zeros(3), ee_orientation=np.zeros(3),
                               gripper=float(raw[-1]), t_read=0.0)
            policy.infer({v: Frame(img, 0.0) for v, img in images.items()}, "pick up the red cube", state)
            policy.graph_tap = None
            for role, module in zip(("vision", "prefill", "expert"), modules, strict=True):
                feeds = seen[role][0]
                got = policy.run_graph(role, feeds)
                with torch.no_grad():
                    want = module(*[torch.from_numpy(np.asarray(v)) for v in feeds.values()])
                want = want if isinstance(want, tuple) else (want,)
                err = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got.values(), want, strict=True))
                graph_err[role] = max(graph_err.get(role, 0.0), err)
            pixels = [policy.preprocess(images[v], v).copy() for v in ckpt.cameras]
            pre = seen["prefill"][0]
            normalized_state = policy.state_vector(state)[0]
            ref = torch_chunk(modules, ckpt, pixels, pre["input_ids"], pre["prompt_mask"], normalized_state, noise)
            chunk_err = max(chunk_err, float(np.abs(policy.last_normalized - ref).max()))
    graphs = {r: {"max_abs_err": e, "passed": e <= GRAPH_TOLERANCE} for r, e in graph_err.items()}
    action = {"max_abs_err": chunk_err, "tolerance": CHUNK_TOLERANCE, "observations": observations,
              "passed": chunk_err <= CHUNK_TOLERANCE}
    return {"runner": "onnxruntime-cpu", "graph_tolerance": GRAPH_TOLERANCE, "graphs": graphs, "action": action,
            "passed": all(g["passed"] for g in graphs.values()) and action["passed"]}


def state_layout(ckpt: LeRobotCheckpoint, names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The robot joints the state lists, then "gripper" (LeRobot keeps the names with the dataset, not
    the policy): given, or joint_0.. by default (map them with --joint-map on the robot)."""
    names = names or tuple(f"joint_{i}" for i in range(ckpt.state_dim - 1)) + ("gripper",)
    if len(names) != ckpt.state_dim:
        raise UserError(f"--state-names lists {len(names)} names but the policy's state has {ckpt.state_dim} values")
    return tuple(names)


def build_from_lerobot(checkpoint: str | Path, tokenizer: str | Path, out_dir: str | Path, seed: int = 0,
                       force: bool = False, state_names: tuple[str, ...] | None = None) -> Path:
    """Export, verify and install a bundle for a LeRobot pi0 / pi0.5 checkpoint folder."""
    from vla_runtime.export.parity import parity_failure

    ckpt = read_checkpoint(checkpoint)
    state_names = state_layout(ckpt, state_names)
    try:
        tok = Tokenizer.from_file(str(tokenizer))
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise UserError(f"{tokenizer}: not a readable tokenizer.json ({exc}); pass the policy's tokenizer "
                        "(LeRobot checkpoints name it, e.g. google/paligemma-3b-pt-224, but do not carry it)") from None
    if tok.get_vocab_size() > ckpt.sizes.vocab:
        raise UserError(f"{tokenizer}: {tok.get_vocab_size()} ids but the checkpoint embeds {ckpt.sizes.vocab}; "
                        "is it the policy's tokenizer?")
    if tok.token_to_id("<bos>") is None:
        raise UserError(f"{tokenizer}: has no <bos> token; PaliGemma prompts start with it")
    out = Path(out_dir).expanduser().absolute()
    check_destination(out, force, error=UserError)
    torch.manual_seed(seed)
    modules = build_pi0(ckpt)
    with staged_directory(out) as staging:
        infos = [export_graph(role, entry, staging) for role, entry in _plan(ckpt, modules).items()]
        shutil.copyfile(tokenizer, staging / TOKENIZER_NAME)
        save_manifest(_manifest(ckpt, tok, infos, staging, seed, {}, state_names), staging)
        start = time.perf_counter()
        report = _parity(staging, ckpt, modules, seed)
        report["seconds"] = round(time.perf_counter() - start, 2)
        failure = parity_failure(report)
        if failure:
            raise UserError(f"parity failed: {failure}; the exported graphs do not reproduce the checkpoint")
        save_manifest(_manifest(ckpt, tok, infos, staging, seed, report, state_names), staging)
    logger.info("bundle written to %s", out)
    return out
