"""`--set key.path=value`: edit a parsed robot description before it is checked.

One file then serves several benches and tests (`--set arm.port=/dev/pts/3`,
`--set cameras.front.device=/dev/video2`). The value is read as a TOML literal where it is one
(`3`, `0.5`, `true`, `[0.1, 0.2, 0.3]`, `"text"`, `{kind = "video", path = "a.mp4"}`) and as a
plain string otherwise, so `/dev/ttyUSB1` needs no quotes. Joints are addressed by name or by
their 1-based position: `--set arm.joints.wrist_roll.direction=-1`. Overrides are applied before
validation, so a misspelt key in an override is refused exactly like one in the file.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class OverrideError(ValueError):
    """An override is not `dotted.key=value` or its path runs through something that is not a table."""


def parse_value(text: str) -> Any:
    """A TOML literal's value, or the text itself when it is not one."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(doc: dict, overrides: Sequence[str]) -> dict:
    """A deep copy of `doc` with every `dotted.key=value` applied in order."""
    doc = copy.deepcopy(doc)
    for item in overrides:
        path, sep, raw = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(k.strip() for k in keys):
            raise OverrideError(f"--set {item!r}: write it as dotted.key=value, e.g. --set arm.port=/dev/ttyUSB1")
        keys = [k.strip() for k in keys]
        table = doc
        for depth, key in enumerate(keys[:-1]):
            table = _step(table, key, item, ".".join(keys[: depth + 1]))
        table[keys[-1]] = parse_value(raw.strip())
    return doc


def _step(node: Any, key: str, item: str, where: str) -> dict:
    if isinstance(node, list):  # an array of tables: [[arm.joints]] by name or 1-based position
        for i, entry in enumerate(node):
            if isinstance(entry, dict) and (entry.get("name") == key or key == str(i + 1)):
                return entry
        names = [e.get("name") for e in node if isinstance(e, dict)]
        raise OverrideError(f"--set {item!r}: no entry {key!r} in {where.rsplit('.', 1)[0]}; have {names}")
    child = node.setdefault(key, {})
    if not isinstance(child, (dict, list)):
        raise OverrideError(f"--set {item!r}: {where} is a value ({child!r}), not a table")
    return child
