"""Engineering guarantees of issue 9, on real checkouts of the sample and real processes:

1. git runs through `subprocess` (flagtasks/git.py): no `sh`, no `asyncio`, and a threaded
   parallel run (`doit -n 4 -P thread`) is quiet even with DeprecationWarning as an error;
2. git's environment is an allow-list (flagtasks.git.clean_env): a caller's GIT_DIR,
   GIT_INDEX_FILE, GIT_OBJECT_DIRECTORY, GIT_CONFIG_* ... change nothing;
3. one error boundary: `error: ` lines, no traceback, exit codes from the contract,
   `--debug` after the subcommand, quiet end into a closed pipe;
4. a keyed vendor device: the staged file links format_patch and encrypt, a second run
   executes nothing and leaves the committed store clean;
5. only runs that execute tasks take the run lock;
6. tab completion scripts parse in a project whose path holds an apostrophe;
7. every command's --help, and every option's default (or "(required)").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures import (
    DEVICES,
    DOIT,
    V10_8,
    A,
    check_output,
    clone_sample,
    describe,
    doit,
    doit_fails,
    doit_ok,
    executed,
    flagtasks,
    flagtasks_argv,
    flagtasks_fails,
    flagtasks_ok,
    git,
    holding_lock,
    run_env,
    sample_project,
    up_to_date,
)
from repos import tree_of

ALWAYS = {"verify:store"}
"""Store hygiene looks at the whole repository, so it runs every time by design."""


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_error_lines(proc: subprocess.CompletedProcess[str], prefix: str = "error: ") -> None:
    """stderr holds only `error: ...` lines (at least one), and no raw doit exception names."""
    lines = error_lines(proc.stderr)
    assert lines, describe(proc)
    assert all(line.startswith(prefix) for line in lines), describe(proc)
    said = proc.stdout + proc.stderr
    for raw in ("Traceback", "TaskFailed", "TaskError"):
        assert raw not in said, describe(proc)


def build_tree_id(project: Path, dev: str) -> str:
    return git(project / "build" / dev / "FlagScale", "rev-parse", "HEAD^{tree}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample as a vendor has it, every task run once by a plain `doit`. Tests only read
    it (or are refused by the lock), so each finds it as the fixture left it."""
    path = sample_project(tmp_path_factory.mktemp("engineering") / "FlagScale")
    doit_ok(path)
    for dev in DEVICES:
        assert build_tree_id(path, dev) == tree_of(path, f"vendor/{dev}"), dev
    return path


# --------------------------------------------------------------------------- 1. subprocess


PROBE = """
import io, json, sys
from contextlib import redirect_stdout
import flagtasks.tasks, flagtasks.cli
imported = [m for m in ("sh", "asyncio") if m in sys.modules]
if sys.argv[1:] == ["doit"]:  # load the checkout's dodo.py through doit, as `doit list` does
    from doit.cmd_base import DodoTaskLoader
    from doit.doit_cmd import DoitMain
    with redirect_stdout(io.StringIO()) as out:
        code = DoitMain(DodoTaskLoader()).run(["list", "--all"])
    assert code == 0 and "unpatch:A_X100" in out.getvalue(), (code, out.getvalue())
    imported += [f"{m} (after doit list)" for m in ("sh", "asyncio") if m in sys.modules]
print(json.dumps(imported))
"""


@pytest.mark.parametrize("how", ["import", "doit"])
def test_importing_flagtasks_loads_neither_sh_nor_asyncio(project: Path, how: str) -> None:
    """git runs through subprocess: importing the tasks and the CLI, and loading the tasks
    through doit, import neither `sh` nor `asyncio` (sys.modules of a fresh interpreter)."""
    argv = [sys.executable, "-c", PROBE, *(["doit"] if how == "doit" else [])]
    proc = check_output(
        subprocess.run(argv, cwd=project, env=run_env(), capture_output=True, text=True, timeout=60)
    )
    assert proc.returncode == 0, describe(proc)
    assert json.loads(proc.stdout) == [], describe(proc)


def test_threaded_parallel_run_is_quiet_with_deprecations_as_errors(tmp_path: Path) -> None:
    """`doit -n 4 -P thread` over every device (format_patch, verify, unpatch) with
    PYTHONWARNINGS=error::DeprecationWarning: no fork from a thread (Python 3.12+ warns about
    it), exit 0, every tree right."""
    checkout = sample_project(tmp_path / "FlagScale")
    proc = doit(
        checkout, "-n", "4", "-P", "thread", env={"PYTHONWARNINGS": "error::DeprecationWarning"}
    )
    assert proc.returncode == 0, describe(proc)
    assert "fork" not in proc.stderr.lower(), describe(proc)
    assert "DeprecationWarning" not in proc.stderr, describe(proc)
    # threads interleave their output, so a task's ".  name" line may follow another's text
    ran = set(re.findall(r"\.  ((?:format_patch|verify|unpatch):[\w-]+)", proc.stdout))
    for dev in DEVICES:
        assert {f"format_patch:{dev}", f"verify:{dev}", f"unpatch:{dev}"} <= ran, describe(proc)
        assert build_tree_id(checkout, dev) == tree_of(checkout, f"vendor/{dev}"), dev


# --------------------------------------------------------------------------- 2. git environment


def hostile_env(tmp: Path) -> dict[str, str]:
    """Variables a hook, a shell or a CI runner may leave set: each would send git elsewhere
    or change the bytes of a patch."""
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return {
        "GIT_OBJECT_DIRECTORY": str(elsewhere),
        "GIT_DIR": "/nonexistent",
        "GIT_INDEX_FILE": str(tmp / "idx"),
        "GIT_WORK_TREE": "/",
        "GIT_CONFIG_PARAMETERS": "'diff.noprefix'='true'",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "diff.noprefix",
        "GIT_CONFIG_VALUE_0": "true",
    }


def assert_hostile_env_bites(checkout: Path, env: dict[str, str]) -> None:
    """The environment does break a plain git command: the tests below mean something."""
    plain = subprocess.run(
        ["git", "rev-parse", "--verify", "HEAD"],
        cwd=checkout,
        env=run_env(env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode != 0, plain.stdout


def assert_left_alone(tmp: Path, env: dict[str, str]) -> None:
    """Nothing was written where the variables point."""
    assert list(Path(env["GIT_OBJECT_DIRECTORY"]).iterdir()) == []
    assert not Path(env["GIT_INDEX_FILE"]).exists()


def test_clean_env_is_an_allow_list() -> None:
    from flagtasks.git import GIT_KEPT, clean_env

    dropped = {
        "GIT_DIR": "/nonexistent",
        "GIT_WORK_TREE": "/",
        "GIT_INDEX_FILE": "/tmp/idx",
        "GIT_OBJECT_DIRECTORY": "/tmp/elsewhere",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "/tmp/more",
        "GIT_COMMON_DIR": "/tmp/common",
        "GIT_NAMESPACE": "ns",
        "GIT_CONFIG_PARAMETERS": "'diff.noprefix'='true'",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "diff.noprefix",
        "GIT_CONFIG_VALUE_0": "true",
        "GIT_AUTHOR_NAME": "Mallory",
        "GIT_COMMITTER_DATE": "0 +0000",
        "GIT_TRACE": "1",
    }
    kept = {
        "GIT_SSH_COMMAND": "ssh -i /keys/ci",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/ci",
    }
    environ = {**dropped, **kept, "LC_ALL": "fr_FR.UTF-8", "LANG": "fr_FR.UTF-8"}
    before = dict(environ)
    env = clean_env(environ, {"GIT_INDEX_FILE": "/scratch/index"})
    assert environ == before  # the caller's mapping is not changed
    for name in dropped:
        if name != "GIT_INDEX_FILE":
            assert name not in env, name
    assert env["GIT_INDEX_FILE"] == "/scratch/index"  # what flagtasks itself passes wins
    for name, value in kept.items():
        assert env[name] == value, name
    assert env["LC_ALL"] == "C"
    assert not set(dropped) & GIT_KEPT
    plain = clean_env(environ)
    assert {k for k in plain if k.startswith("GIT_")} - GIT_KEPT <= {
        "GIT_TERMINAL_PROMPT",
        "GIT_PAGER",
    }


def test_doit_ignores_the_callers_git_variables(project: Path, tmp_path: Path) -> None:
    """`doit unpatch:A_X100` and `doit verify` under the hostile environment succeed, build
    the tree the clean run built and write the same patch bytes."""
    env = hostile_env(tmp_path)
    checkout = sample_project(tmp_path / "FlagScale")
    assert_hostile_env_bites(checkout, env)
    built = doit_ok(checkout, f"unpatch:{A}", env=env)
    assert f"unpatch:{A}" in executed(built), describe(built)
    checked = doit_ok(checkout, "verify", env=env)
    assert {f"verify:{dev}" for dev in DEVICES} <= set(executed(checked)), describe(checked)
    assert (
        build_tree_id(checkout, A) == build_tree_id(project, A) == tree_of(project, f"vendor/{A}")
    )
    for dev, base in DEVICES.items():
        folder = f"hardware/{dev}/{git(project, 'rev-parse', base)[:8]}"
        name = f"{folder}/{folder.rsplit('/', 1)[1]}.patch"
        assert (checkout / name).read_bytes() == (project / name).read_bytes(), name
    assert_left_alone(tmp_path, env)


def test_cli_patch_ignores_the_callers_git_variables(tmp_path: Path) -> None:
    """`flagtasks patch` (vendor side) writes the same patch and metadata bytes with the
    hostile environment as without it."""
    checkout = clone_sample(tmp_path / "FlagScale", branches=True)
    env = hostile_env(tmp_path)
    assert_hostile_env_bites(checkout, env)
    args = ("patch", "--device-type", A, "--base-commit-id", "v1.0",
            "--current-commit-id", f"vendor/{A}")  # fmt: skip
    folder = checkout / "hardware" / A / V10_8
    flagtasks_ok(checkout, *args)
    clean = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert f"{V10_8}.patch" in clean
    shutil.rmtree(checkout / "hardware")
    flagtasks_ok(checkout, *args, env=env)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == clean
    assert b"diff --git a/" in clean[f"{V10_8}.patch"]  # diff.noprefix did not get through
    assert_left_alone(tmp_path, env)


# --------------------------------------------------------------------------- 3. errors


@pytest.fixture
def user_side(project: Path, tmp_path: Path) -> Path:
    """A user's checkout (no [vendor] sections) holding a copy of the project's store."""
    checkout = sample_project(tmp_path / "FlagScale", vendors=False)
    shutil.copytree(project / "hardware", checkout / "hardware")
    return checkout


def test_failing_doit_task_and_cli_verify_print_error_lines(user_side: Path) -> None:
    """A stored patch that no longer gives its tree: `doit verify:A_X100` and `flagtasks
    verify` fail with exit 1 and only `error: ` lines (doit's name the task)."""
    patch = user_side / "hardware" / A / V10_8 / f"{V10_8}.patch"
    lines = patch.read_bytes().split(b"\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(b"+") and line[1:2] != b"+")
    lines[at] += b" # tampered"
    patch.write_bytes(b"\n".join(lines))

    task = doit_fails(user_side, 1, f"verify:{A}")
    assert_error_lines(task)
    assert any(line.startswith(f"error: verify:{A}: ") for line in error_lines(task.stderr))
    assert all(f"verify:{A}" in line for line in error_lines(task.stderr)), describe(task)

    cli = flagtasks_fails(user_side, 1, "verify", "--device-type", A)
    assert_error_lines(cli)
    assert A in cli.stderr


def test_verify_store_lists_each_problem_on_its_own_line(tmp_path: Path) -> None:
    checkout = sample_project(tmp_path / "FlagScale", vendors=False)
    (checkout / "hardware" / "not a device").mkdir(parents=True)
    (checkout / "hardware" / "not a device" / "x.patch").write_text("x\n")
    (checkout / "hardware" / A / "notbase8").mkdir(parents=True)
    (checkout / "hardware" / A / "notbase8" / "x.patch").write_text("x\n")
    proc = doit_fails(checkout, 1, "verify:store")
    assert_error_lines(proc, prefix="error: verify:store: ")
    lines = error_lines(proc.stderr)
    device = [line for line in lines if "not a device" in line]
    base = [line for line in lines if "notbase8" in line]
    assert len(device) == 1 and len(base) == 1 and device != base, describe(proc)


def test_cli_unknown_device_is_bad_input(project: Path) -> None:
    proc = flagtasks_fails(project, 2, "unpatch", "--device-type", "Q_Z100", "--commit-id",
                           "v1.0", "--dir", "build", says=["Q_Z100"])  # fmt: skip
    assert_error_lines(proc)
    assert 1 <= len(error_lines(proc.stderr)) <= 2, describe(proc)
    assert not (project / "build" / "Q_Z100").exists()


@pytest.fixture
def not_a_checkout(tmp_path: Path) -> Path:
    folder = tmp_path / "plain"
    folder.mkdir()
    probe = subprocess.run(["git", "-C", str(folder), "rev-parse"], capture_output=True)
    if probe.returncode == 0:  # pragma: no cover - the temp folder is inside a checkout
        pytest.skip(f"{folder} is inside a git checkout")
    return folder


@pytest.mark.parametrize("where", ["after", "before"])
def test_debug_shows_the_traceback(not_a_checkout: Path, where: str) -> None:
    """`--debug` works after the subcommand as well as before it."""
    args = ("status", "--debug") if where == "after" else ("--debug", "status")
    proc = flagtasks(not_a_checkout, *args, allow_traceback="--debug asks for it")
    assert proc.returncode == 2, describe(proc)
    assert "Traceback (most recent call last)" in proc.stderr, describe(proc)
    assert any(line.startswith("error: ") for line in proc.stderr.splitlines()), describe(proc)


def test_without_debug_one_error_line(not_a_checkout: Path) -> None:
    proc = flagtasks_fails(not_a_checkout, 2, "status", says=["git"])
    assert_error_lines(proc)
    assert len(error_lines(proc.stderr)) == 1, describe(proc)
    assert proc.stdout == ""


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("matrix",)])
def test_output_into_a_closed_pipe_ends_quietly(project: Path, args: tuple[str, ...]) -> None:
    """`flagtasks status | head -1` where head has gone: exit 0, nothing on stderr."""
    assert flagtasks_ok(project, *args).stdout.strip()  # there is output to lose
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            flagtasks_argv(*args),
            cwd=project,
            env=run_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# --------------------------------------------------------------------------- 4. keyed vendor


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """A vendor checkout whose A_X100 has a key folder outside it: `doit` (which makes the key
    pair), the store committed, then `doit` again."""
    root = tmp_path_factory.mktemp("keyed")
    key = root / "keys" / "a_x100"
    checkout = sample_project(root / "FlagScale", keys={A: key})
    first = doit_ok(checkout)
    assert (key / "private_key.pem").is_file()
    git(checkout, "add", "--", "hardware")
    git(checkout, "commit", "-q", "-m", "store")
    second = doit_ok(checkout)
    return checkout, [first, second]


def info_lists(proc: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """The list fields of `doit info` (file_dep, targets, task_dep, ...)."""
    fields: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in proc.stdout.splitlines():
        head = re.match(r"^(\w+)\s+:\s*(.*)$", line)
        if head:
            current = fields.setdefault(head.group(1), []) if not head.group(2) else None
        elif current is not None and line.startswith(" - "):
            current.append(line[3:])
        elif not line.strip():
            current = None
    return fields


STAGED = f".flagtasks/stage/{A}/{V10_8}.patch.sealed"


def test_info_shows_the_staged_file_between_format_patch_and_encrypt(keyed) -> None:
    checkout, _ = keyed
    encrypt = doit_ok(checkout, "info", f"encrypt:{A}")
    assert "up-to-date" in encrypt.stdout, describe(encrypt)
    assert STAGED in info_lists(encrypt).get("file_dep", []), describe(encrypt)
    made = doit_ok(checkout, "info", f"format_patch:{A}")
    assert STAGED in info_lists(made).get("targets", []), describe(made)
    assert (checkout / STAGED).is_file()
    assert (checkout / "hardware" / A / V10_8 / f"{V10_8}.patch.encrypted").is_file()
    assert not (checkout / "hardware" / A / V10_8 / f"{V10_8}.patch").exists()


def test_second_keyed_run_executes_nothing_and_leaves_the_store_clean(keyed) -> None:
    checkout, (first, second) = keyed
    assert {f"format_patch:{A}", f"encrypt:{A}", f"unpatch:{A}"} <= set(executed(first))
    assert set(executed(second)) <= ALWAYS, describe(second)
    skipped = set(up_to_date(second))
    assert {f"format_patch:{A}", f"encrypt:{A}"} <= skipped, describe(second)
    assert {f"unpatch:{dev}" for dev in DEVICES} <= skipped, describe(second)
    assert git(checkout, "status", "--porcelain", "--", "hardware") == ""
    assert build_tree_id(checkout, A) == tree_of(checkout, f"vendor/{A}")


# --------------------------------------------------------------------------- 5. the run lock


READERS = {
    "doit list": [DOIT, "list", "--all"],
    "doit list --status": [DOIT, "list", "--all", "--status"],
    "doit info": [DOIT, "info", f"unpatch:{A}"],
    "doit help": [DOIT, "help"],
    "doit help task": [DOIT, "help", "unpatch"],
    "doit tabcompletion": [DOIT, "tabcompletion", "--shell", "bash", "--hardcode-tasks"],
    "flagtasks status": flagtasks_argv("status"),
    "flagtasks status --json": flagtasks_argv("status", "--json"),
    "flagtasks matrix": flagtasks_argv("matrix"),
}
WRITERS = {
    "doit unpatch": [DOIT, "unpatch"],
    "flagtasks verify": flagtasks_argv("verify"),
}


def run_timed(
    checkout: Path, argv: list, timeout: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=checkout,
        env=run_env({"FLAGTASKS_LOCK_TIMEOUT": timeout}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return check_output(proc), time.monotonic() - start


def test_reading_commands_never_wait_for_the_lock(project: Path) -> None:
    with holding_lock(project):
        for what, argv in READERS.items():
            proc, took = run_timed(project, argv, "30")
            assert proc.returncode == 0, f"{what}\n{describe(proc)}"
            assert took < 10, f"{what} took {took:.1f}s\n{describe(proc)}"
            assert "waiting" not in (proc.stdout + proc.stderr).lower(), describe(proc)
            assert proc.stdout.strip(), f"{what} printed nothing"


def test_running_commands_stop_at_a_held_lock(project: Path) -> None:
    trees = {dev: build_tree_id(project, dev) for dev in DEVICES}
    with holding_lock(project):
        for what, argv in WRITERS.items():
            proc, took = run_timed(project, argv, "1")
            assert proc.returncode == 1, f"{what}\n{describe(proc)}"
            assert "another flagtasks run" in proc.stderr, describe(proc)
            assert any(line.startswith("error: ") for line in proc.stderr.splitlines())
            assert executed(proc) == [], describe(proc)
            assert took < 30, f"{what} took {took:.1f}s"
    assert {dev: build_tree_id(project, dev) for dev in DEVICES} == trees


# --------------------------------------------------------------------------- 6. tab completion


@pytest.mark.parametrize("shell", ["zsh", "bash"])
def test_tab_completion_parses_in_a_path_with_an_apostrophe(tmp_path: Path, shell: str) -> None:
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed")
    checkout = sample_project(tmp_path / "o'brien" / "FlagScale")
    proc = doit_ok(checkout, "tabcompletion", "--shell", shell, "--hardcode-tasks")
    for task in ("format_patch", "verify", "unpatch"):
        assert task in proc.stdout, describe(proc)
    script = tmp_path / f"completion.{shell}"
    script.write_text(proc.stdout)
    parsed = subprocess.run([binary, "-n", str(script)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr


# --------------------------------------------------------------------------- 7. --help


def commands(tmp_path: Path) -> list[str]:
    """The subcommands `flagtasks --help` lists."""
    out = flagtasks_ok(tmp_path, "--help").stdout
    listed = re.findall(r"^    ([a-z][a-z-]*)\s", out, re.MULTILINE)
    assert {"patch", "unpatch", "verify", "status", "init", "matrix"} <= set(listed), out
    return listed


def options(help_text: str) -> dict[str, str]:
    """Each option of an argparse help page -> its help text (wrapped lines joined)."""
    found: dict[str, str] = {}
    current: str | None = None
    for line in help_text.split("\n\n", 1)[1].splitlines():
        entry = re.match(r"^  (?:-\w, )?(--[\w-]+)(.*)$", line)
        if entry:
            current, rest = entry.groups()
            if re.match(r"\s{2,}", rest):  # no metavar: the help follows
                found[current] = rest.strip()
            else:  # a metavar (single spaces), then maybe the help after two or more
                parts = re.split(r"\s{2,}", rest.strip(), maxsplit=1)
                found[current] = parts[1] if len(parts) > 1 else ""
        elif current is not None and line.startswith("   ") and line.strip():
            found[current] = f"{found[current]} {line.strip()}".strip()
        else:
            current = None
    return found


def required_in_usage(help_text: str) -> set[str]:
    """Options the usage line shows outside brackets."""
    usage = " ".join(help_text.split("\n\n", 1)[0].split())
    return set(re.findall(r"(?<=\s)(--[\w-]+)", usage)) - set(re.findall(r"\[(--[\w-]+)", usage))


def test_every_command_has_help(tmp_path: Path) -> None:
    for cmd in commands(tmp_path):
        proc = flagtasks_ok(tmp_path, cmd, "--help")
        assert proc.stdout.startswith(f"usage: flagtasks {cmd}"), describe(proc)


@pytest.mark.parametrize("cmd", ["patch", "unpatch", "verify", "status", "rebase"])
def test_every_option_says_its_default_or_required(tmp_path: Path, cmd: str) -> None:
    if cmd not in commands(tmp_path):
        pytest.skip(f"no `flagtasks {cmd}`")
    text = flagtasks_ok(tmp_path, cmd, "--help").stdout
    found = options(text)
    found.pop("--help", None)
    assert found, text
    required = required_in_usage(text)
    for flag, help_ in found.items():
        assert help_, f"{cmd} {flag} has no help text\n{text}"
        if flag in required:
            assert "(required)" in help_, f"{cmd} {flag}: {help_!r}"
        else:
            assert "default" in help_.lower(), f"{cmd} {flag}: {help_!r}"
