"""The seal: one sha256 over the canonical manifest, which itself lists every file's sha256.

Hashing the files alone left the manifest open: raising a safety limit, scaling the action
normalisation or flipping the INT8 gate verdict changed what the robot does while every file
still verified. The seal closes that, and it is what a signature signs.

Layout inside ``manifest.json``::

    "seal": {
      "algorithm": "sha256",
      "digest": "<hex>",          sha256 of the canonical manifest without the "seal" key
      "fields": {"safety.max_translation_step": "<hex>", "files.vision.onnx": "<hex>", ...}
    }

``fields`` holds one digest per top-level field and per second-level key, so a broken seal
names what changed ("safety.max_translation_step changed") instead of only "tampered". The
canonical form is JSON with sorted keys and no whitespace; float text is Python's shortest
round-trip repr, so the writer and the reader produce the same bytes from the same values.
A seal proves integrity, not origin: anyone can recompute it, which is why robots that must
know who built a bundle also check a signature over it (`runtime/trust.py`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

SEAL_KEY = "seal"
ALGORITHM = "sha256"


class SealError(ValueError):
    """The manifest does not match its seal; the message names the changed fields."""


def canonical(value: Any) -> bytes:
    """The one byte form every digest is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def unsealed(doc: Mapping) -> dict:
    """The manifest as sealed: every field except the seal itself."""
    return {k: v for k, v in doc.items() if k != SEAL_KEY}


def field_digests(doc: Mapping) -> dict[str, str]:
    """Digest per top-level field and per second-level key (diagnosis only; the seal is `digest`)."""
    out: dict[str, str] = {}
    for key, value in unsealed(doc).items():
        out[key] = _digest(value)
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                out[f"{key}.{sub}"] = _digest(inner)
    return out


def make_seal(doc: Mapping) -> dict:
    """The seal record for a manifest document (any existing seal is ignored)."""
    body = unsealed(doc)
    return {"algorithm": ALGORITHM, "digest": _digest(body), "fields": field_digests(body)}


def check_seal(doc: Mapping) -> str:
    """Return the seal digest when the manifest matches it; raise SealError naming what changed."""
    seal = doc.get(SEAL_KEY)
    if not isinstance(seal, Mapping) or not isinstance(seal.get("digest"), str):
        raise SealError("manifest is not sealed; rebuild the bundle with this version of vla-export")
    if seal.get("algorithm") != ALGORITHM:
        raise SealError(f"seal algorithm {seal.get('algorithm')!r} is not {ALGORITHM}; rebuild the bundle")
    body = unsealed(doc)
    digest = _digest(body)
    if digest == seal["digest"]:
        return digest
    recorded = seal.get("fields") if isinstance(seal.get("fields"), Mapping) else {}
    now = field_digests(body)
    changed = _changed(recorded, now)
    what = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    if not changed:
        what = "the seal record itself"
    raise SealError(
        f"seal broken: {what} changed since the bundle was sealed; the manifest was edited after "
        "build, so rebuild (or re-quantize / re-sign) the bundle instead of editing it"
    )


def _changed(recorded: Mapping, now: Mapping) -> list[str]:
    """Most specific changed field names: a second-level key rather than its parent."""
    names = sorted(set(recorded) | set(now))
    diff = [n for n in names if recorded.get(n) != now.get(n)]
    return [n for n in diff if not any(d.startswith(n + ".") for d in diff)]
