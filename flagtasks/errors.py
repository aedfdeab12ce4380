"""Error kinds, and the one boundary that turns any failure into what the user sees.

Every failure reaches the user the same way, through `flagtasks` and through `doit`: one
line per problem on stderr, `error: [<task>: ]<message>`, and an exit code from the
contract (1 the operation failed, 2 bad input). Tracebacks only with `--debug` (or
FLAGTASKS_DEBUG=1 under doit).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

PREFIX = "error: "


class FlagtasksError(Exception):
    """A failure we can explain; `exit_code` follows the contract (1 failed, 2 bad input).

    `message` may hold several lines (one problem each); each is shown as its own line.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @classmethod
    def of(cls, problems: Sequence[str]) -> FlagtasksError:
        """One error listing several problems, one per line."""
        return cls("\n".join(problems))


class OperationError(FlagtasksError):
    """The operation ran and failed: verify mismatch, conflict, decrypt failure, dirty tree."""

    exit_code = 1


class UsageError(FlagtasksError):
    """Bad input: usage, unknown device, unknown commit, bad config. Nothing was changed."""

    exit_code = 2


class GitError(OperationError):
    """A git command failed; carries git's own stderr for the message."""

    def __init__(self, args: tuple[str, ...], code: int, stderr: str) -> None:
        lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        causes = [line for line in lines if line.startswith(("fatal:", "error:"))]
        reason = (causes or lines or [f"exit code {code}"])[0]
        super().__init__(f"git {args[0] if args else ''} failed: {reason}")
        self.args_ = args
        self.code = code
        self.stderr = stderr


def debug_enabled() -> bool:
    return os.environ.get("FLAGTASKS_DEBUG", "") not in ("", "0")


def lines(message: str, where: str | None = None) -> list[str]:
    """The stderr lines for a message: one per non-blank line, each with the prefix."""
    context = f"{where}: " if where else ""
    parts = [printable(part.rstrip()) for part in message.split("\n") if part.strip()]
    return [f"{PREFIX}{context}{part}" for part in parts or ["failed"]]


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127) if c not in (9,)}


def printable(line: str) -> str:
    """A message line with control characters shown escaped: a value read from a store file
    must not start a line of its own or drive the terminal."""
    return line.translate(_CONTROL)


def emit(message: str, where: str | None = None) -> None:
    """Write a message to stderr as its error lines."""
    sys.stderr.write("".join(f"{line}\n" for line in lines(message, where)))


def internal(exc: BaseException) -> str:
    """The message for a failure we did not foresee: what it was, and how to report it."""
    return f"internal error {exc!r}; rerun with --debug and report it"


def handle(exc: BaseException) -> int:
    """Show `exc` as the user should see it; return the exit code. The one boundary."""
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(exc, BrokenPipeError):
        quiet_stdout()
        return 0
    if debug_enabled():
        traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        return 130
    if isinstance(exc, FlagtasksError):
        emit(exc.message)
        return exc.exit_code
    emit(internal(exc))
    return 1


def quiet_stdout() -> None:
    """After the reader of our output went away (`| head -1`), send the rest nowhere, so
    the interpreter's final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM (CI cancel, `kill`) unwinds like Ctrl-C, so temp trees and files are removed."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def boundary() -> Iterator[None]:
    """Around code that runs where no caller can catch (doit loading our tasks): a failure
    becomes its message and the process exits with its code."""
    try:
        yield
    except (FlagtasksError, BrokenPipeError, KeyboardInterrupt) as exc:
        raise SystemExit(handle(exc)) from None
