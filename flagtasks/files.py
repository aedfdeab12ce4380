"""Reading files that come from the repository, which is input: never through a symbolic
link, never a FIFO or a device, never more than an explicit limit.

A pull request can put anything at a store path; these reads turn every such shape into
one `UsageError` naming the file, so it is that file's problem and not a hang, a memory
blow-up or a read of something outside the checkout.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import UsageError

MAX_SMALL = 1 << 20
"""config.toml, meta.json, hetero.txt: a megabyte is a thousand times what they hold."""
MAX_PATCH = 1 << 30
"""A stored patch: FlagScale's whole vendor store is 18 MB; a gigabyte is a mistake."""


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of a regular file at `path` (not followed if a link), at most `limit`."""
    with open_regular(path, limit) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{path}: larger than {limit} bytes; this is not a store file")
    return data


def copy_hashed(path: Path, out: BinaryIO | None, limit: int = MAX_PATCH) -> str:
    """Stream a stored file into `out` (or nowhere); its sha256. A build never holds a
    patch in memory."""
    digest = hashlib.sha256()
    copied = 0
    with open_regular(path, limit) as handle:
        while chunk := handle.read(CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise UsageError(f"{path}: larger than {limit} bytes; this is not a store file")
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
    return digest.hexdigest()


CHUNK = 1 << 20


def open_regular(path: Path, limit: int) -> BinaryIO:
    """`path` opened for reading when it is a regular file of at most `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"{path} is a symbolic link: replace it with the file itself"
            ) from None
        raise
    handle = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file; replace it with the file itself"
    elif info.st_size > limit:
        problem = f"larger than {limit} bytes; this is not a store file"
    if problem:
        handle.close()
        raise UsageError(f"{path}: {problem}")
    return handle


def read_text(path: Path, limit: int = MAX_SMALL) -> str:
    """A small UTF-8 text file (see `read_bytes`); UnicodeDecodeError when not UTF-8."""
    return read_bytes(path, limit).decode("utf-8")
