"""Errors of the `flagtasks` command line (SPEC.md "Errors and exit codes"): the exit code,
a message naming the thing, no traceback, and nothing changed by a refused run.

The refused runs are independent, so each gets its own copy of the store checkout and they
all run at once in a module fixture; the tests then look at the results one by one."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures import (
    V10_8,
    A,
    B,
    check_output,
    clean_env,
    clone_sample,
    copy_of,
    describe,
    flagtasks,
    flagtasks_fails,
    git,
    run_parallel,
)
from repos import Frozen, ambiguous_prefix

V10_FULL = "50b3e4bf46b7410dacbafd4a74fc457e8a05cf4c"
BAD_NAMES = ("../x", "a/b", "-rf", "A X", "noUnderscore", ".hidden_x")
PATCH_A = ("patch", "--device-type", A, "--base-commit-id", "v1.0")


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    words: tuple[str, ...] = ()  # must all appear in stderr
    absent: tuple[str, ...] = ()  # must not appear in stderr
    config: str | None = None  # config.toml to write first
    ambiguous: bool = False  # "PREFIX" in args = 4 hex digits two commits share
    usage: bool = False  # an argparse usage error (usage lines, then the error)


def _bad_name(name: str) -> Case:
    return Case(("patch", f"--device-type={name}", "--base-commit-id", "v1.0"), ("invalid device",))


def _config(toml: str, *words: str) -> Case:
    return Case(PATCH_A, ("config.toml", *words), config=toml)


CASES: dict[str, Case] = {
    # unknown and ambiguous commits
    "commit/unknown-base": Case(
        ("patch", "--device-type", A, "--base-commit-id", "no-such-rev"),
        ("not found", "no-such-rev"),
        absent=("shallow",),
    ),
    "commit/unknown-unpatch": Case(
        ("unpatch", "--device-type", A, "--commit-id", "no-such-rev", "--dir", "out"),
        ("not found", "no-such-rev"),
        absent=("shallow",),
    ),
    "commit/unknown-base8-shaped": Case(
        ("unpatch", "--device-type", A, "--commit-id", "deadbeef", "--dir", "out"),
        ("deadbeef",),
    ),
    "commit/ambiguous-patch": Case(
        ("patch", "--device-type", A, "--base-commit-id", "PREFIX"),
        ("ambiguous",),
        ambiguous=True,
    ),
    "commit/ambiguous-unpatch": Case(
        ("unpatch", "--device-type", A, "--commit-id", "PREFIX", "--dir", "out"),
        ("ambiguous",),
        ambiguous=True,
    ),
    # device names
    **{f"device/{name}": _bad_name(name) for name in BAD_NAMES},
    "device/unpatch": Case(
        ("unpatch", "--device-type", "../x", "--commit-id", V10_8, "--dir", "out"),
        ("invalid device",),
    ),
    "device/verify": Case(("verify", "--device-type", "a/b"), ("invalid device",)),
    # other bad input
    "input/device-twice": Case((*PATCH_A[:3], A, *PATCH_A[3:]), ("twice",)),
    "input/unpatch-unknown-device": Case(
        ("unpatch", "--device-type", "Q_Q1", "--commit-id", V10_8, "--dir", "out"), ("Q_Q1",)
    ),
    "input/hetero-unpatch-needs-dir": Case(
        ("unpatch", "--device-type", A, B, "--commit-id", V10_8), ("--dir",)
    ),
    "input/key-path-in-repo": Case((*PATCH_A, "--key-path", "keys"), ("inside",)),
    "input/missing-device-type": Case(
        ("patch", "--base-commit-id", "v1.0"), ("--device-type",), usage=True
    ),
    # config.toml
    "config/unknown-key": _config('[upstream]\nrepo = "."\nhardwar = "hw"\n', "hardwar"),
    "config/unknown-section": _config('[vendr.A_X100]\nbase = "v1.0"\n', "vendr"),
    "config/wrong-type": _config("[upstream]\nhardware = 3\n", "upstream.hardware", "string"),
    "config/wrong-mode": _config(
        f'[vendor.{A}]\nbase = "v1.0"\nmode = "fast"\n', f"vendor.{A}.mode", "squash"
    ),
    "config/missing-base": _config(f'[vendor.{A}]\nmode = "squash"\n', f"vendor.{A}.base"),
    "config/escaping-build": _config(
        '[upstream]\nbuild = "../outside"\n', "upstream.build", "../outside"
    ),
    "config/invalid-toml": _config('[upstream\nrepo = "."\n', "TOML"),
    "config/status": Case(("status",), ("config.toml", "bild"), config='[upstream]\nbild = "o"\n'),
}


@dataclass
class Ran:
    repo: Path
    proc: subprocess.CompletedProcess[str]
    frozen: Frozen


@pytest.fixture(scope="module")
def refused(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ran]:
    jobs, frozen = {}, {}
    for key, case in CASES.items():
        repo = copy_of(store, tmp_path_factory.mktemp("refused"))
        if case.config is not None:
            (repo / "config.toml").write_text(case.config)
        args = case.args
        if case.ambiguous:
            prefix = ambiguous_prefix(repo)
            probe = subprocess.run(
                ["git", "rev-parse", "--verify", prefix],
                cwd=repo,
                env=clean_env(),
                capture_output=True,
                text=True,
                check=False,
            )
            assert "ambiguous" in probe.stderr, "fixture broken: the prefix is not ambiguous"
            args = tuple(prefix if a == "PREFIX" else a for a in args)
        frozen[key] = Frozen(repo)
        jobs[key] = (repo, args)
    procs = run_parallel(jobs)
    return {key: Ran(jobs[key][0], procs[key], frozen[key]) for key in jobs}


@pytest.mark.parametrize("key", list(CASES))
def test_refused_with_exit_2_and_nothing_changed(refused: dict[str, Ran], key: str) -> None:
    case, ran = CASES[key], refused[key]
    proc = ran.proc
    check_output(proc)
    assert proc.returncode == 2, describe(proc)
    for word in case.words:
        assert word in proc.stderr, f"{word!r} not in stderr\n{describe(proc)}"
    for word in case.absent:
        assert word not in proc.stderr, f"{word!r} in stderr\n{describe(proc)}"
    if not case.usage:
        lines = proc.stderr.strip().splitlines()
        assert 1 <= len(lines) <= 2, f"errors are one or two lines\n{describe(proc)}"
    ran.frozen.assert_unchanged()
    for leftover in ("out", "keys", "o"):
        assert not (ran.repo / leftover).exists(), leftover
    for escaped in ("x", "outside"):
        assert not (ran.repo.parent / escaped).exists(), escaped


# --------------------------------------------------------------------------- shallow clone


SHALLOW = {
    "patch-tag": ("patch", "--device-type", A, "--base-commit-id", "v1.0"),
    "unpatch-dir": ("unpatch", "--device-type", A, "--commit-id", V10_8, "--dir", "out"),
    "unpatch-in-place": ("unpatch", "--device-type", A, "--commit-id", V10_8),
    "verify": ("verify",),
}


@pytest.fixture(scope="module")
def shallow(tmp_path_factory: pytest.TempPathFactory, store: Path) -> dict[str, Ran]:
    """Depth-1 clones of the sample (main = v1.1 only) holding the store made on v1.0."""
    first = clone_sample(tmp_path_factory.mktemp("shallow") / "FlagScale", depth=1)
    assert git(first, "rev-parse", "--is-shallow-repository") == "true"
    shutil.copytree(store / "hardware", first / "hardware")
    jobs, frozen = {}, {}
    for key, args in SHALLOW.items():
        repo = copy_of(first, tmp_path_factory.mktemp("shallow"))
        frozen[key] = Frozen(repo)
        jobs[key] = (repo, args)
    procs = run_parallel(jobs)
    return {key: Ran(jobs[key][0], procs[key], frozen[key]) for key in jobs}


@pytest.mark.parametrize("key", list(SHALLOW))
def test_shallow_clone_lacking_the_base_says_fetch_more_history(
    shallow: dict[str, Ran], key: str
) -> None:
    """The base is an unknown commit here (exit 2), and the hint is to fetch more history;
    verify may report it as a failed check (exit 1) but must give the same hint."""
    ran = shallow[key]
    proc = ran.proc
    check_output(proc)
    assert proc.returncode in ((1, 2) if key == "verify" else (2,)), describe(proc)
    assert "fetch" in proc.stderr, describe(proc)
    assert "history" in proc.stderr or "unshallow" in proc.stderr, describe(proc)
    ran.frozen.assert_unchanged()
    assert not (ran.repo / "out").exists()


# --------------------------------------------------------------------------- writes nothing


def test_refused_run_creates_no_state_folder(tmp_path: Path, store: Path) -> None:
    """Refused before any work: not even the private state folder .flagtasks/ appears."""
    repo = tmp_path / "FlagScale"
    shutil.copytree(store, repo, symlinks=True, ignore=shutil.ignore_patterns(".flagtasks"))
    flagtasks_fails(repo, 2, "patch", "--device-type", "../x", "--base-commit-id", "v1.0")
    assert sorted(p.name for p in repo.iterdir() if p.name.startswith(".flagtasks")) == []


def test_version_writes_nothing(tmp_path: Path) -> None:
    """`flagtasks --version` in any folder (here: not a checkout) leaves it empty."""
    proc = flagtasks(tmp_path, "--version")
    assert proc.returncode == 0, describe(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_not_a_checkout(tmp_path: Path) -> None:
    proc = flagtasks_fails(tmp_path, 2, "status")
    assert "git" in proc.stderr


# --------------------------------------------------------------------------- output


def test_debug_shows_the_traceback_and_keeps_the_exit_code(store: Path) -> None:
    proc = flagtasks(
        store,
        "--debug",
        "patch",
        "--device-type",
        A,
        "--base-commit-id",
        "nope",
        allow_traceback="--debug shows the traceback, as this test checks",
    )
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" in proc.stderr
    assert "not found" in proc.stderr


HELP = ["", "patch", "unpatch", "verify", "status", "init"]


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("help")
    return run_parallel({cmd: (cwd, [*([cmd] if cmd else []), "--help"]) for cmd in HELP})


@pytest.mark.parametrize("command", HELP, ids=[c or "top" for c in HELP])
def test_help_shows_an_example(helps: dict, command: str) -> None:
    proc = helps[command]
    check_output(proc)
    assert proc.returncode == 0, describe(proc)
    assert "example" in proc.stdout.lower()
    assert f"flagtasks {command}".strip() in proc.stdout


def test_sample_clone_is_what_the_tests_expect(sample: Path) -> None:
    """Guards the constants: v1.0's SHA in the sample."""
    assert git(sample, "rev-parse", "v1.0") == V10_FULL
    assert V10_FULL[:8] == V10_8
