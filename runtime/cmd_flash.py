"""`vla-runtime flash BUNDLE --to DIR`: checked, verified, durable, atomic install with rollback."""

from __future__ import annotations

from vla_runtime.common.errors import UserError
from vla_runtime.runtime.bundle import BundleError

NOTHING_CHANGED = "nothing was changed on the robot"


def register(sub) -> None:
    p = sub.add_parser("flash", help="install a bundle (directory or tar archive) atomically, keeping the previous one")
    p.add_argument("bundle", nargs="?", help="bundle directory or .tar / .tar.gz archive")
    p.add_argument("--to", required=True, metavar="DIR", help="install root on the robot (holds current/previous)")
    p.add_argument("--rollback", action="store_true", help="make the previous bundle current again")
    p.add_argument("--pack", metavar="TAR", help="instead of installing, write BUNDLE as one .tar to TAR")
    p.add_argument("--trusted-keys", metavar="DIR", help="trust store of signing keys (*.pub); default "
                   "$VLA_RUNTIME_TRUSTED_KEYS or /etc/vla-runtime/trusted-keys when it exists")
    p.add_argument("--allow-failed-gate", action="store_true", help="install a bundle whose INT8 accuracy gate failed")
    p.add_argument("--check", action="store_true",
                   help="after the switch, run the bundle's stored health sample; roll back if it fails")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"),
                   help="backend for --check (default auto)")
    p.add_argument("--max-size", type=float, default=64.0, metavar="GIB",
                   help="refuse archives that unpack to more than this many GiB (default 64)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from vla_runtime.runtime import flash
    from vla_runtime.runtime.archive import ArchiveLimits

    try:
        if args.rollback:
            target = flash.rollback(args.to, trusted_keys=args.trusted_keys)
            print(f"rolled back: current -> {target}")
            return 0
        if not args.bundle:
            raise UserError("flash needs a BUNDLE (directory or .tar), or --rollback")
        if args.pack:
            print(f"packed {flash.pack(args.bundle, args.pack)}")
            return 0
        if not 0 < args.max_size <= 1 << 20:
            raise UserError(f"--max-size {args.max_size}: give a size in GiB above 0 ({NOTHING_CHANGED})")
        options = flash.FlashOptions(
            trusted_keys=args.trusted_keys,
            allow_failed_gate=args.allow_failed_gate,
            limits=ArchiveLimits(max_total_bytes=int(args.max_size * (1 << 30))),
            check=args.check,
            backend=args.backend,
        )
        result = flash.flash(args.bundle, args.to, options)
    except flash.HealthCheckFailed as exc:
        raise UserError(str(exc)) from None
    except BundleError as exc:
        raise UserError(f"{exc} ({NOTHING_CHANGED})") from None
    except OSError as exc:
        raise UserError(f"{exc.filename or args.to}: {exc.strerror or exc} ({NOTHING_CHANGED})") from None
    print(f"installed {result.installed}")
    print(f"current  -> {result.installed.name}")
    print(f"signature: {'trusted key ' + result.signer if result.signer else 'not enforced (no trust store)'}")
    if result.health:
        print(f"check: {result.health}")
    if result.previous is not None:
        print(f"previous -> {result.previous.name} (undo with: vla-runtime flash --rollback --to {args.to})")
    return 0
