"""`vla-export sign BUNDLE --key KEY`: add a detached Ed25519 signature over the bundle's seal."""

from __future__ import annotations

from vla_runtime.common.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("sign", help="sign a bundle's seal with an Ed25519 private key (robots verify it)")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    p.add_argument("--key", required=True, metavar="KEY", help="private key file from `vla-export keygen`")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from vla_runtime.export.signing import SigningError, sign_bundle
    from vla_runtime.runtime.bundle import BundleError

    try:
        kid, seal = sign_bundle(args.bundle, args.key)
    except (SigningError, BundleError, OSError) as exc:
        raise UserError(str(exc)) from None
    print(f"signed {args.bundle}: seal {seal[:16]}... by key {kid}")
    return 0
