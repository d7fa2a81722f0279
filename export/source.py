"""What a build starts from: the model to export, its tokenizer and statistics, and its parity reference.

Presets and both checkpoint layouts (ours in checkpoint.py, Hugging Face PaliGemma in
hf_checkpoint.py) all produce a `Source`, so the build never asks where a model came from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from tokenizers import Tokenizer
from vla_runtime.export.model import ReferenceVLA
from vla_runtime.export.norm_stats import NormStats
from vla_runtime.export.presets import VLAConfig
from vla_runtime.export.tokenizer import PROMPT_TEMPLATE

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete or inconsistent; the message names the file and fix."""


@dataclass(frozen=True)
class Source:
    """Everything a build needs, from a preset or a checkpoint."""

    cfg: VLAConfig
    model: ReferenceVLA  # what is exported, rebuilt from the config
    tokenizer: Tokenizer
    norm: NormStats
    origin: str  # human description: "preset tiny, seed 0" or "checkpoint <dir name>"
    # Loads the model parity compares against, when it is not `model` itself: for a Hugging Face
    # checkpoint, the backbone transformers loads from the directory. Called once, after export.
    reference: Callable[[], ReferenceVLA] | None = None
    prompt_template: str = PROMPT_TEMPLATE  # the prompt the model was trained with ("{task}" filled in)
    state_norm: NormStats | None = None  # the measured state the model reads (cfg.state_dim values), if any

    @property
    def reference_label(self) -> str:
        """What parity compared against, for the manifest's parity report."""
        if self.reference is None:
            return "the exported model itself (built from the same config and weights)"
        return "transformers from_pretrained(checkpoint directory), loaded independently of the export"

    def reference_model(self) -> ReferenceVLA:
        """The parity reference: an independently loaded model, or the exported one for presets."""
        return self.model if self.reference is None else self.reference()
