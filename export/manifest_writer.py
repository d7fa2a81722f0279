"""Assemble the bundle manifest from what the build actually produced.

Every value is read from the model, tokenizer, exported graphs or installed tools, never
typed in twice: graph I/O specs come from the ONNX files, the preprocessing constants from
the vision config, the action ids from the tokenizer.
"""

from __future__ import annotations

import logging
import platform
from importlib import metadata
from pathlib import Path

from vla_runtime.export.model import count_parameters
from vla_runtime.export.onnx_export import OPSET, GraphInfo
from vla_runtime.export.precision import dtype_name
from vla_runtime.export.source import Source
from vla_runtime.export.tokenizer import BOS
from vla_runtime.runtime.bundle import hash_tree
from vla_runtime.runtime.conventions import bin_centres
from vla_runtime.runtime.manifest import (
    DEFAULT_CAMERA_VIEWS,
    SCHEMA_VERSION,
    ActionSpace,
    Control,
    DecodeSettings,
    GraphSpec,
    Manifest,
    Normalization,
    Preprocess,
    Prompt,
    SafetyDefaults,
    StateSpace,
    Target,
    TensorSpec,
)

logger = logging.getLogger(__name__)

TOKENIZER_NAME = "tokenizer.json"
MAX_PROMPT_TOKENS = 48  # ids incl. BOS; the prefill graph's prompt axis accepts up to 512
CONTROL_RATE_HZ = 10.0
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values


def siglip_preprocess(image_size: int, views: tuple[str, ...] = DEFAULT_CAMERA_VIEWS) -> Preprocess:
    """The constants transformers' SigLIP image processor applies, read from it rather than retyped."""
    from transformers.models.siglip.image_processing_siglip import SiglipImageProcessor as Processor

    resample = _PIL_RESAMPLE.get(int(Processor.resample))
    if resample is None:
        raise ValueError(f"SigLIP processor resample {Processor.resample!r} has no runtime equivalent")
    return Preprocess(
        image_size=image_size,
        rescale_factor=float(Processor.rescale_factor),
        image_mean=tuple(float(v) for v in Processor.image_mean),
        image_std=tuple(float(v) for v in Processor.image_std),
        resample=resample,
        camera_views=tuple(views),  # the robot's [cameras.NAME] views, in the model's prefix order
    )


def state_space(stats) -> StateSpace:
    """The measured state the model reads (NormStats of the state, or None: it reads none)."""
    if stats is None:
        return StateSpace()
    n = Normalization(kind=stats.kind, low=stats.low, high=stats.high, mean=stats.mean, std=stats.std, mask=stats.mask)
    return StateSpace(names=stats.names, units=stats.units, normalization=n)


def tool_versions() -> dict:
    versions = {"opset": OPSET, "python": platform.python_version()}
    for dist in ("vla-runtime", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "tokenizers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def graph_spec_of(info: GraphInfo, precision: str) -> GraphSpec:
    def tensors(infos):
        return tuple(TensorSpec(t.name, t.dtype, tuple(t.shape)) for t in infos)

    return GraphSpec(
        role=info.role,
        file=info.file,
        precision=precision,  # the weights' dtype; graph inputs and outputs stay float32
        inputs=tensors(info.inputs),
        outputs=tensors(info.outputs),
        data_files=info.data_files,
    )


def build_manifest(source: Source, graphs: list[GraphInfo], bundle_dir: Path, seed: int, parity: dict) -> Manifest:
    """A validated Manifest for the files now in `bundle_dir` (hashes taken here)."""
    cfg, norm, tok = source.cfg, source.norm, source.tokenizer
    pg = source.model.vlm.config
    dtype = dtype_name(source.model)
    action = ActionSpace(
        dim=cfg.action_dim,
        horizon=cfg.horizon,
        names=norm.names,
        units=norm.units,
        kind=norm.space,
        normalization=Normalization(
            kind=norm.kind, low=norm.low, high=norm.high, mean=norm.mean, std=norm.std, mask=norm.mask
        ),
        bins=cfg.bins,
        action_token_offset=source.model.tokens.offset,
        action_token_order=source.model.tokens.order,
        bin_centres=tuple(float(c) for c in bin_centres(cfg.bins)) if cfg.head != "flow" else (),
    )
    decode = DecodeSettings(
        head=cfg.head,
        flow_steps=cfg.flow_steps,
        noise_seed=seed,
        condition_on_past_action=cfg.condition_on_past_action if cfg.head == "parallel" else False,
        num_layers=cfg.text_layers,
        num_kv_heads=cfg.text_kv_heads,
        head_dim=cfg.head_dim,
    )
    model_info = {
        "name": f"reference-vla-{cfg.preset}-{cfg.head}",
        "architecture": "PaliGemma (SigLIP vision + Gemma decoder)",
        "preset": cfg.preset,
        "head": cfg.head,
        "source": source.origin,
        "seed": seed,
        "parameters": count_parameters(source.model),
        "dtype": dtype,  # export precision of every graph's weights (fp32 | fp16 | bf16)
        "vocab_size": source.model.vocab_size,
        "image_tokens": cfg.prefix_image_tokens,
        "hidden_size": cfg.text_hidden,
        "config": cfg.to_json(),
        "export_seconds": {g.role: g.seconds for g in graphs},
    }
    return Manifest(
        schema_version=SCHEMA_VERSION,
        model=model_info,
        graphs={g.role: graph_spec_of(g, dtype) for g in graphs},
        preprocess=siglip_preprocess(pg.vision_config.image_size, cfg.views),
        prompt=Prompt(
            template=source.prompt_template,
            tokenizer_file=TOKENIZER_NAME,
            bos_token_id=tok.token_to_id(BOS),
            max_tokens=MAX_PROMPT_TOKENS,
        ),
        action=action,
        decode=decode,
        control=Control(rate_hz=CONTROL_RATE_HZ, replan_every=max(1, cfg.horizon // 2)),
        safety=SafetyDefaults(),
        target=Target(kind="cpu"),
        files=hash_tree(bundle_dir),
        parity=parity,
        versions=tool_versions(),
        state=state_space(source.state_norm),
    )
