"""Two devices: only what is stale is rebuilt, and a no-op run does nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures import describe, doit, executed, git, up_to_date
from repos import (
    add_vendor_branch,
    build_base,
    build_tree,
    commit_on,
    make_project,
    patch_file,
    tree_of,
    worktree_mismatches,
)

A, B = "A_X100", "B_Y100"
BRANCH = {A: "vendor/a", B: "vendor/b"}


@dataclass
class Built:
    project: Path
    first: subprocess.CompletedProcess[str]


def tree_state(build: Path) -> dict[str, object]:
    """What a rebuild, even an identical one, would change: inodes and mtimes of the tree's
    folder and files, and its HEAD."""
    files = {}
    for dirpath, dirs, names in os.walk(build):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            st = os.lstat(Path(dirpath, name))
            files[Path(dirpath, name).relative_to(build).as_posix()] = (st.st_ino, st.st_mtime_ns)
    return {
        "folder inode": build.stat().st_ino,
        "HEAD": git(build, "rev-parse", "HEAD"),
        "files": files,
    }


@pytest.fixture
def built(tmp_path: Path) -> Built:
    repo = tmp_path / "upstream"
    build_base(repo)
    add_vendor_branch(repo, BRANCH[A], {"a.txt": "A adaptation\n", "lib.py": "# A lib\n"})
    add_vendor_branch(repo, BRANCH[B], {"b.txt": "B adaptation\n", "README.md": "# B\n"})
    make_project(
        repo,
        {dev: {"base": "v1.0", "current": BRANCH[dev], "mode": "auto"} for dev in (A, B)},
    )
    made = doit(repo, f"format_patch:{A}", f"format_patch:{B}")
    assert made.returncode == 0, describe(made)
    first = doit(repo, "unpatch")
    assert first.returncode == 0, describe(first)
    return Built(repo, first)


def assert_built(project: Path, dev: str) -> None:
    build = build_tree(project, dev)
    assert git(build, "rev-parse", "HEAD^{tree}") == tree_of(project, BRANCH[dev])
    assert worktree_mismatches(build, project, BRANCH[dev]) == []


def test_unpatch_builds_every_device(built: Built) -> None:
    assert {f"unpatch:{A}", f"unpatch:{B}"} <= set(executed(built.first)), describe(built.first)
    assert_built(built.project, A)
    assert_built(built.project, B)


def test_second_run_does_nothing(built: Built) -> None:
    before = {dev: tree_state(build_tree(built.project, dev)) for dev in (A, B)}
    again = doit(built.project, "unpatch")
    assert again.returncode == 0, describe(again)
    assert executed(again) == [], describe(again)
    assert {f"unpatch:{A}", f"unpatch:{B}"} <= set(up_to_date(again)), describe(again)
    assert {dev: tree_state(build_tree(built.project, dev)) for dev in (A, B)} == before


def test_unchanged_format_patch_is_up_to_date(built: Built) -> None:
    patches = [patch_file(built.project, dev, "v1.0") for dev in (A, B)]
    mtimes = [p.stat().st_mtime_ns for p in patches]
    again = doit(built.project, f"format_patch:{A}", f"format_patch:{B}")
    assert again.returncode == 0, describe(again)
    assert executed(again) == [], describe(again)
    assert [p.stat().st_mtime_ns for p in patches] == mtimes


def test_new_patch_rebuilds_that_device_only(built: Built) -> None:
    untouched = tree_state(build_tree(built.project, A))
    commit_on(built.project, BRANCH[B], "B: more tuning", {"b.txt": "B adaptation, v2\n"})
    regen = doit(built.project, f"format_patch:{B}")
    assert regen.returncode == 0, describe(regen)
    assert f"format_patch:{B}" in executed(regen), describe(regen)
    proc = doit(built.project, "unpatch")
    assert proc.returncode == 0, describe(proc)
    assert f"unpatch:{B}" in executed(proc), describe(proc)
    assert not [task for task in executed(proc) if A in task], describe(proc)
    assert (build_tree(built.project, B) / "b.txt").read_text() == "B adaptation, v2\n"
    assert_built(built.project, B)
    assert tree_state(build_tree(built.project, A)) == untouched


def test_deleted_build_tree_is_the_only_stale_one(built: Built) -> None:
    untouched = tree_state(build_tree(built.project, B))
    shutil.rmtree(build_tree(built.project, A))
    proc = doit(built.project, "unpatch")
    assert proc.returncode == 0, describe(proc)
    assert executed(proc) == [f"unpatch:{A}"], describe(proc)
    assert f"unpatch:{B}" in up_to_date(proc), describe(proc)
    assert_built(built.project, A)
    assert tree_state(build_tree(built.project, B)) == untouched


def test_doit_list_shows_the_tasks(built: Built) -> None:
    groups = doit(built.project, "list")
    assert groups.returncode == 0, describe(groups)
    listed = {line.split()[0] for line in groups.stdout.splitlines() if line.strip()}
    assert {"format_patch", "verify", "unpatch"} <= listed, describe(groups)
    every = doit(built.project, "list", "--all")
    assert every.returncode == 0, describe(every)
    listed_all = {line.split()[0] for line in every.stdout.splitlines() if line.strip()}
    wanted = {f"{task}:{dev}" for task in ("format_patch", "verify", "unpatch") for dev in (A, B)}
    assert wanted <= listed_all, describe(every)
