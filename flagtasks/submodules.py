"""Submodules of the upstream: which ones an adaptation moves, and where their objects are.

A vendor adapts a backend (`third_party/Megatron-LM`) by committing inside its submodule
and moving the gitlink. Those commits live only in the vendor's copy of the submodule, so
the adaptation carries them as a patch of their own; a user's build makes the submodule's
commits again from it, over the objects of the user's own copy. This module finds the
moves and the copies; it never fetches (no network, ever).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import git, store
from .errors import GitError, OperationError, UsageError

ZERO = "0" * 40


@dataclass(frozen=True)
class Move:
    """One submodule an adaptation changes: its path, and the gitlinks at base and current."""

    path: str
    name: str
    url: str
    base: str
    current: str


def moves(repo: Path, base: str, current: str) -> list[Move]:
    """The submodules whose gitlink differs between base and current, by path. A removed
    submodule is the upstream patch's own business (it deletes the gitlink); one the
    adaptation adds is refused, since no base inside it exists for a patch to start from."""
    declared = git.gitmodules(repo, current)
    found = []
    for entry in git.gitlink_moves(repo, base, current):
        if entry.new_mode != git.GITLINK:
            continue  # removed, or replaced by a file: the upstream's patch says so
        if entry.old_mode != git.GITLINK:
            raise UsageError(
                f"submodule {entry.path} is added by the adaptation (not in base {base[:8]}): "
                "flagtasks stores changes to submodules the base has; add the submodule "
                "upstream first, or commit its files into the upstream instead"
            )
        name, url = declared.get(entry.path, (entry.path, ""))
        found.append(Move(entry.path, name, url, entry.old, entry.new))
    return sorted(found, key=lambda m: m.path)


def copy_of(repo: Path, path: str, name: str | None, needs: tuple[str, ...]) -> Path | None:
    """The git folder of a checkout's own copy of a submodule that holds every commit in
    `needs`: `.git/modules/<name>` (where `git submodule` keeps it), `.git/modules/<path>`,
    or the submodule's own `.git`. None when no copy has them."""
    for candidate in _candidates(repo, path, name):
        if all(git.has_commit(candidate, sha) for sha in needs):
            return candidate
    return None


def _candidates(repo: Path, path: str, name: str | None) -> list[Path]:
    """Where a copy may be; only folders inside the checkout's own git folder or work tree,
    never reached through a link (`.gitmodules` names and committed links are a pull
    request's to choose)."""
    found: list[Path] = []
    try:
        common = git.objects_dir_cached(repo).parent
    except GitError:
        return found
    modules = common / "modules"
    for key in dict.fromkeys(n for n in (name, path) if n and store.is_sub_path(n)):
        folder = modules / key
        if _is_git_folder(folder) and _inside(folder, modules):
            found.append(folder)
    own = repo / path / ".git"
    if not (store.is_sub_path(path) and reached_plainly(repo, path)):
        return found
    if own.is_dir() and not own.is_symlink() and _is_git_folder(own):
        found.append(own)
    elif own.is_file() and not own.is_symlink():
        pointed = _gitfile_target(own)
        if pointed is not None and _is_git_folder(pointed) and _inside(pointed, modules):
            found.append(pointed)
    return [f for f in dict.fromkeys(found) if f.resolve() != common.resolve()]


def reached_plainly(repo: Path, path: str) -> bool:
    """`repo/path` is a real folder inside `repo`, no link on the way (a pull request can
    commit `third_party` as a link to anywhere)."""
    folder = repo
    for part in path.split("/"):
        folder = folder / part
        if folder.is_symlink() or not folder.is_dir():
            return False
    return _inside(folder, repo)


def _inside(folder: Path, top: Path) -> bool:
    try:
        return folder.resolve().is_relative_to(top.resolve())
    except OSError:
        return False


def _is_git_folder(folder: Path) -> bool:
    return (
        folder.is_dir()
        and not folder.is_symlink()
        and (folder / "objects").is_dir()
        and (folder / "HEAD").is_file()
    )


def _gitfile_target(gitfile: Path) -> Path | None:
    """The folder a `.git` file (`gitdir: ...`) points to."""
    try:
        line = gitfile.read_text(encoding="utf-8", errors="replace")[:4096].strip()
    except OSError:
        return None
    if not line.startswith("gitdir: "):
        return None
    target = Path(line[len("gitdir: ") :])
    return target if target.is_absolute() else (gitfile.parent / target)


def vendor_copy(repo: Path, move: Move) -> Path:
    """The vendor's copy of a moved submodule, holding both gitlinks' commits; an error
    naming the path when there is none (the commits are only in the vendor's copy)."""
    found = copy_of(repo, move.path, move.name, (move.base, move.current))
    if found is None:
        missing = move.current if copy_of(repo, move.path, move.name, (move.base,)) else move.base
        raise UsageError(
            f"submodule {move.path}: commit {missing[:12]} is not in your copy of it: run "
            f"git submodule update --init {move.path} (or fetch that commit there), then "
            "patch again"
        )
    return found


def user_copy(repo: Path, path: str, name: str | None, base: str) -> Path:
    """The user's copy of a submodule an adaptation changes, holding its base commit; exit 1
    naming the submodule and the command that fetches it when there is none."""
    found = copy_of(repo, path, name, (base,))
    if found is None:
        raise OperationError(
            f"submodule {path}: its base commit {base[:12]} is not in your copy of it: run "
            f"git submodule update --init {path} in {repo}, then try again"
        )
    return found


def refuse_nested(copy: Path, move: Move) -> None:
    """One level of submodules is supported: a submodule inside a submodule that the
    adaptation moves would be lost, so it is refused."""
    inner = git.gitlinks_changed(copy, move.base, move.current)
    if inner:
        raise UsageError(
            f"submodule {move.path} moves its own submodule {inner[0]}: flagtasks stores one "
            f"level of submodules; keep {move.path}/{inner[0]} at its base commit "
            "in this adaptation"
        )


def checked_head(folder: Path, path: str, tree: str) -> str:
    """A rebuilt submodule's commit, once its tree is the one the metadata records."""
    head = git.head(folder)
    got = git.tree_of(folder, head)
    if got != tree:
        raise OperationError(
            f"the patch of submodule {path} gives tree {got[:12]}, but its metadata says "
            f"{tree[:12]}; regenerate the adaptation"
        )
    return head
