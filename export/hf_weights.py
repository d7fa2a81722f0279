"""Safetensors weights, single file or sharded, streamed into a module with one-line errors.

A checkpoint's tensors live in `model.safetensors`, or in shards named by
`model.safetensors.index.json` (`{"weight_map": {tensor name: shard file}}`, as transformers'
`save_pretrained` writes it). `load_into` copies them tensor by tensor into a module that was
built from the checkpoint's config, so memory holds one tensor at a time on top of the model,
and every expected tensor is checked: the first missing, mis-shaped or unexpected one is named
with the file it was looked for in, its expected shape and the shape found.

Checkpoints written by older transformers versions (and those on the model hub) use older key
names (`language_model.model.*`, `vision_tower.vision_model.*`); transformers' own renaming
table maps them, so a checkpoint loads here exactly when `from_pretrained` accepts it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

logger = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class WeightsError(ValueError):
    """A weight file is missing, unreadable, or does not fit the model its config describes."""


class WeightFiles:
    """Which file holds which tensor: one safetensors file, or the shards an index names."""

    def __init__(self, root: Path, single: str = SINGLE_FILE, index: str = INDEX_FILE):
        self.root = Path(root)
        if (self.root / index).is_file():
            self.described_by = self.root / index
            self.where = self._read_index(self.described_by)  # tensor name -> shard path
        elif (self.root / single).is_file():
            self.described_by = self.root / single
            self.where = {name: self.described_by for name in _keys(self.described_by)}
        else:
            raise WeightsError(f"{self.root}: neither {single} nor {index} found; the checkpoint has no weights")

    def _read_index(self, path: Path) -> dict[str, Path]:
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WeightsError(f"{path}: not a safetensors index (no readable 'weight_map': {exc})") from None
        shards = {str(f) for f in weight_map.values()}
        for shard in sorted(shards):
            if not (self.root / shard).is_file():
                raise WeightsError(f"{self.root / shard}: missing; {path.name} names it as a shard")
        return {str(name): self.root / str(f) for name, f in weight_map.items()}

    def by_file(self, names: list[str]) -> Iterator[tuple[Path, list[str]]]:
        """(file, the given names it holds), one file at a time, so each is opened once."""
        groups: dict[Path, list[str]] = {}
        for name in names:
            groups.setdefault(self.where[name], []).append(name)
        yield from groups.items()


def _keys(path: Path) -> list[str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # safetensors raises its own error type for a damaged header
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def transformers_renamer(model: nn.Module) -> Callable[[str], str]:
    """Checkpoint key -> this transformers model's key, by transformers' own renaming table."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # an older transformers: keys are used as written
        return lambda key: key
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    meta = dict.fromkeys(model.state_dict())  # only its keys are read
    prefix = getattr(model, "base_model_prefix", None)
    return lambda key: rename_source_key(key, renamings, converters, prefix, meta)[0]


def _tied_groups(module: nn.Module, prefixes: tuple[str, ...]) -> list[list[str]]:
    """State-dict names grouped by the tensor they share (tied embeddings hold one tensor, several names)."""
    groups: dict[tuple[int, int], list[str]] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if prefixes and not name.startswith(prefixes):
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else (id(tensor), 0)
        groups.setdefault(key, []).append(name)
    return list(groups.values())


@torch.no_grad()
def load_into(
    module: nn.Module,
    files: WeightFiles,
    rename: Callable[[str], str] = lambda key: key,
    prefixes: tuple[str, ...] = (),
    config_name: str = "config.json",
) -> int:
    """Copy every tensor of `module` (those under `prefixes`, or all) from `files`; returns the count.

    Raises WeightsError naming the first missing, mis-shaped or unexpected tensor. Values are
    cast to the module's dtype (a bf16 checkpoint loads into an fp32 model).
    """
    target = module.state_dict(keep_vars=True)
    groups = _tied_groups(module, prefixes)
    wanted = {name for group in groups for name in group}
    source_of: dict[str, str] = {}  # module name -> checkpoint name
    for key in files.where:
        name = rename(key)
        if name not in wanted:
            raise WeightsError(
                f"{files.where[key]}: tensor {key!r} is not part of the model {config_name} describes; "
                "is this the checkpoint that config belongs to?"
            )
        source_of[name] = key
    for group in groups:
        present = [n for n in group if n in source_of]
        if not present:
            shape = list(target[group[0]].shape)
            raise WeightsError(
                f"{files.described_by}: no tensor {group[0]!r} (expected shape {shape} from {config_name}); "
                "the weights are incomplete or belong to another config"
            )
        for extra in present[1:]:  # a tied copy saved twice is fine when it is not used
            source_of.pop(extra)
    copied = 0
    by_key = {key: name for name, key in source_of.items()}  # checkpoint name -> module name
    for path, keys in files.by_file(sorted(by_key)):
        with safe_open(str(path), framework="pt") as f:
            for key in keys:
                name = by_key[key]
                expected = tuple(target[name].shape)
                found = tuple(f.get_slice(key).get_shape())
                if found != expected:
                    raise WeightsError(
                        f"{path}: tensor {key!r} has shape {list(found)} but {config_name} expects {list(expected)}"
                    )
                target[name].copy_(f.get_tensor(key))
                copied += 1
    logger.info("loaded %d tensors from %s", copied, files.described_by)
    return copied
