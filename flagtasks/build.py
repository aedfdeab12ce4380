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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import git, lock, patches, store, submodules
from .config import BUILD_MARKER
from .errors import GitError, OperationError, UsageError

MARKER = BUILD_MARKER
BASE_TAG = "flagtasks/base"
UNCOMMITTED = "uncommitted change(s)"
TRASH = ".flagtasks-trash"


@dataclass(frozen=True)
class SubSpec:
    """A submodule the adaptation changes: built inside the tree from its base + its patch,
    over the objects of the user's own copy (`objects`)."""

    path: str
    base: str
    current: str  # the vendor's commit, which the upstream's patch names in its gitlink
    tree: str
    objects: Path


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
    subs: tuple[SubSpec, ...] = ()

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
        and not any(git.alternates_broken(dest / path) for path in _built_subs(found))
    )


def _built_subs(found: dict) -> dict[str, dict]:
    """The submodules a marker says were built in the tree (path -> head, base)."""
    subs = found.get("submodules")
    if not isinstance(subs, dict):
        return {}
    return {
        path: info
        for path, info in subs.items()
        if store.is_sub_path(path) and isinstance(info, dict)
    }


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
    for path, info in _built_subs(found).items():
        losses += _lost_in_sub(dest / path, path, info, found.get("branch"))
    return losses


def _lost_in_sub(folder: Path, path: str, info: dict, branch: object) -> list[str]:
    """The user's work inside a submodule flagtasks built: what the tree's own status does
    not show (ignored files, other branches, stashes, a moved HEAD)."""
    if not (folder / ".git").is_dir():
        return []
    if git.alternates_broken(folder):
        return [f"submodule {path} cannot be read (its objects moved); copy out what you need"]
    losses = []
    worktrees = folder / ".git" / "worktrees"
    if worktrees.is_dir() and any(worktrees.iterdir()):
        losses.append(f"linked worktrees of submodule {path} (git worktree list there)")
    ignored = [e for e in git.status_porcelain(folder) if e.startswith("!! ")]
    if ignored:
        losses.append(f"{len(ignored)} ignored file(s) in submodule {path} (e.g. {ignored[0][3:]})")
    expected = {}
    if info.get("base"):
        expected = {f"refs/heads/{branch}": info.get("head"), f"refs/tags/{BASE_TAG}": info["base"]}
    for ref, sha in sorted(git.local_refs(folder).items()):
        if ref == "refs/stash":
            losses.append(f"a stash in submodule {path}")
        elif expected.get(ref) != sha:
            losses.append(f"commits on {ref.removeprefix('refs/heads/')} in submodule {path}")
    try:
        head = git.head(folder)
    except GitError:
        return [*losses, f"submodule {path} has no commit checked out"]
    if head != info.get("head"):
        losses.append(f"commits in submodule {path} ({head[:12]})")
    return losses


Fill = Callable[[Path, str], None]
"""Writes a patch's plaintext to a new owner-only file: the upstream's for "", else the
patch of the submodule at that path."""


def build(spec: Spec, fill: Fill, force: bool = False) -> str:
    """Build `spec.dest` from base + the patches `fill` writes (to new owner-only files inside
    the new tree's .git); return a one-line report of what was done."""
    parent = spec.dest.parent
    refuse_links(spec.dest)
    with lock.folder_held(parent):  # two checkouts may share one --dir
        try:
            return _build_locked(spec, fill, force)
        except BaseException:
            with contextlib.suppress(OSError):  # a failed first build leaves no folder
                parent.rmdir()
            raise


def refuse_links(dest: Path) -> None:
    """The build folder may be inside the checkout, where a pull request can commit
    symbolic links: a tree, its device folder or the trash is never reached through one."""
    for path in (dest.parent, dest, _trash(dest)):
        if path.is_symlink():
            raise UsageError(
                f"{path} is a symbolic link: remove it (flagtasks makes its build folders)"
            )


def _build_locked(spec: Spec, fill: Fill, force: bool) -> str:
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
    if not force and not losses and found and not spec.subs and _updatable(spec.dest, found):
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
    report = f"built {spec.dest} (base {spec.base8} + {count} commit(s){_subs_said(spec)})"
    return report + (f"; your old tree is kept at {kept}" if kept else "")


def _subs_said(spec: Spec) -> str:
    """The submodules a build made, and how many of the vendor's commits each holds."""
    said = [
        f"{sub.path} + {git.count_commits(spec.dest / sub.path, f'{sub.base}..HEAD')}"
        for sub in spec.subs
    ]
    return f"; submodules: {', '.join(said)}" if said else ""


def _updatable(dest: Path, found: dict) -> bool:
    """A finished tree of ours, on its branch at the head it was built with: then moving it
    costs what differs (lost_work has already found none of the user's work in it)."""
    head, branch = found.get("head"), found.get("branch")
    if found.get("updating") or not isinstance(head, str) or not isinstance(branch, str):
        return False
    if found.get("submodules"):  # its submodules' repositories are built afresh
        return False
    try:
        return git.current_ref(dest) == branch and git.head(dest) == head
    except GitError:
        return False


def _update(spec: Spec, found: dict, fill: Fill) -> str:
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
        fill(patch_file, "")  # decrypts and checks; the tree is untouched until it succeeds
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
            subs = _check_out_unchanged(spec, dest, set())
            _activate(dest, subs)
            return _finish(spec, dest, subs)
        except BaseException:
            with contextlib.suppress(Exception):  # else the marker says "updating": rebuilt
                _put_back(dest, found, spec.branch)
            raise
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _put_back(dest: Path, found: dict, branch: str) -> None:
    """Undo a failed update: the old commits are still in the tree's objects; submodules it
    checked out go (the old tree had none: `_updatable`)."""
    git.am_abort(dest)
    for path in git.gitlinks_in(dest, "HEAD"):
        if store.is_sub_path(path) and (dest / path / ".git").is_dir():
            shutil.rmtree(dest / path)
            (dest / path).mkdir()
    git.move_tree(dest, found["head"])
    git.point_branch(dest, found["branch"], found["head"], drop=branch)
    git.tag(dest, BASE_TAG, found["base"])
    _write_marker(dest, found)


def _finish(spec: Spec, tree: Path, subs: dict[str, dict] | None = None) -> str:
    """Check the tree id the metadata promises, then write the marker: the last step. The
    gitlinks of rebuilt submodules name their new commits; the metadata's tree has the
    vendor's, so those are put back for the comparison."""
    head = git.head(tree)
    if spec.expect_tree:
        rebuilt = {s.path: s.current for s in spec.subs}
        got = git.tree_with_gitlinks(tree, head, rebuilt) if rebuilt else git.tree_of(tree, head)
        if got != spec.expect_tree:
            raise OperationError(
                f"the {spec.device} patch on {spec.base8} gives tree {got[:12]}, but its metadata "
                f"says {spec.expect_tree[:12]}; regenerate the adaptation"
            )
    info: dict[str, object] = {
        "digest": spec.digest,
        "content": spec.content,
        "head": head,
        "base": spec.base,
        "branch": spec.branch,
        "device": spec.device,
    }
    if subs:
        info["submodules"] = subs
    _write_marker(tree, info)
    return head


def _write_marker(tree: Path, info: dict[str, object]) -> None:
    data = json.dumps(info, indent=2, sort_keys=True) + "\n"
    store.atomic_write(tree / ".git" / MARKER, data.encode())


def _fill(spec: Spec, new: Path, fill: Fill) -> str:
    git.init_shared(new, git.objects_dir_cached(spec.repo), spec.branch)
    git.checkout_new(new, spec.branch, spec.base)
    git.tag(new, BASE_TAG, spec.base)
    private = new / ".git" / "flagtasks"
    private.mkdir(mode=0o700)
    patch_file = private / "adaptation.patch"
    subs: dict[str, dict] = {}
    try:
        for number, sub in enumerate(spec.subs):
            subs[sub.path] = _build_sub(spec, new, sub, private / f"sub-{number}.patch", fill)
        fill(patch_file, "")
        if spec.subs:
            patches.relink(patch_file, {s.current: subs[s.path]["head"] for s in spec.subs})
        git.am(new, patch_file)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    subs.update(_check_out_unchanged(spec, new, set(subs)))
    _activate(new, subs)
    return _finish(spec, new, subs)


def _sub_folder(tree: Path, path: str) -> Path:
    """A submodule's folder inside a tree being built: a real folder, never a link."""
    folder = tree / path
    for parent in [folder, *folder.parents]:
        if parent == tree:
            break
        if parent.is_symlink():
            raise OperationError(f"{path} in the {tree.name} tree is reached through a link")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _build_sub(spec: Spec, tree: Path, sub: SubSpec, patch_file: Path, fill: Fill) -> dict:
    """The submodule at `sub.path` as its own repository: base + its patch, on the same
    branch name as the tree, its objects borrowed from the user's copy."""
    folder = _sub_folder(tree, sub.path)
    git.init_shared(folder, sub.objects, spec.branch)
    git.checkout_new(folder, spec.branch, sub.base)
    git.tag(folder, BASE_TAG, sub.base)
    fill(patch_file, sub.path)
    try:
        git.am(folder, patch_file)
    except OperationError as exc:
        raise OperationError(f"submodule {sub.path}: {exc.message}") from None
    return {"head": submodules.checked_head(folder, sub.path, sub.tree), "base": sub.base}


def _check_out_unchanged(spec: Spec, tree: Path, done: set[str]) -> dict[str, dict]:
    """The other submodules, at their gitlinks, when the user's checkout has them (as
    `git submodule update` would, but from the user's own copy: no network)."""
    names = git.gitmodules(tree, "HEAD")
    checked: dict[str, dict] = {}
    for path, sha in sorted(git.gitlinks_in(tree, "HEAD").items()):
        if path in done or not store.is_sub_path(path):
            continue
        copy = submodules.copy_of(spec.repo, path, names.get(path, (None,))[0], (sha,))
        if copy is None:
            continue
        folder = _sub_folder(tree, path)
        git.init_shared(folder, git.objects_dir_cached(copy), spec.branch)
        git.detach_at(folder, sha)
        checked[path] = {"head": sha, "base": None}
    return checked


def _activate(tree: Path, paths: Iterable[str]) -> None:
    """Mark the built submodules active in the tree, as `git submodule init` does, so `git
    submodule status` shows their commits (no URL is copied: nothing is fetched)."""
    paths = list(paths)
    names = git.gitmodules(tree, "HEAD") if paths else {}
    for path in paths:
        if path in names:
            git.set_config(tree, f"submodule.{names[path][0]}.active", "true")


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
