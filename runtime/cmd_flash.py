"""`vla-runtime flash BUNDLE --to DIR`: verified, atomic install with rollback."""

from __future__ import annotations

from vla_runtime.common.errors import UserError
from vla_runtime.runtime.bundle import BundleError


def register(sub) -> None:
    p = sub.add_parser("flash", help="install a bundle (directory or .tar) atomically, keeping the previous one")
    p.add_argument("bundle", nargs="?", help="bundle directory or .tar archive")
    p.add_argument("--to", required=True, metavar="DIR", help="install root on the robot (holds current/previous)")
    p.add_argument("--rollback", action="store_true", help="make the previous bundle current again")
    p.add_argument("--pack", metavar="TAR", help="instead of installing, write BUNDLE as one .tar to TAR")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from vla_runtime.runtime import flash

    try:
        if args.rollback:
            target = flash.rollback(args.to)
            print(f"rolled back: current -> {target}")
            return 0
        if not args.bundle:
            raise UserError("flash needs a BUNDLE (directory or .tar), or --rollback")
        if args.pack:
            print(f"packed {flash.pack(args.bundle, args.pack)}")
            return 0
        result = flash.flash(args.bundle, args.to)
    except BundleError as exc:
        raise UserError(f"{exc} (nothing was changed on the robot)") from None
    print(f"installed {result.installed}")
    print(f"current  -> {result.installed.name}")
    if result.previous is not None:
        print(f"previous -> {result.previous.name} (undo with: vla-runtime flash --rollback --to {args.to})")
    return 0
