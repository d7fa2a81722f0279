"""TensorRT optimization profiles: the (min, opt, max) shape of every dynamic input, per graph.

One generator for both ways of reaching TensorRT: `vla-export engine` (native engines) and the
onnxruntime TensorRT provider (engines it builds itself). Without explicit profiles TensorRT
builds for the first shapes it sees and rebuilds whenever a shape leaves that range, so the
decode loop's growing KV cache would stall the first ticks with engine builds.

The ranges follow from the bundle's contract: prompts are 1..max_tokens ids after N image
tokens (`seq`), the flow prefix is image + prompt (`context`), and a decode step reads the KV
cache from the prefill length up to the last action token (`past`), and a resize graph takes
camera frames up to 3840x2160 (`image_height`, `image_width`). Dynamic axes are known by
the exporter's symbol names; an axis named otherwise is recognised by its position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vla_runtime.runtime.manifest import GraphSpec, Manifest, run_roles

Range = tuple[int, int, int]  # (min, opt, max) of one dimension
Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # (min, opt, max) shape of one input

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# (role, input name or prefix*, axis) -> range name, for exporters that name the axis otherwise
_POSITIONAL = {
    ("prefill", "input_ids", 1): "seq",
    ("velocity", "context", 1): "context",
    ("decode", "past_key_values.*", 2): "past",
}


class ProfileError(ValueError):
    """A dynamic axis has no known range; one line naming the flag that supplies it."""


def symbol_ranges(manifest: Manifest, opt_prompt: int | None = None,
                  overrides: Mapping[str, Range] | None = None) -> dict[str, Range]:
    """(min, opt, max) for every dynamic axis name the exporter uses; `overrides` win.

    `opt_prompt` is the token count of a typical task (half the maximum when not given).
    """
    n = int(manifest.graphs["prefill"].input("image_embeds").shape[1])  # image tokens N
    t_max = manifest.prompt.max_tokens
    t_opt = max(1, min(opt_prompt if opt_prompt is not None else t_max // 2, t_max))
    steps = manifest.action.dim * manifest.action.horizon if manifest.head == "tokens" else 0  # greedy tokens
    ranges = {
        "seq": (1, t_opt, t_max),
        "context": (n + 1, n + t_opt, n + t_max),
        "past": (n + 1, n + t_opt + steps // 2, n + t_max + max(steps, 1)),
        # camera frames into a resize graph: any size up to 4K UHD, tuned for 480p and up
        "image_height": (1, 480, 2160),
        "image_width": (1, 854, 3840),
    }
    for name, (lo, opt, hi) in dict(overrides or {}).items():
        if not (1 <= lo <= opt <= hi):
            raise ProfileError(f"--shape {name}={lo}:{opt}:{hi} needs 1 <= min <= opt <= max")
        ranges[name] = (lo, opt, hi)
    return ranges


def _positional(role: str, name: str, axis: int) -> str | None:
    for (r, n, a), symbol in _POSITIONAL.items():
        if r == role and a == axis and (n == name or (n.endswith("*") and name.startswith(n[:-1]))):
            return symbol
    return None


def profile_shapes(spec: GraphSpec, ranges: Mapping[str, Range]) -> dict[str, Shapes]:
    """input name -> (min shape, opt shape, max shape) for one optimization profile."""
    shapes = {}
    for tensor in spec.inputs:
        dims: list[list[int]] = [[], [], []]
        for axis, d in enumerate(tensor.shape):
            if isinstance(d, int) and d >= 0:
                bounds: Range = (d, d, d)
            else:
                name = str(d).strip()
                key = name if name in ranges else _positional(spec.role, tensor.name, axis)
                if key is None or key not in ranges:
                    flag = name if _SYMBOL.match(name) else "NAME"
                    raise ProfileError(
                        f"graph {spec.role!r} input {tensor.name!r} has dynamic axis {name!r} with no known range; "
                        f"pass --shape {flag}=MIN:OPT:MAX"
                    )
                bounds = ranges[key]
            for k in range(3):
                dims[k].append(int(bounds[k]))
        shapes[tensor.name] = (tuple(dims[0]), tuple(dims[1]), tuple(dims[2]))
    return shapes


def bundle_profiles(manifest: Manifest, opt_prompt: int | None = None,
                    overrides: Mapping[str, Range] | None = None, dynamic_only: bool = False) -> dict[str, dict]:
    """role -> profile_shapes for every graph the head runs.

    `dynamic_only` keeps only inputs with a dynamic axis, and graphs that have one (the
    onnxruntime provider takes the rest from the model; a native engine build wants them all).
    """
    ranges = symbol_ranges(manifest, opt_prompt, overrides)
    out = {}
    for role in run_roles(manifest):
        shapes = profile_shapes(manifest.graphs[role], ranges)
        if dynamic_only:
            shapes = {name: s for name, s in shapes.items() if s[0] != s[2]}
        if shapes:
            out[role] = shapes
    return out


def max_shapes(profile: Mapping[str, Shapes]) -> dict[str, tuple[int, ...]]:
    """input name -> the largest shape the profile admits (what buffers are sized for)."""
    return {name: tuple(shapes[2]) for name, shapes in profile.items()}
