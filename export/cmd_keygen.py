"""`vla-export keygen --out DIR`: an Ed25519 key pair for signing bundles."""

from __future__ import annotations

from vla_runtime.common.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles (NAME.key + NAME.pub)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the key pair (created if missing)")
    p.add_argument("--name", default="vla-signing", help="file name stem (default vla-signing)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from vla_runtime.export.signing import SigningError, keygen

    try:
        private, public, kid = keygen(args.out, args.name)
    except (SigningError, OSError) as exc:
        raise UserError(str(exc)) from None
    print(f"private key: {private}  (keep secret: CI secret store, never on a robot)")
    print(f"public key:  {public}  (copy to /etc/vla-runtime/trusted-keys/ on each robot)")
    print(f"key id:      {kid}")
    return 0
