"""User data: a build tree holding the user's work is never thrown away by a rebuild, and the
vendor's own checkout is never changed by `patch` (without --commit), `verify` or `status`.

Without --force a stale rebuild over a changed tree stops (exit 1) naming what would be lost
and leaves the tree exactly as it was; with --force the old tree is kept aside, the message
says where, and the user's work is still there.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures import describe, doit, executed, flagtasks, git, sample_project
from repos import (
    add_vendor_branch,
    build_base,
    commit,
    commit_on,
    make_project,
    settle_index,
    sha256,
    snapshot,
    snapshot_diff,
    tree_files,
    tree_of,
)

DEV = "A_X100"


# --------------------------------------------------------------------------- build trees


def tree_snapshot(dest: Path) -> dict[str, object]:
    """Everything of a build tree the user could lose, plus its folder's identity."""
    return {
        "inode": {"": dest.stat().st_ino},
        "files": {k: sha256(v) for k, v in tree_files(dest).items()},
        "index": {"": sha256((dest / ".git" / "index").read_bytes())},
        "HEAD": {"": git(dest, "rev-parse", "HEAD"), "file": (dest / ".git/HEAD").read_text()},
        "refs": {"": git(dest, "for-each-ref", "--format=%(refname) %(objectname)")},
        "stash": {"": git(dest, "stash", "list", "--format=%H %gs")},
    }


def edit(dest: Path) -> str:
    (dest / "README.md").write_text("my local edit\n")
    return "README.md"


def untracked(dest: Path) -> str:
    (dest / "notes").mkdir()
    (dest / "notes" / "run-42.txt").write_text("loss went down\n")
    return "notes/run-42.txt"


def staged(dest: Path) -> str:
    (dest / "added.py").write_text("X = 1\n")
    git(dest, "add", "added.py")
    return "added.py"


def extra_commit(dest: Path) -> str:
    commit(dest, "my fix", {"flagscale/fix.py": "FIX = True\n"})
    return "commits on flagtasks/"


def other_branch(dest: Path) -> str:
    git(dest, "checkout", "-q", "-b", "mywork")
    commit(dest, "my experiment", {"exp.py": "E = 1\n"})
    return "mywork"


def stash(dest: Path) -> str:
    (dest / "README.md").write_text("stashed edit\n")
    git(dest, "stash", "-q")
    return "stash"


def detached_commit(dest: Path) -> str:
    git(dest, "checkout", "-q", "--detach")
    commit(dest, "my detached fix", {"flagscale/detached.py": "D = 1\n"})
    return "detached HEAD"


def linked_worktree(dest: Path) -> str:
    outside = dest.parents[2] / f"wt-{dest.parents[2].name}-{len(list(dest.parents[2].iterdir()))}"
    git(dest, "worktree", "add", "-q", "--detach", str(outside))
    return "worktree"


CHANGES: dict[str, Callable[[Path], str]] = {
    "edit": edit,
    "untracked": untracked,
    "staged": staged,
    "commit": extra_commit,
    "branch": other_branch,
    "stash": stash,
    "detached": detached_commit,
    "worktree": linked_worktree,
}


def still_there(kept: Path, case: str) -> bool:
    """The user's work of `case` is in the kept-aside tree."""
    if case == "edit":
        return (kept / "README.md").read_text() == "my local edit\n"
    if case == "untracked":
        return (kept / "notes" / "run-42.txt").read_text() == "loss went down\n"
    if case == "staged":
        return "added.py" in git(kept, "diff", "--cached", "--name-only")
    if case == "commit":
        return git(kept, "log", "-1", "--format=%s") == "my fix"
    if case == "branch":
        return git(kept, "log", "-1", "--format=%s", "mywork") == "my experiment"
    if case == "detached":
        return git(kept, "log", "-1", "--format=%s") == "my detached fix"
    if case == "worktree":
        return any((kept / ".git" / "worktrees").iterdir())
    return "stashed edit" in git(kept, "stash", "show", "-p")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One vendor project for the module, A_X100 built. Every test starts from a clean tree
    (the previous test's forced rebuild leaves one)."""
    path = sample_project(tmp_path_factory.mktemp("userdata") / "FlagScale")
    built = doit(path, f"unpatch:{DEV}")
    assert built.returncode == 0, describe(built)
    return path


def kept_path(message: str) -> Path:
    """The folder a forced rebuild says it kept the old tree at."""
    marker = "kept at "
    assert marker in message, f"the message does not say where the old tree is:\n{message}"
    return Path(message.split(marker, 1)[1].split()[0].rstrip(".;,"))


@pytest.mark.parametrize("case", list(CHANGES))
def test_rebuild_never_deletes_user_work(project: Path, case: str) -> None:
    dest = project / "build" / DEV / "FlagScale"
    if git(dest, "status", "--porcelain") or git(dest, "stash", "list"):
        doit(project, f"unpatch:{DEV}", "--force")  # an earlier failure left work behind
    named = CHANGES[case](dest)
    settle_index(dest)
    before = tree_snapshot(dest)
    commit_on(project, f"vendor/{DEV}", f"[{DEV}] vendor update for {case}", {f"{case}.txt": "v\n"})

    refused = doit(project, f"unpatch:{DEV}")
    assert refused.returncode == 1, describe(refused)
    assert "Traceback" not in refused.stderr, describe(refused)
    assert named in refused.stderr and "--force" in refused.stderr, describe(refused)
    assert snapshot_diff(before, tree_snapshot(dest)) == [], describe(refused)
    if case in ("edit", "stash"):
        by_cli = flagtasks(
            project, "unpatch", "--device-type", DEV, "--commit-id", "v1.0", "--dir", "build"
        )
        assert by_cli.returncode == 1, describe(by_cli)
        assert named in by_cli.stderr, describe(by_cli)
        assert snapshot_diff(before, tree_snapshot(dest)) == [], describe(by_cli)

    if case in ("edit", "commit", "stash"):
        forced = doit(project, f"unpatch:{DEV}", "--force")
    else:
        forced = flagtasks(
            project,
            "unpatch",
            "--device-type",
            DEV,
            "--commit-id",
            "v1.0",
            "--dir",
            "build",
            "--force",
        )
    assert forced.returncode == 0, describe(forced)
    kept = kept_path(forced.stdout + forced.stderr)
    assert kept.is_dir() and kept != dest, describe(forced)
    assert still_there(kept, case), f"the user's {case} is not in {kept}"
    assert git(dest, "rev-parse", "HEAD^{tree}") == tree_of(project, f"vendor/{DEV}")
    assert git(dest, "status", "--porcelain") == ""
    again = doit(project, f"unpatch:{DEV}")
    assert again.returncode == 0 and executed(again) == [], describe(again)


def test_ignored_outputs_are_user_work_too(tmp_path: Path) -> None:
    """Training writes outputs/ and *.log, which the upstream's .gitignore ignores; they are
    untracked files all the same and must not vanish in a rebuild."""
    repo = tmp_path / "upstream"
    build_base(repo)
    commit(repo, "ignore outputs", {".gitignore": "outputs/\n*.log\n"})
    git(repo, "tag", "-f", "v1.0")
    add_vendor_branch(repo, "vendor/a", {"a.txt": "A\n"})
    make_project(repo, {DEV: {"base": "v1.0", "current": "vendor/a"}})
    built = doit(repo, f"unpatch:{DEV}")
    assert built.returncode == 0, describe(built)
    dest = repo / "build" / DEV / "FlagScale"
    (dest / "outputs").mkdir()
    (dest / "outputs" / "ckpt-1000.bin").write_bytes(b"\x00weights" * 100)
    (dest / "train.log").write_text("step 1000\n")
    commit_on(repo, "vendor/a", "vendor update", {"a.txt": "A v2\n"})
    refused = doit(repo, f"unpatch:{DEV}")
    assert refused.returncode == 1, (
        "a rebuild deleted ignored files (outputs/ckpt-1000.bin, train.log):\n" + describe(refused)
    )
    assert (dest / "outputs" / "ckpt-1000.bin").is_file()


def test_foreign_folder_at_the_build_path_is_not_deleted(tmp_path: Path) -> None:
    """Something flagtasks did not build sits where the tree goes: refused, then kept."""
    repo = tmp_path / "upstream"
    build_base(repo)
    add_vendor_branch(repo, "vendor/a", {"a.txt": "A\n"})
    make_project(repo, {DEV: {"base": "v1.0", "current": "vendor/a"}})
    dest = repo / "build" / DEV / "FlagScale"
    dest.mkdir(parents=True)
    (dest / "mine.txt").write_text("my own checkout\n")
    refused = doit(repo, f"unpatch:{DEV}")
    assert refused.returncode == 1, describe(refused)
    assert "not built by flagtasks" in refused.stderr, describe(refused)
    assert (dest / "mine.txt").read_text() == "my own checkout\n"
    forced = doit(repo, f"unpatch:{DEV}", "--force")
    assert forced.returncode == 0, describe(forced)
    assert (kept_path(forced.stdout) / "mine.txt").read_text() == "my own checkout\n"


# --------------------------------------------------------------------------- vendor checkout


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vendor checkout with everything a user can have in flight: on a vendor branch,
    a modified file, a staged change, an untracked file, an untracked folder and a stash."""
    path = sample_project(tmp_path_factory.mktemp("dirty") / "FlagScale")
    git(path, "checkout", "-q", f"vendor/{DEV}")
    (path / "README.md").write_text("stash me\n")
    git(path, "stash", "-q")
    (path / "docs" / "train.md").write_text("staged edit\n")
    git(path, "add", "docs/train.md")
    (path / "README.md").write_text("unstaged edit\n")
    (path / "scratch.txt").write_text("untracked\n")
    (path / "wip").mkdir()
    (path / "wip" / "idea.py").write_text("IDEA = 1\n")
    settle_index(path)
    return path


def keys_outside(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "a_x100"


@pytest.mark.parametrize(
    "args",
    [
        ["verify"],  # first: generates every vendor's adaptation
        ["patch", "--device-type", DEV, "--base-commit-id", "v1.0"],
        ["patch", "--device-type", "B_Y100", DEV, "--base-commit-id", "v1.0"],
        ["patch", "--device-type", "C_Z200", "--base-commit-id", "v1.1"]
        + ["--current-commit-id", "vendor/C_Z200", "--key-path", "KEYS"],
        ["status"],
    ],
    ids=["verify", "patch", "patch-hetero", "patch-encrypted", "status"],
)
def test_vendor_checkout_is_never_changed(dirty: Path, tmp_path: Path, args: list[str]) -> None:
    args = [str(keys_outside(tmp_path)) if a == "KEYS" else a for a in args]
    before = snapshot(dirty)
    run = flagtasks(dirty, *args)
    assert run.returncode == 0, describe(run)
    assert snapshot_diff(before, snapshot(dirty)) == [], describe(run)


def test_vendor_checkout_survives_a_full_doit(dirty: Path) -> None:
    before = snapshot(dirty)
    run = doit(dirty)
    assert run.returncode == 0, describe(run)
    assert snapshot_diff(before, snapshot(dirty)) == [], describe(run)


def test_snapshot_sees_what_it_must(dirty: Path, tmp_path: Path) -> None:
    """The checks above would notice a change: the snapshot covers every kind of state."""
    copy = tmp_path / "copy"
    shutil.copytree(dirty, copy, symlinks=True)
    before = snapshot(copy)
    git(copy, "stash", "drop", "-q")
    (copy / "wip" / "idea.py").write_text("IDEA = 2\n")
    git(copy, "reset", "-q")
    changed = "\n".join(snapshot_diff(before, snapshot(copy)))
    for what in ("stash", "wip/idea.py", "index"):
        assert what in changed, changed
