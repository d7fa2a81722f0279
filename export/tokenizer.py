"""Tokenizers for export: our own small BPE with action ids at the end, or a checkpoint's file.

Builds never touch the network, so the reference model gets its own tokenizer: BPE trained
on a built-in corpus of tabletop instructions. As in RT-2, the last 256 vocabulary ids are
the action bins, so the language-model head scores them like any other token.

A user's checkpoint brings its own: a `tokenizers` file (`tokenizer.json`) or a SentencePiece
model (`tokenizer.model`, Gemma style), which is converted here, on the workstation, by
transformers' own converter, so the bundle always carries a `tokenizer.json` the robot reads
without sentencepiece or transformers.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
from pathlib import Path

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


def build_tokenizer(base_vocab: int, bins: int = 256, pad: bool = False) -> Tokenizer:
    """Train BPE to at most `base_vocab` ids (exactly, with `pad`), then append `bins` action tokens as the last ids."""
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
    if pad:
        tok = _padded(tok, base_vocab)
    trained = tok.get_vocab_size()
    tok.add_special_tokens([action_token(j) for j in range(bins)])
    assert tok.token_to_id(action_token(0)) == trained, "action ids must follow the trained vocabulary"
    assert tok.get_vocab_size() == trained + bins
    logger.debug("tokenizer: %d trained ids + %d action ids", trained, bins)
    return tok


def _padded(tok: Tokenizer, size: int) -> Tokenizer:
    """The same BPE with `<unused_i>` vocabulary entries (never produced by a merge) up to `size` ids."""
    doc = json.loads(tok.to_str())
    vocab = doc["model"]["vocab"]
    vocab.update({f"<unused_{i}>": i for i in range(len(vocab), size)})
    return Tokenizer.from_str(json.dumps(doc))


def action_tokens(tok: Tokenizer, bins: int = 256) -> ActionTokens:
    """The action-id convention of this tokenizer; checks <act_j> really is the id of bin j."""
    tokens = ActionTokens.last_ids(tok.get_vocab_size(), bins)
    if any(tok.token_to_id(action_token(j)) != tokens.token_id(j) for j in (0, bins - 1)):
        raise ValueError(f"tokenizer does not end with {bins} action tokens <act_0>..<act_{bins - 1}>")
    return tokens


TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "tokenizer.model"


def has_action_tokens(tok: Tokenizer) -> bool:
    """True when the tokenizer names its action ids `<act_j>` (our own checkpoints do)."""
    return tok.token_to_id(action_token(0)) is not None


def load_tokenizer(directory: Path) -> tuple[Tokenizer, Path]:
    """(tokenizer, the file it came from): `tokenizer.json` first, else a SentencePiece `tokenizer.model`."""
    root = Path(directory)
    path = root / TOKENIZER_JSON
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path)), path
        except Exception as exc:  # tokenizers raises its own Exception subclass for bad JSON
            raise ValueError(f"{path}: not a readable `tokenizers` file ({exc})") from None
    path = root / SENTENCEPIECE_MODEL
    if path.is_file():
        return _from_sentencepiece(root), path
    raise ValueError(f"{root}: no {TOKENIZER_JSON} or {SENTENCEPIECE_MODEL}; copy the model's tokenizer next to it")


def _from_sentencepiece(root: Path) -> Tokenizer:
    """A Gemma SentencePiece BPE model as a `tokenizers` BPE: same ids, checked on sample prompts.

    Gemma's normalisation is fixed (spaces become U+2581, no dummy prefix, byte fallback), so
    only the pieces and their scores are read, through sentencepiece's own API. SentencePiece BPE
    merges the highest-scoring piece first, so every split of a piece into two known pieces
    becomes a merge ranked by the merged piece's score. The result must encode the probe
    prompts exactly as sentencepiece does, or it is refused.
    """
    path = root / SENTENCEPIECE_MODEL
    if importlib.util.find_spec("sentencepiece") is None:
        raise ValueError(f"{path}: converting it needs the sentencepiece package; "
                         "pip install sentencepiece, or save the tokenizer as tokenizer.json")
    import sentencepiece

    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a readable SentencePiece model ({exc})") from None
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    ranked = []  # (score of the merged piece, left id, right id, left, right)
    for piece, i in vocab.items():
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i):
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((sp.get_score(i), vocab[left], vocab[right], left, right))
    ranked.sort(key=lambda m: (-m[0], m[1], m[2]))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in ranked],
                               unk_token=sp.id_to_piece(sp.unk_id()), byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    probes = instruction_corpus()[::97] + ["Pick up the RED block, then stack 3 cubes  twice.", "Z\u00fcrich \u2713"]
    for text in probes:
        if tok.encode(text, add_special_tokens=False).ids != sp.encode(text):
            raise ValueError(f"{path}: is not a Gemma-style BPE model (converted ids differ from sentencepiece "
                             f"on {text!r}); save the tokenizer as tokenizer.json")
    logger.info("converted %s to a tokenizers file (%d ids)", path, tok.get_vocab_size())
    return tok
