"""Vendor-side work never changes the vendor's checkout: work tree, index, HEAD, refs, stash."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import Runs, describe, git
from repos import (
    add_vendor_branch,
    build_base,
    build_tree,
    make_project,
    read_meta,
    settle_index,
    snapshot,
    snapshot_diff,
    tree_of,
    worktree_mismatches,
    write,
)

VENDOR_DEV = "A_X100"
HEAD_DEV = "H_HEAD"  # no `current`: defaults to HEAD, the checkout's own (dirty) branch


class Dirty:
    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.runs = Runs(repo)
        self.pristine = snapshot(repo)

    def assert_untouched(self) -> None:
        after = snapshot(self.repo)
        assert snapshot_diff(self.pristine, after) == []
        assert after == self.pristine


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Dirty:
    repo = tmp_path_factory.mktemp("dirty") / "upstream"
    build_base(repo)
    add_vendor_branch(repo, "vendor/a", {"a.txt": "A adaptation\n", "lib.py": "# vendor lib\n"})
    git(repo, "checkout", "-q", "-b", "topic", "v1.0")
    write(repo, {"topic.txt": "local work\n"})
    git(repo, "add", "topic.txt")
    git(repo, "commit", "-q", "-m", "topic: local work")
    write(repo, {"README.md": "an edit that went to the stash\n"})
    git(repo, "stash", "push", "-q", "-m", "wip: stashed edit")
    write(repo, {"lib.py": "# staged edit\n", "conflict.txt": "staged\n"})
    git(repo, "add", "lib.py", "conflict.txt")
    write(repo, {"conflict.txt": "staged, then edited again\n", "cfg/ws.txt": "unstaged edit\n"})
    (repo / "keep" / "phoenix.txt").unlink()
    write(repo, {"notes.txt": "untracked\n", "scratch/new.py": "x = 1\n", "debug.log": "ignored\n"})
    with (repo / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("*.log\n")
    make_project(
        repo,
        {
            VENDOR_DEV: {"base": "v1.0", "current": "vendor/a", "mode": "auto"},
            HEAD_DEV: {"base": "v1.0"},
        },
    )
    settle_index(repo)
    return Dirty(repo)


def test_fixture_checkout_is_dirty_on_another_branch(dirty: Dirty) -> None:
    status = dirty.pristine["status"]
    assert isinstance(status, list)
    codes = {entry[:2] for entry in status}
    assert {"M ", "MM", " M", " D", "??"} <= codes, status
    assert git(dirty.repo, "symbolic-ref", "--short", "HEAD") == "topic"
    assert "wip: stashed edit" in str(dirty.pristine["stash"])
    files = dirty.pristine["files"]
    assert isinstance(files, dict)
    assert "debug.log" in files
    assert "dodo.py" in files


def test_format_patch_leaves_checkout_untouched(dirty: Dirty) -> None:
    proc = dirty.runs("format_patch")
    assert proc.returncode == 0, describe(proc)
    dirty.assert_untouched()


def test_verify_leaves_checkout_untouched(dirty: Dirty) -> None:
    dirty.runs.ok("format_patch")
    proc = dirty.runs("verify")
    assert proc.returncode == 0, describe(proc)
    dirty.assert_untouched()


def test_unpatch_leaves_checkout_untouched(dirty: Dirty) -> None:
    dirty.runs.ok("format_patch")
    proc = dirty.runs("unpatch")
    assert proc.returncode == 0, describe(proc)
    dirty.assert_untouched()


def test_default_current_is_the_committed_head(dirty: Dirty) -> None:
    dirty.runs.ok("format_patch")
    meta = read_meta(dirty.repo, HEAD_DEV, "v1.0")
    assert meta["current"] == git(dirty.repo, "rev-parse", "topic")
    assert meta["tree"] == tree_of(dirty.repo, "topic")
    dirty.runs.ok("unpatch")
    build = build_tree(dirty.repo, HEAD_DEV)
    assert worktree_mismatches(build, dirty.repo, "topic") == []
    assert (build / "lib.py").read_text() == "# upstream lib\n"  # not the staged edit
    assert not (build / "notes.txt").exists()
