"""Prompt ids from the bundle's tokenizer file: same ids as the exporter, cached per task."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_policy_zoo import SPECIALS, TEMPLATE, WORDS, build_tokenizer
from vla_runtime.export import tokenizer as exporter_tokenizer
from vla_runtime.runtime.manifest import Prompt
from vla_runtime.runtime.tokenizer import PromptTokenizer


@pytest.fixture
def zoo_tokenizer(tmp_path):
    path = tmp_path / "tokenizer.json"
    build_tokenizer(path)
    return path


def test_ids_are_bos_then_the_rendered_template(zoo_tokenizer):
    tok = PromptTokenizer(Prompt(template=TEMPLATE, tokenizer_file="tokenizer.json", bos_token_id=1), zoo_tokenizer)
    vocab = {t: i for i, t in enumerate(SPECIALS + list(dict.fromkeys(WORDS)))}
    task = "pick up the red block"
    want = [1] + [vocab[w] for w in TEMPLATE.format(task=task).split()]
    ids = tok(task)
    assert ids.dtype == np.int64 and ids.shape == (1, len(want))
    assert ids[0].tolist() == want


def test_without_bos_nothing_is_prepended(zoo_tokenizer):
    tok = PromptTokenizer(Prompt(template="{task}", tokenizer_file="t.json", bos_token_id=None), zoo_tokenizer)
    words = list(dict.fromkeys(WORDS))
    assert tok("red cup")[0].tolist() == [len(SPECIALS) + words.index(w) for w in ("red", "cup")]


def test_ids_are_cached_per_task_and_read_only(zoo_tokenizer):
    tok = PromptTokenizer(Prompt(template=TEMPLATE, tokenizer_file="t.json", bos_token_id=1), zoo_tokenizer)
    a, b = tok("push the cup"), tok("push the cup")
    assert a is b
    assert not a.flags.writeable
    assert tok("place the bowl") is not a


def test_long_prompts_are_truncated_with_a_warning(zoo_tokenizer, caplog):
    tok = PromptTokenizer(Prompt(template=TEMPLATE, tokenizer_file="t.json", bos_token_id=1, max_tokens=5),
                          zoo_tokenizer)
    with caplog.at_level(logging.WARNING):
        ids = tok("pick up the red block in the blue bowl")
    assert ids.shape == (1, 5) and ids[0, 0] == 1
    assert "truncated to 5" in caplog.text


def test_empty_task_is_refused(zoo_tokenizer):
    tok = PromptTokenizer(Prompt(template=TEMPLATE, tokenizer_file="t.json"), zoo_tokenizer)
    with pytest.raises(ValueError, match="non-empty instruction"):
        tok("   ")


def test_unreadable_tokenizer_file_names_the_fix(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="rebuild the bundle") as err:
        PromptTokenizer(Prompt(template=TEMPLATE, tokenizer_file="tokenizer.json"), bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("task", ["pick up the red block", "Stack the PURPLE cube behind the box!",
                                  "rotate the spoon " * 20])
def test_encodes_the_exporters_tokenizer_and_template(tmp_path, task):
    tok = exporter_tokenizer.build_tokenizer(base_vocab=320)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    bos = tok.token_to_id(exporter_tokenizer.BOS)
    prompt = Prompt(template=exporter_tokenizer.PROMPT_TEMPLATE, tokenizer_file="tokenizer.json",
                    bos_token_id=bos, max_tokens=48)
    ids = PromptTokenizer(prompt, path)(task)[0].tolist()
    assert ids[0] == bos and 1 < len(ids) <= 48
    text = tok.decode(ids[1:])
    full = exporter_tokenizer.PROMPT_TEMPLATE.format(task=task).lower()
    assert full.startswith(text) and (len(ids) == 48 or text == full)
