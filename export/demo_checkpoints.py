"""The trained demo checkpoints shipped inside the package (export/checkpoints/demo-<head>/).

They are behaviour-cloned on the scripted expert's simulator demonstrations (README, "Trained
demo policy", gives the exact commands), small enough to ship, and the source of the embedded
default bundle, so a first run picks up the block it is told to.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from vla_runtime.export.checkpoint import CONFIG_FILE, CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"  # inside the vla_runtime.export package


def shipped_heads() -> tuple[str, ...]:
    """Heads with a trained demo checkpoint in this installation."""
    root = Path(str(resources.files("vla_runtime.export").joinpath(CHECKPOINTS_DIR)))
    if not root.is_dir():
        return ()
    return tuple(sorted(p.name.removeprefix("demo-") for p in root.glob("demo-*") if (p / CONFIG_FILE).is_file()))


def shipped_checkpoint(head: str) -> Path:
    """The directory of the trained demo checkpoint for `head`; one clear line when there is none."""
    path = Path(str(resources.files("vla_runtime.export").joinpath(CHECKPOINTS_DIR, f"demo-{head}")))
    if not (path / CONFIG_FILE).is_file():
        have = ", ".join(shipped_heads()) or "none"
        raise CheckpointError(f"no trained demo checkpoint for the {head!r} head (shipped: {have}); "
                              "train one with `vla-export train` or drop --demo-checkpoint")
    return path
