"""doit tasks for this checkout's hardware adaptations; everything lives in flagtasks."""

import sys

try:
    from flagtasks.tasks import *  # noqa: F401,F403
except ModuleNotFoundError as missing:
    if missing.name != "flagtasks":
        raise
    sys.stderr.write(
        f"dodo.py: flagtasks is not installed in this Python ({sys.executable}): "
        "from this folder, pip install -e . (see README.md, 'Try it')\n"
    )
    raise SystemExit(2) from None
