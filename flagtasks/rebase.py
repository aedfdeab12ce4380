"""Carry an adaptation onto a newer upstream commit with git's own three-way machinery.

`replay` works in a scratch repository that borrows the upstream's objects. It first
applies the stored series patch by patch to its old base in an index only, so every blob
the vendor's commits pass through exists (git's three-way fallback needs the blob each
patch starts from), then checks out the new base (only the files the series touches: a
sparse checkout) and runs `git am -3` there: plain apply first, three-way merge where
that fails, exactly as git does. A conflict is recorded (which commit, which
files, which lines) and, to forecast the rest of the series, resolved with the commit's
own side before going on. Nothing here touches the user's checkout.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import git, patches
from .errors import OperationError

BRANCH = "flagtasks/rebase"
_APPLYING = re.compile(r"^Applying: (.*)$")
_FALLBACK = "Falling back to patching base and 3-way merge"


@dataclass(frozen=True)
class Commit:
    """One commit of the adaptation, by its place in the series and its subject."""

    number: int
    subject: str

    def __str__(self) -> str:
        return f"{self.number} {self.subject!r}"


@dataclass(frozen=True)
class Conflict:
    """A commit that does not move: each file with what is in the way (hunk line ranges in
    the merged file, or which side deleted it)."""

    commit: Commit
    files: tuple[tuple[str, str], ...]


@dataclass
class Outcome:
    """What replaying a series onto a new base gave."""

    total: int
    three_way: list[Commit] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    head: str | None = None

    @property
    def result(self) -> str:
        if self.conflicts:
            return "conflict"
        return "three-way" if self.three_way else "clean"

    @property
    def files(self) -> list[str]:
        return sorted({name for c in self.conflicts for name, _ in c.files})


def prepare(repo: Path, work: Path, old: str, onto: str, mbox: Path) -> int:
    """A scratch repository at `work` over `repo`'s objects, checked out at `onto`, holding
    every blob of the series on `old`; returns how many patches the series has. A scratch
    left by an earlier replay is reused: moving it costs what differs (a forecast of many
    devices checks the new base out once)."""
    if (work / ".git").is_dir():
        git.am_abort(work)
        git.reset_to(work, onto)
        git.clean_all(work)
    else:
        git.init_shared(work, git.objects_dir_cached(repo), BRANCH)
        git.point_branch(work, BRANCH, onto)
    folder = work / ".git" / "flagtasks-parts"
    shutil.rmtree(folder, ignore_errors=True)
    parts, files = _write_parts(folder, mbox)
    failed, touched = git.apply_each(work, old, files, work / ".git" / "flagtasks-index")
    if failed is not None:
        raise OperationError(
            f"patch {failed} {patches.subject(parts[failed - 1])!r} of the stored adaptation "
            f"does not apply to its own base {old[:8]}: run flagtasks verify"
        )
    git.sparse_checkout(work, touched)
    return len(parts)


def replay(repo: Path, work: Path, old: str, onto: str, mbox: Path) -> Outcome:
    """Replay the series in `mbox` (made on `old`) onto `onto` in a scratch at `work`."""
    return play(work, mbox, Outcome(total=prepare(repo, work, old, onto, mbox)))


def play(work: Path, mbox: Path, outcome: Outcome) -> Outcome:
    """`git am -3` of `mbox` in a prepared scratch at the new base, through every conflict."""
    run = git.am_three_way(work, mbox)
    number = 1
    while True:
        number = _read_progress(run.stdout, number, outcome)
        if run.done:
            break
        if not (work / ".git" / "rebase-apply").is_dir():  # git am could not even start
            failure = (run.stderr.strip() or run.stdout.strip() or "git am failed")[:300]
            raise OperationError(f"git am cannot replay the adaptation: {failure}")
        stopped = _stopped_at(work, number)
        unmerged = git.unmerged(work)
        seen = bool(outcome.conflicts) and outcome.conflicts[-1].commit.number == stopped.number
        if not unmerged:  # no three-way possible (a patch git cannot even merge)
            if not seen:
                outcome.conflicts.append(Conflict(stopped, _apply_failures(run)))
            run, number = git.am_skip(work), stopped.number + 1
            continue
        outcome.conflicts.append(Conflict(stopped, _describe(work, unmerged)))
        for name, stages in sorted(unmerged.items()):
            git.take_theirs(work, name, present=3 in stages)
        run, number = git.am_continue(work), stopped.number
    conflicting = {c.commit.number for c in outcome.conflicts}
    outcome.three_way = [c for c in outcome.three_way if c.number not in conflicting]
    if not outcome.conflicts:
        outcome.head = git.head(work)
    return outcome


@dataclass(frozen=True)
class SubReplay:
    """A submodule the adaptation changes: its patch, made on `old` inside the user's copy
    `copy`, replayed onto `onto`, the commit the new upstream base pins."""

    path: str
    copy: Path
    old: str
    onto: str
    current: str  # the vendor's commit, named by the upstream patch's gitlink
    mbox: Path


def replay_with_subs(
    repo: Path, work: Path, old: str, onto: str, mbox: Path, subs: list[SubReplay]
) -> tuple[Outcome, dict[str, Outcome]]:
    """The upstream's series and each submodule's, as `replay` does. Each submodule is
    replayed in its own scratch inside the upstream's (where `patches.make_adaptation`
    finds it); the upstream's patch then names the new commits in its gitlinks."""
    outcome = Outcome(total=prepare(repo, work, old, onto, mbox))
    done: dict[str, Outcome] = {}
    links: dict[str, str] = {}
    for sub in subs:
        folder = work / sub.path
        shutil.rmtree(folder, ignore_errors=True)  # an earlier device's scratch
        folder.mkdir(parents=True)
        inner = replay(sub.copy, folder, sub.old, sub.onto, sub.mbox)
        done[sub.path] = inner
        links[sub.old] = sub.onto
        links[sub.current] = inner.head or sub.current
    relinked = mbox.with_name(mbox.name + ".onto")
    shutil.copyfile(mbox, relinked)  # in the caller's owner-only folder
    patches.relink(relinked, links)
    return play(work, relinked, outcome), done


def stop_at_first_conflict(worktree: Path, old: str, mbox: Path) -> AmStop:
    """In a worktree of the user's checkout, already at the new base: `git am -3` stopped
    at the first conflict, for the vendor to resolve with ordinary git."""
    folder = git.git_dir(worktree) / "flagtasks-parts"
    shutil.rmtree(folder, ignore_errors=True)  # of a killed run
    try:
        _, files = _write_parts(folder, mbox)
        git.apply_each(worktree, old, files, folder / "index")  # the blobs it needs
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    run = git.am_three_way(worktree, mbox)
    return AmStop(run.done, sorted(git.unmerged(worktree)))


@dataclass(frozen=True)
class AmStop:
    """Where `git am` left a worktree: finished, or stopped with these unmerged paths."""

    done: bool
    unmerged: list[str]


def _write_parts(folder: Path, mbox: Path) -> tuple[list[bytes], list[Path]]:
    """One owner-only file per patch of the series, in order."""
    parts = patches.split(mbox.read_bytes())
    folder.mkdir(mode=0o700)
    files = []
    for number, part in enumerate(parts, start=1):
        path = folder / f"{number:05d}.patch"
        path.write_bytes(part)
        files.append(path)
    return parts, files


def _read_progress(stdout: str, number: int, outcome: Outcome) -> int:
    """Follow `git am`'s own report: one `Applying:` line per patch it starts (the one
    resumed by --continue included), then a fallback line when it used the merge."""
    current: Commit | None = None
    for line in stdout.splitlines():
        found = _APPLYING.match(line)
        if found:
            if current is not None:
                number += 1
            current = Commit(number, found[1])
        elif line.startswith(_FALLBACK) and current and current not in outcome.three_way:
            outcome.three_way.append(current)
    return number


def _stopped_at(work: Path, number: int) -> Commit:
    """The patch `git am` stopped at, from its session folder (`next`, `final-commit`)."""
    session = work / ".git" / "rebase-apply"
    with contextlib.suppress(OSError, ValueError):
        number = int((session / "next").read_text().strip())
    try:
        subject = (session / "final-commit").read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        subject = "(no subject)"
    return Commit(number, subject)


def _describe(work: Path, unmerged: dict[str, set[int]]) -> tuple[tuple[str, str], ...]:
    """Each conflicting file with where: the line ranges of its conflict markers, or which
    side deleted or added it."""
    described = []
    for name, stages in sorted(unmerged.items()):
        if stages >= {2, 3} and 1 in stages:
            ranges = _marker_ranges(work / name)
            what = f"lines {', '.join(ranges)}" if ranges else "both changed it"
        elif 2 not in stages:
            what = "deleted upstream, changed by the commit"
        elif 3 not in stages:
            what = "changed upstream, deleted by the commit"
        else:
            what = "added on both sides"
        described.append((name, what))
    return tuple(described)


def _marker_ranges(path: Path) -> list[str]:
    """`a-b` for each conflict region git wrote into a file (1-based line numbers)."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError:
        return []
    ranges, start = [], None
    for number, line in enumerate(lines, start=1):
        if line.startswith(b"<<<<<<< "):
            start = number
        elif line.startswith(b">>>>>>> ") and start is not None:
            ranges.append(f"{start}-{number}")
            start = None
    return ranges


def _apply_failures(run: git.AmRun) -> tuple[tuple[str, str], ...]:
    """The files `git am` names when a patch neither applies nor merges."""
    found = re.findall(r"^error: (?:patch failed: )?([^:\n]+):", run.stderr, re.MULTILINE)
    names = [
        n
        for n in dict.fromkeys(found)
        if n not in ("patch failed", "Failed to merge in the changes.")
    ]
    return tuple((name, "does not apply") for name in names) or (("(the patch)", "does not apply"),)
