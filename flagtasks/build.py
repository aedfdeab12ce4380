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

from . import git, lock
from .config import BUILD_MARKER
from .errors import GitError, OperationError, UsageError

MARKER = BUILD_MARKER
BASE_TAG = "flagtasks/base"
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
    losses = []
    changes = git.status_porcelain(dest)
    if changes:
        first = changes[0][3:]
        losses.append(f"{len(changes)} uncommitted change(s) (e.g. {first})")
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
    if losses and not force:
        raise OperationError(
            f"{spec.dest} is stale but holds your work: {'; '.join(losses)}. "
            "Commit it elsewhere or copy it out, or rerun with --force (the old tree is kept aside)"
        )
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
    head = git.head(new)
    if spec.expect_tree:
        got = git.tree_of(new, head)
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
    (new / ".git" / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return head


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


# ---- `unpatch` without --dir: the user's own checkout on a branch holding the adaptation


JOURNAL = "flagtasks-switch.json"
"""In the checkout's git folder while `switch_checkout` runs: where to go back to when the
run is killed (SIGKILL, power loss), read by `recover_switch` at the next unpatch."""


def switch_checkout(repo: Path, device: str, base: str, patch_file: Path) -> str:
    """Switch a clean checkout (tracked files) to `flagtasks/<DEV>/<BASE8>` = base + the
    patch in `patch_file`.

    Untracked and ignored files stay: a switch that would overwrite one stops before it
    starts (git itself overwrites ignored files). On any failure or interrupt the checkout
    is put back where it was; `git am`'s copy of the patch is owner-only.
    """
    branch = f"flagtasks/{device}/{base[:8]}"
    changes = git.tracked_changes(repo)
    if changes:
        raise OperationError(
            f"{repo} has uncommitted changes ({len(changes)} path(s), e.g. {changes[0]}): "
            "commit or stash them, or use --dir build"
        )
    if git.branch_exists(repo, branch):
        raise UsageError(f"branch {branch} already exists: delete it or use --dir build")
    in_the_way = [p for p in git.added_between(repo, "HEAD", base) if _holds_data(repo / p)]
    if in_the_way:
        raise OperationError(
            f"{len(in_the_way)} untracked or ignored file(s) in {repo} (e.g. {in_the_way[0]}) "
            f"are tracked in base {base[:8]} and would be overwritten: move them away, or "
            "use --dir build"
        )
    before = git.current_ref(repo)
    journal = git.git_dir(repo) / JOURNAL
    store_json(journal, {"before": before, "branch": branch, "base": base})
    try:
        _switch_and_apply(repo, branch, base, patch_file, before)
    finally:
        journal.unlink(missing_ok=True)
    return f"switched {repo} to {branch} (base {base[:8]} + the {device} adaptation)"


def _holds_data(path: Path) -> bool:
    """Something a switch that writes a file at `path` would overwrite or delete: a file or
    link there, or a folder with any file in it (an empty one is nothing to lose)."""
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(p.is_file() or p.is_symlink() for p in path.rglob("*"))


def _switch_and_apply(repo: Path, branch: str, base: str, patch_file: Path, before: str) -> None:
    try:
        git.switch_new(repo, branch, base)
    except GitError as exc:
        raise OperationError(f"cannot switch to {branch}: {exc.stderr.strip()[:300]}") from None
    try:
        old_umask = os.umask(0o077)  # git am's copy in .git/rebase-apply: owner-only
        try:
            git.am(repo, patch_file)
        finally:
            os.umask(old_umask)
    except BaseException:
        _undo_switch(repo, branch, before)
        raise


def _undo_switch(repo: Path, branch: str, before: str) -> None:
    git.am_abort(repo)
    git.switch_back(repo, before)
    with contextlib.suppress(GitError):
        git.delete_branch(repo, branch)


def recover_switch(repo: Path) -> str | None:
    """After a killed in-place unpatch: put the checkout back where it was, or keep the
    finished branch; returns what was done, None when nothing was interrupted.

    The journal exists only while flagtasks holds the checkout's lock and the checkout was
    clean when it was written, so whatever differs from it now is the killed run's."""
    gitdir = git.git_dir(repo)
    journal = gitdir / JOURNAL
    try:
        data = json.loads(journal.read_text(encoding="utf-8"))
        before, branch, base = (data[k] for k in ("before", "branch", "base"))
    except (OSError, ValueError, KeyError, TypeError):
        data, before = None, None
    if not (data and all(isinstance(v, str) for v in (before, branch, base))):
        journal.unlink(missing_ok=True)
        return None
    stale_lock = gitdir / "index.lock"  # the killed git was writing the index
    torn = stale_lock.exists()
    stale_lock.unlink(missing_ok=True)
    said = _recover(repo, gitdir, (before, branch, base), torn)
    journal.unlink(missing_ok=True)
    return said


def _recover(repo: Path, gitdir: Path, switch: tuple[str, str, str], torn: bool) -> str | None:
    before, branch, base = switch
    undone = f"an interrupted unpatch was undone: {repo} is back on {before}"
    if git.current_ref(repo) == branch:
        if (gitdir / "rebase-apply").exists() or git.head(repo) == base:
            _undo_switch(repo, branch, before)
            return undone
        return f"an interrupted unpatch had finished: {repo} is on {branch}"
    if git.head(repo) == base or not (torn or git.index_tree(repo) == git.tree_of(repo, base)):
        return None  # the switch never started (or the user has moved on)
    git.reset_hard(repo)
    tracked = set(git.tracked_files(repo))
    for path in git.added_between(repo, "HEAD", base):  # absent when the switch began
        full = repo / path
        if path not in tracked and (full.is_symlink() or full.is_file()):
            full.unlink()
            _prune_empty(full.parent, repo)
    with contextlib.suppress(GitError):
        git.delete_branch(repo, branch)
    return undone


def _prune_empty(folder: Path, top: Path) -> None:
    while folder != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def store_json(path: Path, data: dict) -> None:
    """Write a small owner-only JSON file of ours, replacing it whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(tmp, path)


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
