"""One run at a time per checkout: an exclusive lock on `.flagtasks/lock`.

Two terminals or two CI steps on one checkout would otherwise race on build trees, the
store and the dependency file. The second run waits (saying so), then gives up clearly.
Only runs that change things take it (see engine.py); readers never wait.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OperationError, UsageError

_HELD: dict[Path, int] = {}
DEFAULT_TIMEOUT = 600.0


def timeout_from_env() -> float:
    """FLAGTASKS_LOCK_TIMEOUT, in seconds (default 600)."""
    raw = os.environ.get("FLAGTASKS_LOCK_TIMEOUT", "")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:
        raise UsageError(
            f"FLAGTASKS_LOCK_TIMEOUT={raw[:40]!r} is not a number of seconds: set it to e.g. 600"
        )
    return value


def acquire(state_dir: Path, timeout: float | None = None) -> None:
    """Hold the checkout's lock until this process exits (re-entrant within a process)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "lock"
    if path not in _HELD:
        _HELD[path] = _wait_for(path, timeout)


@contextmanager
def folder_held(folder: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold a lock on `folder` itself (created if absent) for a block: a build folder
    several checkouts may share is locked per device folder while a tree there is replaced.
    Locking the folder leaves no lock file beside the trees."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _wait_for(folder, timeout, os.O_RDONLY | os.O_DIRECTORY)
        try:
            same = os.stat(folder, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # removed (doit clean) while we waited: lock the new one
    try:
        yield
    finally:
        os.close(fd)


def _wait_for(path: Path, timeout: float | None, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """Open and lock `path` (never through a link), waiting up to `timeout` seconds."""
    if timeout is None:
        timeout = timeout_from_env()
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UsageError(
            f"cannot open the lock {path} ({exc.strerror}): remove it if it is a link"
        ) from None
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(path)
            if time.monotonic() >= deadline:
                os.close(fd)
                raise OperationError(
                    f"another flagtasks run{holder} still holds {path} after {timeout:.0f}s; "
                    "wait for it to finish (or raise FLAGTASKS_LOCK_TIMEOUT)"
                ) from None
            if not said:
                sys.stderr.write(f"waiting for another flagtasks run{holder} to finish...\n")
                said = True
            time.sleep(0.2)
    if flags & os.O_RDWR:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
