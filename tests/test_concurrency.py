"""Concurrency: two runs at once on one checkout (two terminals, two CI steps) never corrupt a
tree, the store or the dependency file. The second waits for the first (saying so) or stops
with a clear message; afterwards every tree is right and `doit` has nothing left to do.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from fixtures import (
    DEVICES,
    DOIT,
    check_output,
    describe,
    doit,
    executed,
    flagtasks,
    flagtasks_argv,
    git,
    holding_lock,
    run_env,
    sample_project,
)
from repos import tree_of, worktree_mismatches

ALWAYS = {"verify:store"}
"""Store hygiene looks at the whole repository, so it runs every time by design."""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project for the module, every tree built. Each test leaves it all correct (its
    last step checks so), which is also the next test's starting point."""
    path = sample_project(tmp_path_factory.mktemp("concurrency") / "FlagScale")
    built = doit(path)
    assert built.returncode == 0, describe(built)
    return path


def start(project: Path, argv: list[str], name: str, env: dict[str, str] | None = None):
    """Start a command with stdout/stderr going to files (readable while it runs)."""
    out = (project.parent / f"{name}.out").open("w+")
    err = (project.parent / f"{name}.err").open("w+")
    proc = subprocess.Popen(argv, cwd=project, env=run_env(env), stdout=out, stderr=err)
    return proc, out, err


def finish(started) -> subprocess.CompletedProcess[str]:
    proc, out, err = started
    proc.wait(timeout=180)
    out.seek(0)
    err.seek(0)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    out.close()
    err.close()
    return check_output(result)


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_all_correct(project: Path) -> None:
    """Trees, store and dependency file are all sound, and nothing is left to do."""
    for dev in DEVICES:
        dest = project / "build" / dev / "FlagScale"
        assert git(dest, "rev-parse", "HEAD^{tree}") == tree_of(project, f"vendor/{dev}"), dev
        assert worktree_mismatches(dest, project, f"vendor/{dev}") == [], dev
        assert git(dest, "status", "--porcelain", "--untracked-files=all") == "", dev
        assert sorted(p.name for p in dest.parent.iterdir()) == ["FlagScale"], dev
    dep = project / ".flagtasks" / "doit-state.sqlite3"
    with sqlite3.connect(dep) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    again = doit(project)
    assert again.returncode == 0, describe(again)
    assert set(executed(again)) <= ALWAYS, describe(again)


def unpatch_counts(*runs: subprocess.CompletedProcess[str]) -> dict[str, int]:
    counts = dict.fromkeys(DEVICES, 0)
    for run in runs:
        for task in executed(run):
            if task.startswith("unpatch:"):
                counts[task.split(":", 1)[1]] += 1
    return counts


def forget_unpatch(project: Path) -> None:
    forgot = doit(project, "forget", *[f"unpatch:{dev}" for dev in DEVICES])
    assert forgot.returncode == 0, describe(forgot)


def test_second_run_waits_for_the_first(project: Path) -> None:
    """Two `doit unpatch` and a `flagtasks unpatch --dir build` while another run holds the
    lock: each says it waits, then they run one after the other and share one dependency
    state, so each tree is built exactly once."""
    forget_unpatch(project)
    cli_unpatch = flagtasks_argv(
        "unpatch", "--device-type", "A_X100", "--commit-id", "v1.0", "--dir", "build"
    )
    with holding_lock(project):
        pending = {
            "first": start(project, [DOIT, "unpatch"], "first"),
            "second": start(project, [DOIT, "unpatch"], "second"),
            "cli": start(project, cli_unpatch, "cli"),
        }
        for name in pending:
            err = project.parent / f"{name}.err"
            wait_for(lambda err=err: "waiting" in err.read_text(), f"{name} to say it waits")
    runs = [finish(p) for p in pending.values()]
    for run in runs:
        assert run.returncode == 0, describe(run)
        assert "waiting for another flagtasks run" in run.stderr, describe(run)
    assert unpatch_counts(*runs) == dict.fromkeys(DEVICES, 1), [describe(r) for r in runs]
    assert_all_correct(project)


def test_two_unpatch_runs_race(project: Path) -> None:
    """No gate: the two runs overlap however the scheduler likes."""
    forget_unpatch(project)
    pending = [start(project, [DOIT, "unpatch"], f"run{i}") for i in range(2)]
    runs = [finish(p) for p in pending]
    for run in runs:
        assert run.returncode == 0, describe(run)
        assert "Traceback" not in run.stderr, describe(run)
    assert unpatch_counts(*runs) == dict.fromkeys(DEVICES, 1), [describe(r) for r in runs]
    assert_all_correct(project)


def test_status_while_doit_runs(project: Path) -> None:
    """`flagtasks status` during a full `doit`: it answers (or fails clearly), never
    disturbs the run, and the dependency file stays sound."""
    forget_unpatch(project)
    shutil.rmtree(project / "build" / "B_Y100")
    running = start(project, [DOIT], "doit")
    statuses = []
    while running[0].poll() is None or not statuses:
        statuses.append(flagtasks(project, "status"))
    run = finish(running)
    assert run.returncode == 0, describe(run)
    for status in statuses:
        assert status.returncode in (0, 1), describe(status)
        assert "Traceback" not in status.stderr, describe(status)
        if status.returncode:
            assert len(status.stderr.strip().splitlines()) <= 2, describe(status)
        else:
            assert "A_X100" in status.stdout, describe(status)
    assert_all_correct(project)
    final = flagtasks(project, "status")
    assert final.returncode == 0, describe(final)
    table = final.stdout.split("\n\n", 1)[0].splitlines()  # the legend follows a blank line
    assert [line.split()[4] for line in table[1:]] == ["built"] * 3


@pytest.mark.parametrize(
    "parallel", [["-n", "4"], ["-n", "2", "-P", "thread"]], ids=["process", "thread"]
)
def test_two_parallel_runs_at_once(project: Path, parallel: list[str]) -> None:
    """Two `doit -n N` (processes or threads), each building every device in parallel, at
    the same time, after the vendors changed two adaptations."""
    for dev in ("A_X100", "C_Z200"):
        git(project, "checkout", "-q", f"vendor/{dev}")
        (project / f"{dev}.txt").write_text(f"{dev} tuned for {' '.join(parallel)}\n")
        git(project, "add", f"{dev}.txt")
        git(project, "commit", "-q", "-m", f"[{dev}] more tuning")
    git(project, "checkout", "-q", "main")
    forget_unpatch(project)
    pending = [start(project, [DOIT, *parallel], f"par{i}") for i in range(2)]
    runs = [finish(p) for p in pending]
    for run in runs:
        assert run.returncode == 0, describe(run)
        assert "Traceback" not in run.stderr, describe(run)
    made = [t for r in runs for t in executed(r) if t.startswith("format_patch:")]
    assert sorted(made) == ["format_patch:A_X100", "format_patch:C_Z200"], made
    assert unpatch_counts(*runs) == dict.fromkeys(DEVICES, 1), [describe(r) for r in runs]
    for dev in ("A_X100", "C_Z200"):
        assert (project / "build" / dev / "FlagScale" / f"{dev}.txt").is_file()
    assert_all_correct(project)


def test_a_run_that_cannot_get_the_lock_stops_clearly(project: Path) -> None:
    """With a short FLAGTASKS_LOCK_TIMEOUT the second run gives up: one clear line naming
    the other run, exit 1, nothing changed."""
    dest = project / "build" / "A_X100" / "FlagScale"
    forget_unpatch(project)
    before_head = git(dest, "rev-parse", "HEAD")
    before_inode = dest.stat().st_ino
    store = sorted(p.relative_to(project) for p in (project / "hardware").rglob("*"))
    env = {"FLAGTASKS_LOCK_TIMEOUT": "0.5"}
    with holding_lock(project):
        runs = [
            doit(project, "unpatch:A_X100", env=env),
            flagtasks(
                project,
                "unpatch",
                "--device-type",
                "A_X100",
                "--commit-id",
                "v1.0",
                "--dir",
                "build",
                env=env,
            ),
        ]
    for run in runs:
        assert run.returncode == 1, describe(run)
        assert "Traceback" not in run.stderr, describe(run)
        assert "waiting for another flagtasks run" in run.stderr, describe(run)
        assert f"pid {os.getpid()}" in run.stderr, describe(run)
        assert "FLAGTASKS_LOCK_TIMEOUT" in run.stderr, describe(run)
    assert git(dest, "rev-parse", "HEAD") == before_head
    assert dest.stat().st_ino == before_inode
    assert sorted(p.relative_to(project) for p in (project / "hardware").rglob("*")) == store
