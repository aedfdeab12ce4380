"""Histories a format-patch series cannot reproduce: series refuses, auto falls back to squash."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures import Runs, describe, git, rev
from repos import (
    Scenario,
    build_conflict_merge,
    build_subtree_merge,
    build_tree,
    make_project,
    patch_file,
    read_meta,
    sha256,
    tree_of,
    worktree_mismatches,
)

SERIES = "M_SERIES"
AUTO = "M_AUTO"

BUILDERS: dict[str, Callable[[Path], Scenario]] = {
    "conflict-merge": build_conflict_merge,
    "subtree-merge": build_subtree_merge,
}


@dataclass
class Merged:
    sc: Scenario
    runs: Runs

    @property
    def project(self) -> Path:
        return self.sc.repo


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def merged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Merged:
    sc = BUILDERS[request.param](tmp_path_factory.mktemp(request.param) / "upstream")
    make_project(
        sc.repo,
        {
            SERIES: {"base": sc.base, "current": sc.current, "mode": "series"},
            AUTO: {"base": sc.base, "current": sc.current, "mode": "auto"},
        },
    )
    return Merged(sc, Runs(sc.repo))


def store_state(project: Path) -> dict[str, tuple[int, str]]:
    """Every path below hardware/ with its mtime and content hash."""
    out: dict[str, tuple[int, str]] = {}
    root = project / "hardware"
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = (
                path.stat().st_mtime_ns,
                sha256(path.read_bytes()),
            )
    return out


def series_failure(m: Merged) -> tuple[object, dict[str, tuple[int, str]], object]:
    """Run auto first (so the store is not empty), then series; the store before and after."""
    m.runs(f"format_patch:{AUTO}")
    before = store_state(m.project)
    proc = m.runs(f"format_patch:{SERIES}")
    return proc, before, store_state(m.project)


def test_fixture_history_really_defeats_format_patch_and_am(merged: Merged) -> None:
    problem = merged.sc.notes["reference_git_am"]
    assert isinstance(problem, str)
    assert problem.startswith("patch does not apply") or problem == "tree differs"


def test_series_mode_fails_with_exit_1(merged: Merged) -> None:
    proc, _, _ = series_failure(merged)
    assert proc.returncode == 1, describe(proc)


def test_series_failure_names_the_commit_that_does_not_apply(merged: Merged) -> None:
    proc, _, _ = series_failure(merged)
    output = proc.stdout + proc.stderr
    names = [sha[:7] for sha in merged.sc.notes["culprits"]] + merged.sc.notes["subjects"]
    assert any(name in output for name in names), f"none of {names} named:\n{describe(proc)}"


def test_series_failure_is_a_short_message_on_stderr(merged: Merged) -> None:
    proc, _, _ = series_failure(merged)
    names = [sha[:7] for sha in merged.sc.notes["culprits"]] + merged.sc.notes["subjects"]
    assert any(name in proc.stderr for name in names), describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, describe(proc)


def test_series_failure_leaves_the_store_unchanged(merged: Merged) -> None:
    _, before, after = series_failure(merged)
    assert before, "auto mode should have written the store first"
    assert after == before
    assert not (merged.project / "hardware" / SERIES).exists()


def test_auto_falls_back_to_squash_and_says_so(merged: Merged) -> None:
    proc = merged.runs.ok(f"format_patch:{AUTO}")
    assert "squash" in (proc.stdout + proc.stderr).lower(), describe(proc)
    meta = read_meta(merged.project, AUTO, merged.sc.base)
    assert meta["mode"] == "squash"
    assert meta["tree"] == tree_of(merged.project, merged.sc.current)
    data = patch_file(merged.project, AUTO, merged.sc.base).read_bytes()
    assert (
        data.count(b"\nFrom 0000000000000000000000000000000000000000 ")
        + data.startswith(b"From 0000000000000000000000000000000000000000 ")
        == 1
    )


def test_auto_squash_verifies_and_unpatches_to_current_tree(merged: Merged) -> None:
    merged.runs.ok(f"format_patch:{AUTO}")
    merged.runs.ok(f"verify:{AUTO}")
    merged.runs.ok(f"unpatch:{AUTO}")
    build = build_tree(merged.project, AUTO)
    assert git(build, "rev-parse", "HEAD^{tree}") == tree_of(merged.project, merged.sc.current)
    assert worktree_mismatches(build, merged.project, merged.sc.current) == []
    base = rev(merged.project, f"{merged.sc.base}^{{commit}}")
    assert git(build, "rev-parse", "HEAD^") == base
    assert git(build, "log", "-1", "--format=%s") == git(
        merged.project, "log", "-1", "--format=%s", merged.sc.current
    )
