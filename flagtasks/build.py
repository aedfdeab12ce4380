"""Build trees `build/<DEV>/<NAME>/`: base + the device's patch, as a real git repository.

A tree is built beside its destination and swapped in with renames, so a stop at any
point leaves the old tree or the new one. A marker inside `.git` records what was built;
a tree without a matching marker is never taken as up to date. A tree holding the user's
own work is never removed without `force`, and even then it is kept aside.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import git, lock, store
from .config import BUILD_MARKER
from .errors import GitError, OperationError, UsageError

MARKER = BUILD_MARKER
BASE_TAG = "flagtasks/base"
UNCOMMITTED = "uncommitted change(s)"
TRASH = ".flagtasks-trash"


@dataclass(frozen=True)
class Spec:
    """Everything that decides a build tree's content; `digest` summarises it."""

    repo: Path
    dest: Path
    device: str
    base: str
    base8: str
    digest: str
    content: str | None
    expect_tree: str | None = None

    @property
    def branch(self) -> str:
        return f"flagtasks/{self.device}/{self.base8}"


def marker(dest: Path) -> dict | None:
    """The marker of a finished build at `dest`, or None (missing, foreign or damaged)."""
    try:
        data = json.loads((dest / ".git" / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(dest: Path, digest: str, content: str | None) -> bool:
    """Cheap up-to-date test (no git): the tree exists and was built from `digest` and the
    adaptation content `content` (so a tree restored from another adaptation is stale)."""
    found = marker(dest)
    return (
        found is not None
        and found.get("digest") == digest
        and found.get("content") == content
        and (dest / ".git" / "HEAD").is_file()
        and not git.alternates_broken(dest)
    )


def lost_work(dest: Path, repo: Path) -> list[str]:
    """What replacing `dest` would throw away: edits, untracked files, extra commits, stash."""
    if not dest.exists():
        return []
    found = marker(dest)
    if found is None:
        return [f"{dest} was not built by flagtasks (or its marker is damaged)"]
    if git.alternates_broken(dest):
        git.point_alternates(dest, git.objects_dir_cached(repo))
    losses = (
        [f"{len(h)} file(s) git is told to ignore changes of (e.g. {h[0]})"]
        if (h := git.hidden_entries(dest))
        else []
    )
    changes = git.status_porcelain(dest)
    if changes:
        first = changes[0][3:]
        losses.append(f"{len(changes)} {UNCOMMITTED} (e.g. {first})")
    expected = {
        f"refs/heads/{found.get('branch')}": found.get("head"),
        f"refs/tags/{BASE_TAG}": found.get("base"),
    }
    for ref, sha in sorted(git.local_refs(dest).items()):
        if ref == "refs/stash":
            losses.append("a stash")
        elif expected.get(ref) != sha:
            losses.append(f"commits on {ref.removeprefix('refs/heads/')}")
    head = git.detached_head(dest)
    if head is not None and head not in (found.get("head"), found.get("base")):
        losses.append(f"commits on a detached HEAD ({head[:12]})")
    worktrees = dest / ".git" / "worktrees"
    if worktrees.is_dir() and any(worktrees.iterdir()):
        losses.append("linked worktrees (git worktree list)")
    return losses


def build(spec: Spec, fill: Callable[[Path], None], force: bool = False) -> str:
    """Build `spec.dest` from base + the patch `fill` writes (to a new owner-only file inside
    the new tree's .git); return a one-line report of what was done."""
    parent = spec.dest.parent
    refuse_links(spec.dest)
    with lock.folder_held(parent):  # two checkouts may share one --dir
        return _build_locked(spec, fill, force)


def refuse_links(dest: Path) -> None:
    """The build folder may be inside the checkout, where a pull request can commit
    symbolic links: a tree, its device folder or the trash is never reached through one."""
    for path in (dest.parent, dest, _trash(dest)):
        if path.is_symlink():
            raise UsageError(
                f"{path} is a symbolic link: remove it (flagtasks makes its build folders)"
            )


def _build_locked(spec: Spec, fill: Callable[[Path], None], force: bool) -> str:
    parent = spec.dest.parent
    _sweep(parent, spec.dest.name)
    losses = lost_work(spec.dest, spec.repo)
    found = marker(spec.dest)
    cut_short = bool(found and found.get("updating"))
    if cut_short:  # an update killed midway: its files and flagtasks refs are its own
        ours = (UNCOMMITTED, "commits on flagtasks/", "commits on refs/tags/flagtasks/")
        losses = [loss for loss in losses if not any(mark in loss for mark in ours)]
    if losses and not force and not cut_short:
        raise OperationError(
            f"{spec.dest} is stale but holds your work: {'; '.join(losses)}. "
            "Commit it elsewhere or copy it out, or rerun with --force (the old tree is kept aside)"
        )
    if not force and not losses and found and _updatable(spec.dest, found):
        head = _update(spec, found, fill)
        count = git.count_commits(spec.dest, f"{spec.base}..{head}")
        return f"updated {spec.dest} in place (base {spec.base8} + {count} commit(s))"
    new = Path(tempfile.mkdtemp(prefix=f".{spec.dest.name}.new-", dir=parent))
    try:
        head = _fill(spec, new, fill)
        kept = _swap(new, spec.dest, keep_old=bool(losses))
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    count = git.count_commits(spec.dest, f"{spec.base}..{head}")
    report = f"built {spec.dest} (base {spec.base8} + {count} commit(s))"
    return report + (f"; your old tree is kept at {kept}" if kept else "")


def _updatable(dest: Path, found: dict) -> bool:
    """A finished tree of ours, on its branch at the head it was built with: then moving it
    costs what differs (lost_work has already found none of the user's work in it)."""
    head, branch = found.get("head"), found.get("branch")
    if found.get("updating") or not isinstance(head, str) or not isinstance(branch, str):
        return False
    try:
        return git.current_ref(dest) == branch and git.head(dest) == head
    except GitError:
        return False


def _update(spec: Spec, found: dict, fill: Callable[[Path], None]) -> str:
    """Move the tree from what it holds to base + the new patch with git's two-tree merge
    (`read-tree -m -u`: only the files that differ are written), then `git am`.

    The marker says "updating" before the first write, so a tree cut short is never taken
    as up to date and the next run builds it afresh. A patch that does not apply puts the
    tree back as it was. The result is what a fresh build gives: same commits, branch,
    base tag and marker."""
    dest = spec.dest
    private = dest / ".git" / "flagtasks"
    if private.is_symlink() or private.is_file():
        private.unlink()
    shutil.rmtree(private, ignore_errors=True)
    private.mkdir(mode=0o700)
    patch_file = private / "adaptation.patch"
    try:
        fill(patch_file)  # decrypts and checks; the tree is untouched until it succeeds
        _write_marker(dest, {**found, "updating": True, "digest": None, "content": None})
        try:
            git.move_tree(dest, spec.base)
        except GitError:  # git refused before writing (a lock, a hidden edit): nothing moved
            _write_marker(dest, found)
            raise
        try:
            git.point_branch(dest, spec.branch, spec.base, drop=found["branch"])
            git.tag(dest, BASE_TAG, spec.base)
            git.am(dest, patch_file)
            return _finish(spec, dest)
        except BaseException:
            with contextlib.suppress(Exception):  # else the marker says "updating": rebuilt
                _put_back(dest, found, spec.branch)
            raise
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _put_back(dest: Path, found: dict, branch: str) -> None:
    """Undo a failed update: the old commits are still in the tree's objects."""
    git.am_abort(dest)
    git.move_tree(dest, found["head"])
    git.point_branch(dest, found["branch"], found["head"], drop=branch)
    git.tag(dest, BASE_TAG, found["base"])
    _write_marker(dest, found)


def _finish(spec: Spec, tree: Path) -> str:
    """Check the tree id the metadata promises, then write the marker: the last step."""
    head = git.head(tree)
    if spec.expect_tree:
        got = git.tree_of(tree, head)
        if got != spec.expect_tree:
            raise OperationError(
                f"the {spec.device} patch on {spec.base8} gives tree {got[:12]}, but its metadata "
                f"says {spec.expect_tree[:12]}; regenerate the adaptation"
            )
    info = {
        "digest": spec.digest,
        "content": spec.content,
        "head": head,
        "base": spec.base,
        "branch": spec.branch,
        "device": spec.device,
    }
    _write_marker(tree, info)
    return head


def _write_marker(tree: Path, info: dict) -> None:
    data = json.dumps(info, indent=2, sort_keys=True) + "\n"
    store.atomic_write(tree / ".git" / MARKER, data.encode())


def _fill(spec: Spec, new: Path, fill: Callable[[Path], None]) -> str:
    git.init_shared(new, git.objects_dir_cached(spec.repo), spec.branch)
    git.checkout_new(new, spec.branch, spec.base)
    git.tag(new, BASE_TAG, spec.base)
    private = new / ".git" / "flagtasks"
    private.mkdir(mode=0o700)
    patch_file = private / "adaptation.patch"
    try:
        fill(patch_file)
        git.am(new, patch_file)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return _finish(spec, new)


def _swap(new: Path, dest: Path, keep_old: bool) -> Path | None:
    """Put `new` at `dest`; the old tree is deleted, or kept aside when it holds work."""
    if not dest.exists() and not dest.is_symlink():
        os.rename(new, dest)
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if keep_old:
        aside = dest.with_name(f"{dest.name}.kept-{stamp}-{os.getpid()}")
    else:
        aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent)) / "tree"
    os.rename(dest, aside)
    os.rename(new, dest)
    if keep_old:
        return aside
    _discard(aside.parent, _trash(dest))
    return None


def _trash(dest: Path) -> Path:
    """Where replaced trees wait to be deleted: beside the device folders, same filesystem."""
    return dest.parent.parent / TRASH


def _discard(folder: Path, trash: Path) -> None:
    """Delete a replaced tree without making the user wait: move it to the trash (a rename)
    and remove it from a detached process. Whatever a killed deleter leaves, `_sweep` takes.
    """
    try:
        if trash.is_symlink():
            raise OSError("the trash is a symbolic link")
        trash.mkdir(exist_ok=True)
        target = Path(tempfile.mkdtemp(dir=trash))
        os.rename(folder, target / "tree")
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return
    if os.environ.get("FLAGTASKS_SYNC_DELETE"):
        _empty_trash(trash)
        return
    script = "import shutil, sys; [shutil.rmtree(p, ignore_errors=True) for p in sys.argv[1:]]"
    subprocess.Popen(
        [sys.executable, "-c", script, str(target)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _empty_trash(trash: Path) -> None:
    if trash.is_symlink() or not trash.is_dir():
        return
    for leftover in trash.iterdir():
        shutil.rmtree(leftover, ignore_errors=True)


def _sweep(parent: Path, name: str) -> None:
    """Remove half-built and half-deleted trees left by an interrupted earlier run."""
    for leftover in parent.glob(f".{name}.new-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in parent.glob(f".{name}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    _empty_trash(parent.parent / TRASH)


def remove(dest: Path, repo: Path) -> str:
    """`doit clean`: delete a build tree unless it holds the user's work."""
    refuse_links(dest)
    if not dest.parent.is_dir():
        return f"nothing to remove at {dest}"
    with lock.folder_held(dest.parent):
        return _remove_locked(dest, repo)


def _remove_locked(dest: Path, repo: Path) -> str:
    losses = lost_work(dest, repo)
    if losses:
        return f"kept {dest}: it holds your work ({'; '.join(losses)})"
    if dest.exists():
        shutil.rmtree(dest)
        with contextlib.suppress(OSError):
            dest.parent.rmdir()
        return f"removed {dest}"
    return f"nothing to remove at {dest}"
