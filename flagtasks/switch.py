"""`unpatch` without --dir: the user's own checkout switched to a branch holding the adaptation.

The checkout is the user's: a switch that would overwrite an untracked or ignored file
does not start, any failure or signal puts the checkout back, and a journal in its git
folder lets the next command undo (or finish) a switch that was killed outright.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import git, patches, store, submodules
from .errors import GitError, OperationError, UsageError

JOURNAL = "flagtasks-switch.json"
"""In the checkout's git folder while `switch_checkout` runs: where to go back to when the
run is killed (SIGKILL, power loss), read by `recover_switch` at the next command."""


@dataclass(frozen=True)
class SubSwitch:
    """A submodule the adaptation changes: its own checkout in the user's is switched to the
    same branch name = its base + its patch, before the upstream's patch names the result."""

    path: str
    base: str
    current: str  # the vendor's commit, named by the upstream patch's gitlink
    tree: str
    patch_file: Path


def switch_checkout(
    repo: Path, device: str, base: str, patch_file: Path, subs: Sequence[SubSwitch] = ()
) -> str:
    """Switch a clean checkout (tracked files) to `flagtasks/<DEV>/<BASE8>` = base + the
    patch in `patch_file`, and each changed submodule's checkout likewise.

    Untracked and ignored files stay: a switch that would overwrite one stops before it
    starts (git itself overwrites ignored files). On any failure or interrupt the checkout
    and its submodules are put back where they were; `git am`'s copy of the patch is
    owner-only.
    """
    branch = f"flagtasks/{device}/{base[:8]}"
    creates = _ready(repo, branch, base, patch_file, "")
    folders = [_sub_checkout(repo, sub) for sub in subs]
    sub_creates = [
        _ready(folder, branch, sub.base, sub.patch_file, f"submodule {sub.path} of ")
        for folder, sub in zip(folders, subs, strict=True)
    ]
    before = git.current_ref(repo)
    sub_before = [git.current_ref(folder) for folder in folders]
    journal = git.git_dir(repo) / JOURNAL
    journal_data = {
        "before": before,
        "branch": branch,
        "base": base,
        "creates": creates,
        "subs": [
            {"path": sub.path, "before": ref, "base": sub.base, "creates": made}
            for sub, ref, made in zip(subs, sub_before, sub_creates, strict=True)
        ],
    }
    store.atomic_write(journal, json.dumps(journal_data).encode(), mode=0o600)
    done: list[tuple[Path, tuple[str, str, str], list[str]]] = []
    try:
        heads = {}
        for sub, folder, ref, made in zip(subs, folders, sub_before, sub_creates, strict=True):
            _switch_and_apply(folder, branch, sub.base, sub.patch_file, (ref, made))
            done.append((folder, (branch, sub.base, ref), made))
            heads[sub.current] = submodules.checked_head(folder, sub.path, sub.tree)
        patches.relink(patch_file, heads)
        _switch_and_apply(repo, branch, base, patch_file, (before, creates))
    except BaseException:
        for folder, switch, made in reversed(done):
            with contextlib.suppress(Exception):
                _undo_switch(folder, switch, made, keep_changes=False)
        raise
    finally:
        journal.unlink(missing_ok=True)
    said = f" and {len(subs)} submodule(s)" if subs else ""
    return f"switched {repo}{said} to {branch} (base {base[:8]} + the {device} adaptation)"


def _ready(repo: Path, branch: str, base: str, patch_file: Path, what: str) -> list[str]:
    """Refuse a switch of `repo` that would lose or overwrite anything; returns the files the
    patch creates (to remove should the switch be undone)."""
    changes = git.tracked_changes(repo)
    if changes:
        raise OperationError(
            f"{what}{repo} has uncommitted changes ({len(changes)} path(s), e.g. {changes[0]}): "
            "commit or stash them, or use --dir build"
        )
    busy = git.operation_in_progress(repo)
    if busy:
        raise OperationError(
            f"{what}{repo} is in the middle of a git operation (.git/{busy}): finish or abort "
            "it first, or use --dir build"
        )
    hidden = git.hidden_entries(repo)
    if hidden:
        raise OperationError(
            f"{len(hidden)} file(s) in {what}{repo} are marked assume-unchanged or "
            f"skip-worktree (e.g. {hidden[0]}), so their edits do not show: clear the marks "
            "(git update-index --no-assume-unchanged / --no-skip-worktree), or use --dir build"
        )
    if git.branch_exists(repo, branch):
        raise UsageError(
            f"branch {branch} already exists in {what}{repo}: delete it or use --dir build"
        )
    tracked = set(git.tracked_files(repo))  # on HEAD: the switch replaces those itself
    creates = _created_by(patch_file)
    written = [*git.added_between(repo, "HEAD", base), *(p for p in creates if p not in tracked)]
    in_the_way = [p for p in written if _in_the_way(repo, p)]
    if in_the_way:
        raise OperationError(
            f"{len(in_the_way)} untracked or ignored file(s) in {what}{repo} (e.g. "
            f"{in_the_way[0]}) are written by base {base[:8]} or the adaptation and would be "
            "overwritten: move them away, or use --dir build"
        )
    return creates


def _sub_checkout(repo: Path, sub: SubSwitch) -> Path:
    """The user's checkout of a submodule, which must be there and hold its base commit."""
    folder = repo / sub.path
    if not submodules.reached_plainly(repo, sub.path):
        raise UsageError(
            f"submodule {sub.path} is reached through a symbolic link in {repo}: replace the "
            "link with the submodule's folder (git submodule update --init)"
        )
    if git.work_tree_top(folder) != folder.resolve() or not git.has_commit(folder, sub.base):
        raise OperationError(
            f"submodule {sub.path}: its base commit {sub.base[:12]} is not checked out or not "
            f"in your copy of it: run git submodule update --init {sub.path}, or use --dir build"
        )
    return folder


def _in_the_way(repo: Path, path: str) -> bool:
    """Writing the file `path` would destroy something: data at it, or a file or link where
    one of its folders must go (git removes an ignored one without asking)."""
    if _holds_data(repo / path):
        return True
    parent = (repo / path).parent
    while parent != repo:
        if parent.is_symlink() or parent.is_file():
            return True
        parent = parent.parent
    return False


def _holds_data(path: Path) -> bool:
    """Something a switch that writes a file at `path` would overwrite or delete: a file or
    link there, or a folder with any file in it (an empty one is nothing to lose)."""
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(p.is_file() or p.is_symlink() for p in path.rglob("*"))


def _created_by(patch_file: Path) -> list[str]:
    """The files the patch creates (new, renamed or copied to): absent before the switch
    (checked), so whatever a cut-short `git am` left of them is removed when it is undone."""
    created, target = [], None
    with patch_file.open("rb") as lines:
        for line in lines:
            if line.startswith(b"diff --git a/"):
                target = line.rstrip(b"\n").rsplit(b" b/", 1)[-1]
            elif line.startswith(b"new file mode ") and target:
                created.append(target.decode("utf-8", "surrogateescape"))
            elif line.startswith((b"rename to ", b"copy to ")):
                name = line.rstrip(b"\n").split(b" to ", 1)[1]
                created.append(name.decode("utf-8", "surrogateescape"))
    return created


def _switch_and_apply(
    repo: Path, branch: str, base: str, patch_file: Path, back: tuple[str, list[str]]
) -> None:
    before, creates = back
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    try:
        try:
            git.switch_new(repo, branch, base)
        except GitError as exc:
            message = exc.stderr.strip()[:300]
            raise OperationError(f"cannot switch to {branch}: {message}") from None
        os.umask(0o077)  # git am's copy in .git/rebase-apply: owner-only
        git.am(repo, patch_file)
    except BaseException:
        os.umask(old_umask)
        (git.git_dir(repo) / "index.lock").unlink(missing_ok=True)  # git was killed with us
        _undo_switch(repo, (branch, base, before), creates, keep_changes=False)
        raise
    os.umask(old_umask)
    for path, executable in git.written_between(repo, base, "HEAD"):  # as git would write them
        with contextlib.suppress(OSError):
            os.chmod(repo / path, (0o777 if executable else 0o666) & ~old_umask)


def _undo_switch(
    repo: Path, switch: tuple[str, str, str], creates: list[str], keep_changes: bool
) -> list[str]:
    """Back to `before`. The checkout was clean when the switch began, so within the same
    run whatever differs is the cut-short git's: reset, and remove the files it made
    (those were verified absent). After a kill (`keep_changes`), the user may have worked
    since: changes are stashed and a branch with commits of theirs is kept, never dropped.
    Returns what was kept, to say."""
    branch, base, before = switch
    kept = []
    git.am_abort(repo)
    leftover = git.git_dir(repo) / "rebase-apply"  # an am killed while it set up
    if leftover.exists():
        shutil.rmtree(leftover, ignore_errors=True)
    on_branch = git.current_ref(repo) == branch
    if keep_changes and git.tracked_changes(repo):
        git.stash_changes(
            repo, f"flagtasks: changes found after an interrupted unpatch on {branch}"
        )
        kept.append("the changes found are in `git stash list`")
    else:
        git.reset_hard(repo)
    tracked = set(git.tracked_files(repo))
    for path in [*creates, *git.added_between(repo, before, base)]:
        full = repo / path
        if path not in tracked and (full.is_symlink() or full.is_file()):
            full.unlink()
            _prune_empty(full.parent, repo)
    if on_branch:
        git.switch_back(repo, before)
    ours = git.BUILD_IDENTITY["GIT_COMMITTER_EMAIL"]  # the killed am's commits are ours
    if (
        keep_changes
        and git.branch_exists(repo, branch)
        and git.commits_not_by(repo, base, branch, ours)
    ):
        kept.append(f"branch {branch} holds commits made after the interruption")
    else:
        with contextlib.suppress(GitError):
            git.delete_branch(repo, branch)
    return kept


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
        creates = [p for p in data.get("creates", []) if isinstance(p, str)]
    except (OSError, ValueError, KeyError, TypeError):
        data, before = None, None
    if not (data and all(isinstance(v, str) for v in (before, branch, base))):
        journal.unlink(missing_ok=True)
        return None
    torn = (gitdir / "index.lock").exists()  # the killed git was writing the index
    _remove_locks(gitdir)
    said = _recover(repo, gitdir, (before, branch, base), torn, creates)
    finished = said is not None and "had finished" in said
    sub_said = [] if finished else _recover_subs(repo, branch, data.get("subs"))
    journal.unlink(missing_ok=True)
    if sub_said:
        said = "; ".join([said or "an interrupted unpatch was undone", *sub_said])
    return said


def _remove_locks(gitdir: Path) -> None:
    for stale in [*gitdir.glob("*.lock"), *gitdir.glob("refs/**/*.lock")]:
        stale.unlink(missing_ok=True)  # left by the killed git (index, HEAD, refs)


def _recover_subs(repo: Path, branch: str, subs: object) -> list[str]:
    """Put back each submodule checkout the killed switch had moved to `branch`."""
    said = []
    for sub in subs if isinstance(subs, list) else []:
        if not isinstance(sub, dict):
            continue
        path, before, base = (sub.get(k) for k in ("path", "before", "base"))
        if not (store.is_sub_path(path) and isinstance(before, str) and isinstance(base, str)):
            continue
        folder = repo / str(path)
        if folder.is_symlink() or not (folder / ".git").exists():
            continue
        _remove_locks(git.git_dir(folder))
        busy = (git.git_dir(folder) / "rebase-apply").exists()
        if not busy and git.current_ref(folder) != branch and not git.branch_exists(folder, branch):
            continue
        creates = [p for p in sub.get("creates", []) if isinstance(p, str)]
        kept = _undo_switch(folder, (branch, base, before), creates, keep_changes=True)
        said.append(f"submodule {path} is back on {before}" + "".join(f" ({k})" for k in kept))
    return said


def _recover(
    repo: Path, gitdir: Path, switch: tuple[str, str, str], torn: bool, creates: list[str]
) -> str | None:
    before, branch, base = switch
    undone = f"an interrupted unpatch was undone: {repo} is back on {before}"
    if git.current_ref(repo) == branch:
        if not ((gitdir / "rebase-apply").exists() or git.head(repo) == base):
            return f"an interrupted unpatch had finished: {repo} is on {branch}"
    elif git.head(repo) == base or not (torn or git.index_tree(repo) == git.tree_of(repo, base)):
        return None  # the switch never started (or the user has moved on)
    kept = _undo_switch(repo, (branch, base, before), creates, keep_changes=True)
    return undone + "".join(f"; {what}" for what in kept)


def _prune_empty(folder: Path, top: Path) -> None:
    while folder != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
