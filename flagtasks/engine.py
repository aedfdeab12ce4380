"""doit as our engine: running our tasks in-process, and how doit shows their results.

doit's console reporter prints exception text and captured output on stdout; CI logs and
users want the reason on stderr, once, in the same `error:` lines as the CLI (errors.py),
with every failure listed rather than the first. The run lock is taken here, when doit
starts executing tasks: commands that only read (`doit list`, `doit info`, tab
completion, `flagtasks status`) never wait for it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain
from doit.exceptions import BaseFail, TaskError, TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from . import errors, lock
from .config import STATE_DIR
from .errors import FlagtasksError


def reported(func: Callable[..., str | None]) -> Callable[..., Any]:
    """A task action: our errors become doit failures carrying their message (TaskFailed
    for exit 1, TaskError for exit 2); what it returns is printed as its report."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            message = func(*args, **kwargs)
        except FlagtasksError as exc:
            kind = TaskError if exc.exit_code == 2 else TaskFailed
            return kind(exc.message)
        except Exception as exc:  # an unexpected failure still gets one line
            if errors.debug_enabled():
                traceback.print_exc()
            return TaskError(errors.internal(exc))
        if message:
            try:
                say(message)
            except Exception as exc:  # what went wrong is the output, not the work
                return TaskError(errors.internal(exc))
        return True

    return wrapper


_OUTPUT = threading.Lock()


def say(message: str) -> None:
    """Print a task's report, one whole report at a time: under `doit -P thread` tasks
    finish together, and interleaved writes to one stream garble lines (and have crashed
    CPython 3.11 in doit's traceback formatting when a write raised)."""
    with _OUTPUT:
        sys.stdout.write(f"{message}\n")
        sys.stdout.flush()


def _group_echo(task: Any, fail: BaseFail) -> bool:
    """A group task (`verify`) failing only because a subtask failed adds nothing to say."""
    return isinstance(fail, UnmetDependency) and not task.actions


class Reporter(ConsoleReporter):
    desc = "flagtasks: error lines on stderr, every failure listed"
    last_failures: list[BaseFail] = []

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        Reporter.last_failures = []
        try:
            lock.acquire(Path.cwd() / STATE_DIR)
            errors.exit_cleanly_on_sigterm()
        except FlagtasksError as exc:
            raise SystemExit(errors.handle(exc)) from None
        super().initialize(tasks, selected_tasks)

    def add_failure(self, task: Any, fail: BaseFail) -> None:
        Reporter.last_failures.append(fail)
        super().add_failure(task, fail)

    def _write_failure(self, result: dict[str, Any], write_exception: bool = True) -> None:
        fail = result["exception"]
        if _group_echo(result["task"], fail):
            return
        message = fail.message.strip() or fail.get_name()
        if isinstance(fail, UnmetDependency):
            message = f"not run: {message} failed first"
        errors.emit(message, where=result["task"].name)
        if errors.debug_enabled() and fail.traceback:
            sys.stderr.write("".join(fail.traceback))

    def complete_run(self) -> None:
        names = [
            r["task"].name for r in self.failures if not _group_echo(r["task"], r["exception"])
        ]
        if len(names) > 1:
            errors.emit(f"{len(names)} tasks failed: {', '.join(names)}")
        if errors.debug_enabled():
            for result in self.failures:
                out = "".join(a.out or "" for a in result["task"].actions)
                if out:
                    errors.emit(f"{result['task'].name} printed:\n{out}")
        for message in self.runtime_errors:
            errors.emit(message)


def operation_failed_only() -> bool:
    """True when the last run's failures were failed operations and the tasks that depend on
    them: doit calls that an error (exit 2), the contract calls it a failure (exit 1)."""
    fails = Reporter.last_failures
    return bool(fails) and all(isinstance(f, (TaskFailed, UnmetDependency)) for f in fails)


def run(namespace: dict[str, Any], args: list[str]) -> int:
    """`doit <args>` over our task namespace; doit's own usage errors (3) become exit 2."""
    code = DoitMain(ModuleTaskLoader(namespace)).run(args)
    if code == 2 and operation_failed_only():
        return 1
    return 2 if code == 3 else code


def task_states(namespace: dict[str, Any]) -> dict[str, str]:
    """Task name -> "U" (up to date) or "R" (would run), from `doit list --status`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run(namespace, ["list", "--all", "--status", "--quiet"])
    if code:
        return {}
    states = {}
    for line in out.getvalue().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[1]] = parts[0]
    return states
