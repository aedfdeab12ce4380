"""What every test module shares: the clean environment, the runners (git, `flagtasks`, `doit`)
with the output checks every run must pass, and the bundled sample project.

Every `flagtasks` and `doit` run is checked (`check_output`): no Python traceback and no
private key material in anything it printed, stdout or stderr. A test that expects either says
so, and why, with `allow_traceback="<reason>"` or `allow_private_key="<reason>"`.

This module imports nothing else from tests/; repos.py (files and commits, projects, store
paths, tree comparisons, snapshots, scenario builders) builds on it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flagtasks import git as flagtasks_git

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- environment

_KEPT = flagtasks_git.GIT_KEPT
GIT_VARS_DROPPED = (
    *sorted(name for name in os.environ if name.startswith("GIT_") and name not in _KEPT),
    "DOIT_CONFIG",
)
"""The caller's variables that would point git elsewhere, pin identities or configure doit:
the ones flagtasks' own allow-list (flagtasks.git.GIT_KEPT) drops, and doit's config. Dropped
from every subprocess here, and from the whole session by conftest.py."""


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ through flagtasks' own git allow-list (flagtasks.git.clean_env), so the
    tests run git and the tool the way the tool runs git; identities come from HOME."""
    env = {k: v for k, v in flagtasks_git.clean_env(os.environ).items() if k != "DOIT_CONFIG"}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update(extra)
    return env


PYCACHE = Path(tempfile.gettempdir()) / f"flagtasks-tests-pycache-{os.getuid()}"
"""Compiled bytecode of what `flagtasks` and `doit` import, outside the project (the suite's
environment says PYTHONDONTWRITEBYTECODE, which would recompile flagtasks on every one of many
runs)."""


def run_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every `flagtasks` and `doit` run: clean_env, bytecode in PYCACHE."""
    cache = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    return clean_env({**cache, **(extra or {})})


# --------------------------------------------------------------------------- git

EPOCH = 1_700_000_000
"""Author/committer time of the first fixture commit; each later one is a minute on."""

UPSTREAM = ("Ada Upstream", "ada@upstream.example")


def git_env(when: int = EPOCH, author: tuple[str, str] = UPSTREAM) -> dict[str, str]:
    """clean_env with fixed identities and dates, so that commits are the same everywhere."""
    date = f"{when} +0000"
    return clean_env(
        {
            "GIT_AUTHOR_NAME": author[0],
            "GIT_AUTHOR_EMAIL": author[1],
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": UPSTREAM[0],
            "GIT_COMMITTER_EMAIL": UPSTREAM[1],
            "GIT_COMMITTER_DATE": date,
        }
    )


def git_raw(
    repo: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> bytes:
    """Run git in `repo` with a deterministic environment; return raw stdout."""
    full_env = git_env()
    if env:
        full_env.update(env)
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=full_env,
        input=input,
        capture_output=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} failed in {repo} ({proc.returncode}):\n"
            + proc.stderr.decode(errors="replace")
        )
    return proc.stdout


def git(
    repo: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> str:
    """Run git in `repo` (check=True); stdout as text without the final newline."""
    out = git_raw(repo, *args, env=env, input=input)
    return out.decode("utf-8", "surrogateescape").rstrip("\n")


def rev(repo: Path, spec: str) -> str:
    """Full SHA of a commit-ish or `<rev>^{tree}`."""
    return git(repo, "rev-parse", "--verify", "--end-of-options", spec)


# --------------------------------------------------------------------------- output checks

KEY_MARKERS = ("PRIVATE KEY", "OPENSSH")
"""What key material looks like in output: the PEM headers of every format, OpenSSH's too."""

ERROR_PREFIX = "error: "
"""How the command line and doit start an error line on stderr: `error: [<task>: ]<message>`
(flagtasks.errors.PREFIX). Tests that look for an error line use this."""


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """Everything about a run, for assertion messages."""
    return (
        f"$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    )


def check_output(
    proc: subprocess.CompletedProcess[str],
    *,
    allow_traceback: str = "",
    allow_private_key: str = "",
) -> subprocess.CompletedProcess[str]:
    """What every run of `flagtasks` or `doit` must print, failing or not: no Python traceback
    and no private key material, on stdout or stderr. A test that expects one passes the
    reason (`allow_traceback`, `allow_private_key`); the runners below call this."""
    said = proc.stdout + proc.stderr
    if not allow_traceback:
        assert "Traceback" not in said, describe(proc)
    if not allow_private_key:
        leaked = [marker for marker in KEY_MARKERS if marker in said]
        # the output itself stays out of the message: it holds the key
        assert not leaked, f"{leaked} in the output of `{' '.join(map(str, proc.args))}`"
    return proc


def _succeeded(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, describe(proc)
    return proc


def _failed(
    proc: subprocess.CompletedProcess[str], code: int, says: Iterable[str]
) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == code, describe(proc)
    message = proc.stderr.strip()
    assert message, f"no message on stderr\n{describe(proc)}"
    for word in says:
        assert word.lower() in message.lower(), f"{word!r} not on stderr\n{describe(proc)}"
    return proc


# --------------------------------------------------------------------------- runners

FLAGTASKS = str(Path(sys.executable).parent / "flagtasks")
DOIT = str(Path(sys.executable).parent / "doit")


def flagtasks_argv(*args: str | bytes, module: bool = False) -> list[str | bytes]:
    """The command line of the real `flagtasks`: the installed script, or with `module`
    `python -m flagtasks`."""
    head: list[str | bytes] = [sys.executable, "-m", "flagtasks"] if module else [FLAGTASKS]
    return [*head, *args]


def _run(
    argv: Sequence[str | bytes],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    umask: int | None = None,
    errors: str = "strict",
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in `cwd` in run_env(env); never raises on failure, checks nothing."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env=run_env(env),
        capture_output=True,
        encoding="utf-8",
        errors=errors,
        timeout=timeout,
        check=False,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def flagtasks(
    cwd: Path,
    *args: str | bytes,
    module: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    umask: int | None = None,
    errors: str = "strict",
    allow_traceback: str = "",
    allow_private_key: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run the real `flagtasks` in `cwd` (`module`: as `python -m flagtasks`), with `env` on
    top of run_env and the given `umask`; never raises on failure, always checks the output.
    `errors="replace"` decodes output that echoes non-UTF-8 arguments back."""
    proc = _run(
        flagtasks_argv(*args, module=module),
        cwd,
        env=env,
        timeout=timeout,
        umask=umask,
        errors=errors,
    )
    return check_output(proc, allow_traceback=allow_traceback, allow_private_key=allow_private_key)


def flagtasks_ok(cwd: Path, *args: str | bytes, **options: Any) -> subprocess.CompletedProcess[str]:
    """`flagtasks`, and the run must succeed."""
    return _succeeded(flagtasks(cwd, *args, **options))


def flagtasks_fails(
    cwd: Path, code: int, *args: str | bytes, says: Iterable[str] = (), **options: Any
) -> subprocess.CompletedProcess[str]:
    """`flagtasks`, and the run must exit `code` with a message on stderr that names each of
    `says` (case-insensitive)."""
    return _failed(flagtasks(cwd, *args, **options), code, says)


def doit(
    project: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    allow_traceback: str = "",
    allow_private_key: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run the real doit next to this interpreter in `project`, with `env` on top of
    run_env; never raises on failure, always checks the output."""
    proc = _run([DOIT, *args], project, env=env, timeout=timeout)
    return check_output(proc, allow_traceback=allow_traceback, allow_private_key=allow_private_key)


def doit_ok(project: Path, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """`doit`, and the run must succeed."""
    return _succeeded(doit(project, *args, **options))


def doit_fails(
    project: Path, code: int, *args: str, says: Iterable[str] = (), **options: Any
) -> subprocess.CompletedProcess[str]:
    """`doit`, and the run must exit `code` with a message on stderr that names each of
    `says` (case-insensitive)."""
    return _failed(doit(project, *args, **options), code, says)


def run_parallel(
    jobs: Mapping[str, tuple[Path, Sequence[str]]], workers: int = 4
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run independent `flagtasks` commands (each in its own checkout) at the same time; the
    tests then look at the results one by one. The output checks are theirs to make
    (check_output), so that one bad run fails its own test, not the fixture that ran them."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            key: pool.submit(_run, flagtasks_argv(*args), cwd) for key, (cwd, args) in jobs.items()
        }
        return {key: future.result() for key, future in futures.items()}


class Runs:
    """doit runs in one project, each distinct command line run once and remembered, so that
    module-scoped tests can ask for their prerequisites in any order."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.done: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = {}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        if args not in self.done:
            self.done[args] = doit(self.project, *args)
        return self.done[args]

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Like calling, but the run must have succeeded."""
        return _succeeded(self(*args))


def executed(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """Tasks doit ran (`.  task` lines)."""
    return [line[3:] for line in proc.stdout.splitlines() if line.startswith(".  ")]


def up_to_date(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """Tasks doit skipped as up to date (`-- task` lines)."""
    return [line[3:] for line in proc.stdout.splitlines() if line.startswith("-- ")]


# --------------------------------------------------------------------------- the sample

SAMPLE = ROOT / "examples" / "sample" / "upstream.git"
"""The bundled sample upstream: main, tags v1.0 and v1.1, a vendor/<DEV> branch per device."""

SAMPLE_STORE = ROOT / "hardware"
"""The sample's three adaptations, as this repository stores them."""

A, B, C = "A_X100", "B_Y100", "C_Z200"
DEVICES = {A: "v1.0", B: "v1.0", C: "v1.1"}
"""The sample's devices, each with the base its vendor branch is on."""

V10_8 = "50b3e4bf"  # BASE8 of v1.0 in the sample
V11_8 = "8586ebb4"  # BASE8 of v1.1 in the sample
NAME = "FlagScale"  # a clone's folder name = the build tree's folder name (no config.toml)


def clone_sample(
    dest: Path,
    *,
    branches: bool = False,
    identity: tuple[str, str] | None = None,
    depth: int | None = None,
) -> Path:
    """A clone of the sample at `dest`, HEAD on main. `branches`: a local vendor/<DEV> for each
    of DEVICES; `identity`: the clone's user.name and user.email; `depth`: a shallow clone."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if depth is None:
        git(dest.parent, "clone", "-q", str(SAMPLE), str(dest))
    else:  # git ignores --depth when cloning a local path
        git(dest.parent, "clone", "-q", "--depth", str(depth), SAMPLE.as_uri(), str(dest))
    if identity is not None:
        git(dest, "config", "user.name", identity[0])
        git(dest, "config", "user.email", identity[1])
    if branches:
        for dev in DEVICES:
            git(dest, "branch", "-q", f"vendor/{dev}", f"origin/vendor/{dev}")
    return dest


def sample_project(
    dest: Path,
    *,
    branches: bool = True,
    vendors: bool = True,
    keys: Mapping[str, Path] | None = None,
    identity: tuple[str, str] | None = None,
) -> Path:
    """The sample as a vendor has it: clone_sample (with its local vendor branches unless
    `branches` is false) adopted with `flagtasks init`. With `vendors`, config.toml gets a
    [vendor.<DEV>] per device of DEVICES (current = vendor/<DEV>; `key` for those in `keys`)."""
    clone_sample(dest, branches=branches, identity=identity)
    flagtasks_ok(dest, "init")
    if vendors:
        with (dest / "config.toml").open("a") as config:
            for dev, base in DEVICES.items():
                config.write(f'\n[vendor.{dev}]\nbase = "{base}"\ncurrent = "vendor/{dev}"\n')
                if keys and dev in keys:
                    config.write(f'key = "{keys[dev]}"\n')
    return dest


def copy_of(checkout: Path, parent: Path) -> Path:
    """A copy of `checkout` at `parent`/FlagScale, symlinks kept: much cheaper than a clone."""
    dest = parent / NAME
    shutil.copytree(checkout, dest, symlinks=True)
    return dest


# --------------------------------------------------------------------------- the run lock


@contextmanager
def holding_lock(project: Path) -> Iterator[None]:
    """Hold the checkout's run lock as another flagtasks run would."""
    state = project / ".flagtasks"
    state.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
