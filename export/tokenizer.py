"""A small BPE tokenizer trained offline on robot instructions, with 256 action ids at the end.

Builds never touch the network, so the reference model gets its own tokenizer: BPE trained
on a built-in corpus of tabletop instructions. As in OpenVLA, the last 256 vocabulary ids are
the action bins, so the language-model head scores them like any other token.
"""

from __future__ import annotations

import itertools
import logging

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from vla_runtime.runtime.conventions import DEFAULT_PROMPT_TEMPLATE, ActionTokens

logger = logging.getLogger(__name__)

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIALS = (PAD, EOS, BOS, UNK)  # ids 0..3
PROMPT_TEMPLATE = DEFAULT_PROMPT_TEMPLATE  # what the instruction corpus and the bundles use

_VERBS = ("pick up", "put", "move", "push", "place", "grab", "lift", "open", "close", "stack", "slide", "rotate")
_COLOURS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple")
_OBJECTS = ("block", "cube", "cup", "bowl", "drawer", "sponge", "can", "bottle", "lid", "spoon", "towel", "plate")
_PLACES = (
    "on the table",
    "into the bowl",
    "onto the plate",
    "next to the cup",
    "to the left",
    "to the right",
    "in the drawer",
    "behind the box",
)


_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'-()/\u2581"


def instruction_corpus() -> list[str]:
    """Deterministic tabletop instructions, wrapped in the prompt template the bundle uses."""
    lines = []
    for verb, colour, obj, place in itertools.product(_VERBS, _COLOURS, _OBJECTS, _PLACES):
        lines.append(PROMPT_TEMPLATE.format(task=f"{verb} the {colour} {obj} {place}"))
    return lines


def action_token(bin_index: int) -> str:
    return f"<act_{bin_index}>"


def build_tokenizer(base_vocab: int, bins: int = 256) -> Tokenizer:
    """Train BPE to at most `base_vocab` ids, then append `bins` action tokens as the last ids."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=base_vocab,
        special_tokens=list(SPECIALS),
        initial_alphabet=list(_ALPHABET),  # any lowercase word still tokenizes, letter by letter
        show_progress=False,
    )
    tok.train_from_iterator(instruction_corpus(), trainer=trainer)
    trained = tok.get_vocab_size()
    tok.add_special_tokens([action_token(j) for j in range(bins)])
    assert tok.token_to_id(action_token(0)) == trained, "action ids must follow the trained vocabulary"
    assert tok.get_vocab_size() == trained + bins
    logger.debug("tokenizer: %d trained ids + %d action ids", trained, bins)
    return tok


def action_tokens(tok: Tokenizer, bins: int = 256) -> ActionTokens:
    """The action-id convention of this tokenizer; checks <act_j> really is the id of bin j."""
    tokens = ActionTokens.last_ids(tok.get_vocab_size(), bins)
    if any(tok.token_to_id(action_token(j)) != tokens.token_id(j) for j in (0, bins - 1)):
        raise ValueError(f"tokenizer does not end with {bins} action tokens <act_0>..<act_{bins - 1}>")
    return tokens
