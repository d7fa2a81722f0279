"""Make signing keys and sign bundles (workstation / CI side; robots only verify).

The private key never goes to a robot: CI holds it as a secret file, robots hold the public
half in their trust store (`runtime/trust.py`, which also defines what is signed).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from vla_runtime.runtime.bundle import SIGNATURES_NAME, open_bundle
from vla_runtime.runtime.trust import ALGORITHM, TrustError, key_id, read_signatures, signed_message


class SigningError(ValueError):
    """A key or bundle cannot be used for signing; one line with the fix."""


def keygen(out_dir: str | Path, name: str = "vla-signing") -> tuple[Path, Path, str]:
    """Write NAME.key (private, mode 0600) and NAME.pub into out_dir; refuse to overwrite."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    out = Path(out_dir).expanduser()
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path}: already exists; keys are never overwritten, choose another --out or --name")
    out.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, key_id(private.public_key())


def load_private_key(path: str | Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    path = Path(path).expanduser()
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningError(f"{path}: not a readable PEM private key ({type(exc).__name__}); "
                           "pass the .key file `vla-export keygen` wrote") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 private key; make one with `vla-export keygen`")
    return key


def sign_bundle(bundle_dir: str | Path, key_path: str | Path) -> tuple[str, str]:
    """Verify the bundle, then add (or replace) this key's signature over its seal; (key id, seal)."""
    bundle = open_bundle(bundle_dir)  # never sign something that does not verify
    private = load_private_key(key_path)
    kid = key_id(private.public_key())
    try:
        claimed, entries = read_signatures(bundle.root)
    except TrustError:
        claimed, entries = "", []
    kept = [e for e in entries if claimed == bundle.seal and e.get("key_id") != kid]
    signature = base64.b64encode(private.sign(signed_message(bundle.seal))).decode("ascii")
    kept.append({"key_id": kid, "algorithm": ALGORITHM, "signature": signature})
    path = bundle.root / SIGNATURES_NAME
    tmp = path.with_name(f".{SIGNATURES_NAME}.tmp")
    tmp.write_text(json.dumps({"seal": bundle.seal, "signatures": kept}, indent=2) + "\n")
    os.replace(tmp, path)
    return kid, bundle.seal
