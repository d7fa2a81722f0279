"""Task string -> prompt ids with the bundle's own `tokenizers` file and template, no transformers.

The ids must be exactly those the exporter traced and verified with: the template from the
manifest, the tokenizer's own pre-tokenization, no special tokens added by the tokenizer's
post-processor (the manifest says whether a BOS goes first), then truncation. The task is the
same tick after tick, so each task's ids are computed once and the same array is returned.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from vla_runtime.runtime.manifest import Prompt

logger = logging.getLogger(__name__)

_CACHE_LIMIT = 64  # distinct task strings remembered (an operator may switch tasks)


class PromptTokenizer:
    """Renders the manifest's prompt template and encodes it to input_ids int64 [1, T]."""

    def __init__(self, prompt: Prompt, tokenizer_path: str | Path):
        self.prompt = prompt
        try:
            self._tok = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises its own Exception subclass for bad JSON
            raise ValueError(
                f"{tokenizer_path}: not a readable `tokenizers` JSON file ({exc}); rebuild the bundle"
            ) from None
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, task: str) -> np.ndarray:
        """input_ids int64 [1, T]; the same read-only array for the same task."""
        ids = self._cache.get(task)
        if ids is None:
            ids = self._encode(task)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.pop(next(iter(self._cache)))
            self._cache[task] = ids
        return ids

    def _encode(self, task: str) -> np.ndarray:
        if not isinstance(task, str) or not task.strip():
            raise ValueError("task must be a non-empty instruction, e.g. --task \"pick up the red block\"")
        text = self.prompt.template.format(task=task)
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if self.prompt.bos_token_id is not None:
            ids = [self.prompt.bos_token_id] + ids
        if len(ids) > self.prompt.max_tokens:
            logger.warning(
                "prompt for task %r is %d tokens; truncated to %d (prompt.max_tokens)",
                task, len(ids), self.prompt.max_tokens,
            )
            ids = ids[: self.prompt.max_tokens]
        out = np.asarray(ids, dtype=np.int64).reshape(1, -1)  # [1, T]
        out.setflags(write=False)
        logger.debug("prompt %r -> %d ids", text, out.shape[1])
        return out
