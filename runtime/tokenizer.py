"""Task string -> prompt ids with the bundle's own `tokenizers` file and template, no transformers.

The ids must be exactly those the exporter traced and verified with: the prompt convention in
`vla_runtime.runtime.conventions.prompt_ids` over the tokenizer's own pre-tokenization, with no
special tokens added by the tokenizer's post-processor. The task is the same tick after tick,
so each task's ids are computed once and the same array is returned.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from vla_runtime.runtime.conventions import prompt_ids
from vla_runtime.runtime.manifest import Prompt

logger = logging.getLogger(__name__)

_CACHE_LIMIT = 64  # distinct task strings remembered (an operator may switch tasks)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A bundle's `tokenizers` JSON file, or a ValueError naming it and the fix."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception subclass for bad JSON
        raise ValueError(f"{path}: not a readable `tokenizers` JSON file ({exc}); rebuild the bundle") from None


class PromptTokenizer:
    """Renders the manifest's prompt template and encodes it to input_ids int64 [1, T]."""

    def __init__(self, prompt: Prompt, tokenizer_path: str | Path):
        self.prompt = prompt
        self._tok = load_tokenizer(tokenizer_path)
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
        p = self.prompt
        ids = prompt_ids(self._encode_text, p.template, task, p.bos_token_id, p.max_tokens)
        out = np.asarray(ids, dtype=np.int64).reshape(1, -1)  # [1, T]
        out.setflags(write=False)
        logger.debug("prompt for %r -> %d ids", task, out.shape[1])
        return out

    def _encode_text(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids
