"""Who may put a policy on this robot: Ed25519 signatures over the seal, checked on board.

The seal (`runtime/seal.py`) proves a bundle is intact; anyone can recompute it. A signature
proves who sealed it. As in RAUC, SWUpdate and TUF, the robot holds public keys only, in a
trust store directory, and refuses at `flash` and at run any bundle that no trusted key
signed. Several keys may be trusted at once, so a signing key is rotated by installing the
new public key on every robot first, then signing with the new key, then removing the old one.

On-disk layout::

    /etc/vla-runtime/trusted-keys/*.pub    PEM Ed25519 public keys (default trust store;
                                           $VLA_RUNTIME_TRUSTED_KEYS or --trusted-keys override)
    BUNDLE/signatures.json                 {"seal": <hex>, "signatures": [{"key_id", "algorithm",
                                           "signature" (base64)}]}; not covered by the seal

A signature signs ``MESSAGE_PREFIX + seal hex``; the prefix keeps a bundle signature from
ever being valid for some other message signed with the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from vla_runtime.runtime.bundle import SIGNATURES_NAME, Bundle, BundleError

logger = logging.getLogger(__name__)

TRUST_ENV = "VLA_RUNTIME_TRUSTED_KEYS"
DEFAULT_TRUST_DIR = Path("/etc/vla-runtime/trusted-keys")
MESSAGE_PREFIX = b"vla-runtime bundle seal v1\n"
ALGORITHM = "ed25519"
MAX_SIGNATURES_BYTES = 64 << 10  # a signatures file holds a few short entries
MAX_KEYS = 64  # public keys read from one trust store
_warned = False  # "signatures are not enforced" is said once per process


class TrustError(BundleError):
    """A bundle is not signed by a key this robot trusts; the message says how to fix it."""


@dataclass(frozen=True)
class TrustStore:
    source: Path  # the directory the keys came from
    keys: dict = field(default_factory=dict)  # key id -> Ed25519PublicKey


def default_trust_dir() -> Path:
    return Path(os.environ.get(TRUST_ENV) or DEFAULT_TRUST_DIR)


def signed_message(seal: str) -> bytes:
    return MESSAGE_PREFIX + seal.encode("ascii")


def key_id(public_key) -> str:
    """Short, stable name of a public key: sha256 of its 32 raw bytes, first 16 hex digits."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def load_public_key(path: Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes()[:16384])
    except (ValueError, TypeError, OSError) as exc:
        raise TrustError(
            f"{path}: not a PEM public key ({type(exc).__name__}); install the .pub file vla-export keygen wrote"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError(f"{path}: not an Ed25519 public key; make keys with `vla-export keygen`")
    return key


def load_trust_store(directory: str | Path | None = None) -> TrustStore | None:
    """The trust store at `directory` (or the default); None when the default does not exist.

    A store that exists but holds no usable key is an error, not "no store": a robot whose
    administrator meant to enforce signatures must never silently run unsigned bundles."""
    explicit = directory is not None
    where = Path(directory).expanduser() if explicit else default_trust_dir()
    if not where.exists():
        if explicit:
            raise TrustError(f"{where}: trust store directory does not exist; create it and copy the .pub key in")
        return None
    if not where.is_dir():
        raise TrustError(f"{where}: trust store is not a directory of *.pub files")
    keys = {}
    for path in sorted(where.glob("*.pub"))[:MAX_KEYS]:
        key = load_public_key(path)
        keys[key_id(key)] = key
    if not keys:
        raise TrustError(f"{where}: trust store holds no *.pub public key; install one (see README: signing)")
    return TrustStore(source=where, keys=keys)


def read_signatures(root: Path) -> tuple[str, list[dict]]:
    """(seal the signatures claim, entries); ([], "") when the bundle is unsigned."""
    path = root / SIGNATURES_NAME
    if not path.exists() and not path.is_symlink():
        return "", []
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_SIGNATURES_BYTES:
        raise TrustError(f"{path}: not a small regular file; re-sign the bundle")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
        seal, entries = doc["seal"], doc["signatures"]
        if not isinstance(seal, str) or not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise TypeError("wrong field types")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise TrustError(f"{path}: malformed signatures file ({type(exc).__name__}); re-sign the bundle") from None
    return seal, entries


def verify_signature(bundle: Bundle, store: TrustStore) -> str:
    """The id of the trusted key whose signature over the bundle's seal verifies; else TrustError."""
    from cryptography.exceptions import InvalidSignature

    name = bundle.root.name
    claimed, entries = read_signatures(bundle.root)
    fix = f"sign it with `vla-export sign BUNDLE --key KEY` using a key trusted in {store.source}"
    if not entries:
        raise TrustError(f"{name}: bundle is not signed and this robot only runs signed bundles; {fix}")
    if claimed != bundle.seal:
        raise TrustError(f"{name}: signatures are for another seal (bundle changed after signing); re-sign it")
    message = signed_message(bundle.seal)
    seen = []
    for entry in entries:
        kid = str(entry.get("key_id", ""))[:32]
        seen.append(kid)
        key = store.keys.get(kid)
        if key is None or entry.get("algorithm") != ALGORITHM:
            continue
        try:
            key.verify(base64.b64decode(str(entry.get("signature", "")), validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            raise TrustError(f"{name}: signature by trusted key {kid} does not verify; the bundle was altered "
                             "after signing or the signature is forged, re-sign it") from None
        return kid
    raise TrustError(f"{name}: signed only by unknown key(s) {seen}; trusted here: {sorted(store.keys)}; "
                     f"install the signer's .pub in {store.source} or re-sign with a trusted key")


def enforce(bundle: Bundle, trusted_keys: str | Path | None = None) -> str | None:
    """Refuse the bundle unless the trust store (if any) vouches for it; the signer's key id or None."""
    global _warned
    store = load_trust_store(trusted_keys)
    if store is None:
        if not _warned:
            logger.warning("signatures are not enforced: no trust store at %s (see README: signing)",
                           default_trust_dir())
            _warned = True
        return None
    kid = verify_signature(bundle, store)
    logger.info("bundle signed by trusted key %s", kid)
    return kid
