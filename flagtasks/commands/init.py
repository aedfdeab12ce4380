"""`flagtasks init`: adopt flagtasks in an upstream checkout without overwriting anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config, git
from ..config import BUILD_MARKER, STATE_DIR
from ..errors import UsageError
from ..store import atomic_write

DODO = '''"""doit tasks for this checkout's hardware adaptations; everything lives in flagtasks."""

import sys

try:
    from flagtasks.tasks import *  # noqa: F401,F403
except ModuleNotFoundError as missing:
    if missing.name != "flagtasks":
        raise
    sys.stderr.write(
        f"dodo.py: flagtasks is not installed in this Python ({sys.executable}): "
        "pip install flagtasks (or pipx install --include-deps flagtasks)\\n"
    )
    raise SystemExit(2) from None
'''

CONFIG = """\
# flagtasks configuration. Every key is optional; the values shown are the defaults.

[upstream]
repo = "."             # the git repo patches apply to, relative to this file
# name = "FlagScale"   # folder name inside build/<DEVICE>/ (default: the repo folder's name)
hardware = "hardware"  # the patch store: hardware/<DEVICE>/<BASE8>/<BASE8>.patch
build = "build"        # where `doit unpatch` puts build/<DEVICE>/<NAME>/

# Vendor side: one section per device this checkout exports.
# [vendor.A_X100]
# base = "v1.0"        # the upstream commit the adaptation starts from (any rev)
# current = "HEAD"     # the adapted commit
# mode = "auto"        # series | squash | auto (series, falling back to squash)
# key = "/secure/keys/a_x100"   # encrypt; a folder OUTSIDE this repository
# recipients = ["/secure/keys/customer/public_key.pem"]

# User side: which base to build per device (default: the newest stored base).
# [use]
# A_X100 = "aaaa1111"

# User side: decryption key folders per device.
# [keys]
# A_X100 = "/secure/keys/a_x100"
"""


def run(args: argparse.Namespace) -> int:
    here = Path.cwd()
    top = git.work_tree_top(here)
    if top is None:
        raise UsageError(f"{here} is not inside a git checkout: run init in an upstream checkout")
    if (top / ".git" / BUILD_MARKER).is_file():
        raise UsageError(f"{top} is a build tree made by flagtasks: run init in the upstream")
    for name, content in (("dodo.py", DODO), ("config.toml", CONFIG)):
        path = top / name
        if path.exists() or path.is_symlink():
            print(f"kept existing {name}")
        else:
            atomic_write(path, content.encode())
            print(f"wrote {name}")
    cfg = config.load(top)
    rules = [f"/{cfg.build.relative_to(top).as_posix()}/", f"/{STATE_DIR}/"]
    exclude = git.info_exclude(top)
    lines = exclude.read_text(encoding="utf-8").splitlines() if exclude.is_file() else []
    missing = [rule for rule in rules if rule not in lines]
    if missing:
        body = "\n".join(lines) + ("\n" if lines else "")
        atomic_write(exclude, (body + "\n".join(missing) + "\n").encode())
        print(f"{exclude}: ignores {' '.join(missing)} (no tracked file was changed)")
    print("done: run `doit list` to see the tasks")
    return 0
