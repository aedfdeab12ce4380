"""The `flagtasks` command: the seed tool's flags on top of the same doit tasks.

Only wiring lives here; each command is `flagtasks/commands/<name>.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import errors, version
from .commands import init, matrix, patch, rebase, status, unpatch, verify

EXAMPLES = {
    "patch": "example:\n  flagtasks patch --device-type A_X100 --base-commit-id v1.0\n"
    "  flagtasks patch --device-type A_X100 B_Y100 --base-commit-id v1.0 --commit",
    "unpatch": "example:\n"
    "  flagtasks unpatch --device-type A_X100 --commit-id 50b3e4bf --dir build\n"
    "  flagtasks unpatch --device-type A_X100 B_Y100 --commit-id 50b3e4bf --dir build",
    "verify": "example:\n  flagtasks verify\n  flagtasks verify --device-type A_X100",
    "status": "example:\n  flagtasks status\n  flagtasks status --json",
    "init": "example:\n  cd FlagScale && flagtasks init && doit list",
    "rebase": "example:\n"
    "  flagtasks rebase --device-type A_X100 --base-commit-id v1.0 --onto origin/main\n"
    "  flagtasks rebase --check --onto origin/main --json",
    "matrix": 'example:\n  flagtasks matrix   # {"device": ["A_X100", "B_Y100"]}',
}


def parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks on errors (default: off; FLAGTASKS_DEBUG=1 does the same)",
    )
    top = argparse.ArgumentParser(
        prog="flagtasks",
        description="Hardware vendors' adaptations of a git project, as patches, with doit.",
        epilog="example:\n  flagtasks status\n  flagtasks unpatch --device-type A_X100 "
        "--commit-id v1.0 --dir build",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[debug],
    )
    top.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    subs = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub(name: str, help_: str) -> argparse.ArgumentParser:
        return subs.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[debug],
        )

    devices = "device types <Vendor>_<Chip>, e.g. cambricon_MLU"
    p = sub("patch", "make a device's adaptation (several devices: a hetero combo)")
    p.add_argument(
        "--device-type",
        nargs="+",
        required=True,
        metavar="DEV",
        help=f"{devices}; several = a hetero combo, the patch is made for the last (required)",
    )
    p.add_argument(
        "--base-commit-id",
        required=True,
        metavar="REV",
        help="the upstream commit the adaptation starts from: tag, branch or SHA (required)",
    )
    p.add_argument(
        "--current-commit-id",
        default="HEAD",
        metavar="REV",
        help="the adapted commit (default: HEAD)",
    )
    p.add_argument(
        "--key-path",
        metavar="DIR",
        help="encrypt; a key pair is created in DIR (outside the repository) if absent "
        "(default: [vendor.DEV] key in config.toml, else plaintext)",
    )
    p.add_argument(
        "--mode",
        choices=("series", "squash", "auto"),
        help="series of commits, one squashed commit, or series falling back to squash "
        "(default: [vendor.DEV] mode, else auto)",
    )
    p.add_argument(
        "--commit",
        action="store_true",
        help="commit the adaptation's files as '[DEV] <subject>' (default: off)",
    )
    p.set_defaults(func=patch.run)

    u = sub("unpatch", "build ready source trees for devices")
    u.add_argument(
        "--device-type",
        nargs="+",
        required=True,
        metavar="DEV",
        help=f"{devices}; several = a hetero combo in hetero.txt (required)",
    )
    u.add_argument(
        "--commit-id",
        required=True,
        metavar="BASE",
        help="the base to build: a store folder name (BASE8) or any rev (required); "
        "later `doit unpatch` runs keep it",
    )
    u.add_argument(
        "--dir",
        metavar="DIR",
        help="build DIR/<DEV>/<NAME>/ (default: switch this checkout to a new branch)",
    )
    u.add_argument(
        "--key-path",
        metavar="DIR",
        help="folder holding private_key.pem, outside the repository (default: [keys] DEV)",
    )
    u.add_argument(
        "--force",
        action="store_true",
        help="rebuild over a tree holding your changes; the old tree is kept aside (default: off)",
    )
    u.set_defaults(func=unpatch.run)

    v = sub("verify", "check that stored adaptations apply exactly")
    v.add_argument(
        "--device-type",
        nargs="+",
        metavar="DEV",
        help=f"{devices} (default: every device, and the store checks)",
    )
    v.set_defaults(func=verify.run)

    r = sub("rebase", "carry an adaptation onto a newer upstream commit, or forecast it")
    r.add_argument(
        "--device-type",
        nargs="+",
        metavar="DEV",
        help=f"{devices}: one to rebase; with --check, those to forecast (default: all)",
    )
    r.add_argument(
        "--base-commit-id",
        metavar="OLD",
        help="the base the adaptation is stored on: BASE8 or any rev (default: none; "
        "needed without --check)",
    )
    r.add_argument(
        "--onto", required=True, metavar="REV", help="the newer upstream commit (required)"
    )
    r.add_argument(
        "--key-path",
        metavar="DIR",
        help="folder holding private_key.pem, outside the repository (default: [keys] DEV)",
    )
    r.add_argument(
        "--worktree",
        metavar="DIR",
        help="on conflict, leave a git worktree at DIR stopped at the first conflict "
        "(default: none)",
    )
    r.add_argument(
        "--check",
        action="store_true",
        help="forecast every stored device onto REV; writes nothing (default: off)",
    )
    r.add_argument(
        "--json", action="store_true", help="with --check: JSON for CI (default: a table)"
    )
    r.set_defaults(func=rebase.run)
    s = sub("status", "table of devices x bases")
    s.add_argument(
        "--json",
        action="store_true",
        help="typed JSON with a schema version instead of the table (default: table)",
    )
    s.set_defaults(func=status.run)

    i = sub("init", "adopt flagtasks in this checkout (dodo.py, config.toml, ignores)")
    i.set_defaults(func=init.run)

    m = sub("matrix", "print the stored devices as a CI job matrix (JSON)")
    m.set_defaults(func=matrix.run)
    return top


class _Version(argparse.Action):
    """`--version`, reading the installed version only when asked (it costs start-up)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        sys.stdout.write(f"flagtasks {version()}\n")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    """Parse, run one command, and turn whatever it raises into a line and an exit code."""
    args = parser().parse_args(argv)
    if getattr(args, "debug", False):
        os.environ["FLAGTASKS_DEBUG"] = "1"
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BaseException as exc:  # the one boundary: errors.handle decides what is shown
        return errors.handle(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
