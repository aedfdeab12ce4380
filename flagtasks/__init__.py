"""flagtasks: vendors' hardware adaptations of a git project, as patches, rebuilt with doit."""

from __future__ import annotations

import functools

FORMAT_VERSION = 1
"""Version of what the tool writes (patch options, metadata, build trees); bump to rebuild."""


@functools.cache
def version() -> str:
    """The installed version; read on demand, since importlib.metadata costs a tenth of doit's
    whole start-up and a no-op run never needs it."""
    from importlib import metadata

    try:
        return metadata.version("flagtasks")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return version()
    raise AttributeError(f"module 'flagtasks' has no attribute {name!r}")
