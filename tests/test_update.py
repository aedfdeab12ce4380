"""Updates in place: a tree whose patch or base changed is moved, not rebuilt, and the
result is exactly what a fresh build gives (commits, branch, base tag, files, marker).

A fresh build of the same adaptation into another folder (`flagtasks unpatch --dir`) is
the reference for every comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

from fixtures import describe, doit, doit_ok, executed, flagtasks_ok, git, rev
from repos import (
    add_vendor_branch,
    build_base,
    build_edge_case,
    commit,
    make_project,
    worktree_mismatches,
    write_config,
)

DEV = "A_X100"


def _tree(project: Path, folder: str = "build") -> Path:
    return project / folder / DEV / "FlagScale"


def _identity(tree: Path) -> dict[str, object]:
    """Everything a fresh build and an update must agree on."""
    marker = json.loads((tree / ".git" / "flagtasks-build.json").read_text())
    return {
        "HEAD": git(tree, "symbolic-ref", "HEAD"),
        "head": rev(tree, "HEAD"),
        "log": git(tree, "log", "--format=%H %an %ae %at %cn %ce %ct %s"),
        "refs": git(tree, "for-each-ref", "--format=%(refname) %(objectname)"),
        "index": git(tree, "ls-files", "-s"),
        "status": git(tree, "status", "--porcelain", "--untracked-files=all", "--ignored"),
        "marker": marker,
    }


def _fresh(project: Path, base: str, folder: str) -> Path:
    flagtasks_ok(project, "unpatch", "--device-type", DEV, "--commit-id", base, "--dir", folder)
    return _tree(project, folder)


def _update(project: Path) -> str:
    run = doit_ok(project, f"unpatch:{DEV}")
    assert f"unpatch:{DEV}" in executed(run), describe(run)
    assert "updated" in run.stdout and "in place" in run.stdout, describe(run)
    return run.stdout


def test_changed_patch_updates_in_place_to_the_fresh_result(tmp_path: Path) -> None:
    """From a one-file adaptation to one with renames, deletions, mode flips, symlinks,
    binaries, CRLF and non-ASCII names: the same tree id, commits and marker as fresh."""
    project = tmp_path / "FlagScale"
    build_base(project)
    add_vendor_branch(project, "vendor/small", {"lib.py": "# vendor lib\n"})
    build_edge_case(project)
    make_project(project, {DEV: {"base": "v1.0", "current": "vendor/small"}})
    doit_ok(project, f"unpatch:{DEV}")
    dest = _tree(project)
    inode = dest.stat().st_ino

    write_config(project, {DEV: {"base": "v1.0", "current": "vendor/edge"}})
    _update(project)
    assert dest.stat().st_ino == inode, "the tree was replaced, not updated"
    assert worktree_mismatches(dest, project, "vendor/edge") == []
    assert _identity(dest) == _identity(_fresh(project, "v1.0", "fresh"))

    again = doit_ok(project, f"unpatch:{DEV}")
    assert executed(again) == [], describe(again)
    write_config(project, {DEV: {"base": "v1.0", "current": "vendor/small"}})
    _update(project)  # and back: deletions and renames the other way
    assert worktree_mismatches(dest, project, "vendor/small") == []
    assert _identity(dest) == _identity(_fresh(project, "v1.0", "fresh-back"))


def test_moved_base_updates_in_place_to_the_fresh_result(tmp_path: Path) -> None:
    """Ten upstream commits later, the device moves to the new base: the tree follows."""
    project = tmp_path / "FlagScale"
    build_base(project)
    add_vendor_branch(project, "vendor/old", {"lib.py": "# vendor lib on v1.0\n"})
    for number in range(10):
        commit(project, f"upstream {number}", {f"up/file{number}.txt": f"{number}\n"})
    commit(project, "upstream removes a file", {"docs/remove_me.md": None})
    git(project, "tag", "v1.1")
    add_vendor_branch(project, "vendor/new", {"lib.py": "# vendor lib on v1.1\n"}, start="v1.1")
    make_project(project, {DEV: {"base": "v1.0", "current": "vendor/old"}})
    doit_ok(project, f"unpatch:{DEV}")
    dest = _tree(project)

    write_config(project, {DEV: {"base": "v1.1", "current": "vendor/new"}})
    _update(project)
    assert worktree_mismatches(dest, project, "vendor/new") == []
    fresh = _fresh(project, "v1.1", "fresh")
    assert _identity(dest) == _identity(fresh)
    assert git(dest, "branch", "--list") == f"* flagtasks/{DEV}/{rev(project, 'v1.1')[:8]}"


def test_a_patch_that_does_not_apply_leaves_the_tree_as_it_was(tmp_path: Path) -> None:
    """A FlagScale-style store (no metadata) whose new patch fails in `git am`: the update
    is undone, the tree is the old one and still up to date for the old patch."""
    project = tmp_path / "FlagScale"
    build_base(project)
    add_vendor_branch(project, "vendor/small", {"lib.py": "# vendor lib\n"})
    make_project(project, {DEV: {"base": "v1.0", "current": "vendor/small"}})
    doit_ok(project, "format_patch")
    write_config(project, {})  # the user's side: the store only
    doit_ok(project, f"unpatch:{DEV}")
    dest = _tree(project)
    before = _identity(dest)

    folder = project / "hardware" / DEV / rev(project, "v1.0")[:8]
    patch = folder / f"{folder.name}.patch"
    good = patch.read_bytes()
    (folder / "meta.json").unlink()
    patch.write_bytes(good.replace(b"-# upstream lib", b"-# another lib", 1))
    failed = doit(project, f"unpatch:{DEV}")
    assert failed.returncode != 0 and "does not apply" in failed.stderr, describe(failed)
    assert _identity(dest) == before
    assert not (dest / ".git" / "rebase-apply").exists()

    patch.write_bytes(good)
    repaired = doit_ok(project, f"unpatch:{DEV}")
    assert worktree_mismatches(dest, project, "vendor/small") == [], describe(repaired)


def test_an_update_that_git_refuses_puts_the_tree_back_and_work_stays_safe(
    tmp_path: Path,
) -> None:
    """Found in review: a stale index.lock made read-tree fail; the marker stayed
    "updating" and the next run deleted the user's later edits and commits unasked."""
    project = tmp_path / "FlagScale"
    build_base(project)
    add_vendor_branch(project, "vendor/small", {"lib.py": "# vendor lib\n"})
    build_edge_case(project)
    make_project(project, {DEV: {"base": "v1.0", "current": "vendor/small"}})
    doit_ok(project, f"unpatch:{DEV}")
    dest = _tree(project)
    before = _identity(dest)
    (dest / ".git" / "index.lock").write_text("")
    write_config(project, {DEV: {"base": "v1.0", "current": "vendor/edge"}})
    failed = doit(project, f"unpatch:{DEV}")
    assert failed.returncode != 0, describe(failed)
    (dest / ".git" / "index.lock").unlink()
    assert _identity(dest) == before
    (dest / "README.md").write_text("my work\n")
    commit(dest, "my commit", {"mine.txt": "mine\n"})
    refused = doit(project, f"unpatch:{DEV}")
    assert refused.returncode == 1 and "holds your work" in refused.stderr, describe(refused)
    assert (dest / "README.md").read_text() == "my work\n"
    assert git(dest, "log", "-1", "--format=%s") == "my commit"
