"""Make and check adaptations, index-only, in a scratch area over the upstream.

`make` turns base..current into deterministic mbox bytes (series or squash) and proves
they reproduce current's tree before anyone stores them; `apply_tree` replays stored
bytes onto a base and returns the tree id they give. Neither touches the user's checkout.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from . import git, store, submodules
from .errors import FlagtasksError, GitError, OperationError, UsageError

_FROM = re.compile(rb"^From [0-9a-f]{40} Mon Sep 17 00:00:00 2001\n", re.MULTILINE)
_SUBJECT = re.compile(rb"^Subject: (.*(?:\n[ \t].*)*)", re.MULTILINE)
_PERSON = re.compile(rb"^(?P<name>.*) <(?P<email>.*)> (?P<date>\d+ [+-]\d{4})$")


@dataclass(frozen=True)
class Made:
    """A generated adaptation: the mbox bytes and what they were checked to reproduce."""

    data: bytes
    mode: str
    tree: str
    commits: int
    note: str = ""


def split(mbox: bytes) -> list[bytes]:
    """One entry per patch of a format-patch mbox (plain diffs count as one patch)."""
    starts = [m.start() for m in _FROM.finditer(mbox)]
    if not starts:
        if b"\ndiff --git " in b"\n" + mbox:
            return [mbox]
        raise OperationError("not a patch: no format-patch header or git diff found")
    if starts[0] != 0 and mbox[: starts[0]].strip():
        raise OperationError("not a patch: unexpected text before the first patch header")
    ends = starts[1:] + [len(mbox)]
    parts = [mbox[s:e] for s, e in zip(starts, ends, strict=True)]
    for number, part in enumerate(parts, start=1):
        plain_body(part.split(b"\n\n", 1)[0], number)
    return parts


def check_bodies(lines: Iterable[bytes]) -> list[str]:
    """`split`'s body check over a patch file read line by line (a build streams it);
    returns the submodules whose commit the patch moves (see `gitlink_note`)."""
    number, header = 0, list[bytes]()
    moved: set[bytes] = set()
    diff = b""
    for line in lines:
        if line.startswith(b"diff --git a/"):
            diff = line[13:].split(b" ", 1)[0]
        elif line.startswith(b"+Subproject commit "):
            moved.add(diff)
        if _FROM.match(line):
            if header:
                plain_body(b"".join(header), number)
            number, header = number + 1, [line]
        elif header:
            if line.strip():
                header.append(line)
            else:
                plain_body(b"".join(header), number)
                header = []
    if header:
        plain_body(b"".join(header), number)
    return sorted(m.decode("utf-8", "replace") for m in moved)


_ENCODING = re.compile(rb"^content-transfer-encoding:[ \t]*([^\s;]+)", re.MULTILINE | re.I)
_MULTIPART = re.compile(rb"^content-type:[ \t]*multipart/", re.MULTILINE | re.I)


def plain_body(header: bytes, number: int) -> None:
    """verify applies the bytes as they are and `git am` decodes a transfer encoding first,
    so an encoded patch would be judged on other bytes than users get: refuse it. git
    format-patch writes 7bit or 8bit bodies."""
    found = _ENCODING.search(header)
    encoding = found.group(1).decode("ascii", "replace").lower() if found else "8bit"
    multipart = _MULTIPART.search(header) is not None
    if encoding not in ("7bit", "8bit", "binary") or multipart:
        shown = "multipart" if multipart else encoding[:20]
        raise OperationError(
            f"patch {number} {subject(header)!r} has a {shown} body, not what git "
            "format-patch writes; regenerate the adaptation with flagtasks patch"
        )


def subject(patch: bytes) -> str:
    """The decoded subject line of one patch, for messages."""
    found = _SUBJECT.search(patch)
    if not found:
        return "(no subject)"
    raw = re.sub(rb"\n[ \t]+", b" ", found.group(1)).decode("utf-8", "replace")
    from email.header import decode_header, make_header  # messages only: not at start-up

    with contextlib.suppress(ValueError, LookupError):
        raw = str(make_header(decode_header(raw)))
    return re.sub(r"^\[PATCH[^\]]*\]\s*", "", raw)


def _write_parts(scratch: git.Scratch, parts: list[bytes]) -> list[Path]:
    folder = scratch.dir / "parts"
    folder.mkdir(exist_ok=True)
    files = []
    for number, part in enumerate(parts, start=1):
        path = folder / f"{number:05d}.patch"
        path.write_bytes(part)
        files.append(path)
    return files


def _replay(scratch: git.Scratch, base: str, parts: list[bytes]) -> str:
    """Apply all parts to base in the scratch index; return the tree, or raise naming a part."""
    files = _write_parts(scratch, parts)
    scratch.read_tree(base)
    try:
        scratch.apply(files)
    except GitError:
        _name_failure(scratch, base, files, parts)
    return scratch.write_tree()


def _name_failure(
    scratch: git.Scratch, base: str, files: list[Path], parts: list[bytes]
) -> NoReturn:
    """Re-apply one by one to say which patch failed and where (slow path, failure only)."""
    scratch.read_tree(base)
    for number, path in enumerate(files, start=1):
        try:
            scratch.apply([path])
        except GitError as exc:
            where = _apply_error(exc.stderr)
            raise PatchFailed(number, len(files), subject(parts[number - 1]), where) from None
    raise OperationError("the patches apply one by one but not together; report this as a bug")


def _apply_error(stderr: str) -> str:
    details = [ln[len("error: ") :] for ln in stderr.splitlines() if ln.startswith("error: ")]
    return "; ".join(details[:2]) or stderr.strip()[:200]


class PatchFailed(OperationError):
    """Patch `number` of `total` does not apply; names it and the failing file and hunk."""

    def __init__(self, number: int, total: int, subject_: str, where: str) -> None:
        super().__init__(f"patch {number}/{total} {subject_!r} does not apply: {where}")
        self.number = number
        self.subject = subject_
        self.where = where


def apply_tree(repo: Path, base: str, mbox: bytes) -> str:
    """The tree id that `mbox` gives when applied to `base`, exactly (no fuzz, no fixing)."""
    return apply_links(repo, base, mbox, ())[0]


def apply_links(
    repo: Path, base: str, mbox: bytes, paths: Iterable[str]
) -> tuple[str, dict[str, str]]:
    """`apply_tree`, and the commit each of `paths` is a gitlink to in the result (a path
    that is not a gitlink there is left out)."""
    parts = split(mbox)
    wanted = list(paths)
    with git.scratch(repo) as scratch:
        tree = _replay(scratch, base, parts)
        links = scratch.gitlinks(wanted) if wanted else {}
    return tree, links


NAME_MAX = 255
"""Bytes in a file name on the file systems flagtasks runs on."""


@dataclass(frozen=True)
class SubMade:
    """A moved submodule's own patch: base..current inside the vendor's copy of it."""

    move: submodules.Move
    made: Made


def make_adaptation(repo: Path, base: str, current: str, mode: str) -> tuple[Made, list[SubMade]]:
    """The upstream's patch and one per submodule the range moves, each proven exact in its
    own repository (the vendor's copy of the submodule holds the commits)."""
    subs = []
    for move in submodules.moves(repo, base, current):
        name = store.sub_patch_name(base[:8], move.path, encrypted=True)
        if len(name.encode()) > NAME_MAX:
            raise UsageError(
                f"submodule {move.path}: its path makes a patch file name of "
                f"{len(name.encode())} bytes, more than the {NAME_MAX} a file system allows; "
                "give the submodule a shorter path"
            )
        copy = submodules.vendor_copy(repo, move)
        submodules.refuse_nested(copy, move)
        try:
            made = make(copy, move.base, move.current, mode)
        except FlagtasksError as exc:
            raise type(exc)(f"submodule {move.path}: {exc.message}") from None
        subs.append(SubMade(move, made))
    return make(repo, base, current, mode), subs


def make(repo: Path, base: str, current: str, mode: str) -> Made:
    """Generate base..current in `mode` ("series", "squash" or "auto") and prove it exact.
    A moved gitlink is a line of the patch: the commits inside the submodule are
    `make_adaptation`'s to store."""
    _refuse_unrelated_base(repo, base, current)
    tree = git.tree_of(repo, current)
    if tree == git.tree_of(repo, base):
        raise UsageError(
            f"current commit {current[:8]} has the same tree as base {base[:8]}: nothing to "
            "export; commit the adaptation first or check --current-commit-id"
        )
    with git.scratch(repo) as scratch:
        note = ""
        if mode in ("series", "auto"):
            data = scratch.format_patch(base, current)
            problem = _series_problem(scratch, base, current, data, tree)
            if problem is None:
                return Made(data, "series", tree, len(split(data)))
            if mode == "series":
                raise OperationError(
                    f"mode series cannot reproduce {current[:8]}: {problem}; "
                    "use mode auto or squash, or rebase the vendor branch onto the base"
                )
            note = f"the series does not reproduce {current[:8]} ({problem}); using squash"
        data = _squash(scratch, base, current, tree)
        problem = _series_problem(scratch, base, current, data, tree)
        if problem is not None:
            raise OperationError(f"squash of {current[:8]} does not reproduce it: {problem}")
        return Made(data, "squash", tree, 1, note)


def gitlink_note(moved: list[str]) -> str:
    """What a user is told when a stored patch moves a submodule its adaptation carries no
    patch for (a store written by another tool)."""
    if not moved:
        return ""
    return (
        f"note: the patch moves {len(moved)} submodule(s) (e.g. {moved[0]}) to a vendor "
        f"commit; flagtasks does not build submodules: run git submodule update --init "
        f"{moved[0]} in the tree (it needs that commit)\n"
    )


def _refuse_unrelated_base(repo: Path, base: str, current: str) -> None:
    """A base that is not an ancestor of current would make the patch undo upstream work."""
    if git.is_ancestor(repo, base, current):
        return
    lost = git.count_commits(repo, f"{current}..{base}")
    fork = git.merge_base(repo, base, current)
    hint = f" (or use the base it was made on: {fork[:8]}, where they meet)" if fork else ""
    raise UsageError(
        f"base {base[:8]} is not an ancestor of current {current[:8]}: the patch would revert "
        f"{lost} upstream commit(s) that are in {base[:8]} but not in {current[:8]}; rebase "
        f"the vendor branch onto the base (git rebase {base[:8]}){hint}"
    )


def _series_problem(
    scratch: git.Scratch, base: str, current: str, data: bytes, tree: str
) -> str | None:
    """None when `data` applied to base gives `tree`; otherwise what went wrong."""
    if not data:
        return "the range holds no patches (only merges or empty commits)"
    try:
        got = _replay(scratch, base, split(data))
    except PatchFailed as exc:
        failed = f"commit {_commit_of(scratch, base, current, exc.number)} {exc.subject!r} " + (
            f"does not apply ({exc.where})"
        )
        merges = git.merges_in(scratch.repo, f"{base}..{current}")
        return f"{failed}; {_merges_said(merges)}" if merges else failed
    if got != tree:
        merges = git.merges_in(scratch.repo, f"{base}..{current}")
        if merges:
            return _merges_said(merges)
        return f"the patches give tree {got[:12]}, not current's {tree[:12]}"
    return None


def _merges_said(merges: list[str]) -> str:
    return (
        f"the range holds {len(merges)} merge commit(s), e.g. {merges[0]!r}, whose "
        "changes (conflict resolutions, subtree merges) are not in a series of patches"
    )


def _commit_of(scratch: git.Scratch, base: str, current: str, number: int) -> str:
    """The short SHA of the commit behind patch `number` (failure path only)."""
    real = scratch.run("format-patch", "--stdout", "--no-stat", f"{base}..{current}")
    heads = re.findall(rb"^From ([0-9a-f]{40}) Mon Sep 17", real, re.MULTILINE)
    return heads[number - 1][:12].decode() if len(heads) >= number else f"#{number}"


def _squash(scratch: git.Scratch, base: str, current: str, tree: str) -> bytes:
    """One commit base -> current's tree, carrying current's message, author and committer."""
    raw = git.commit_object(scratch.repo, current)
    headers, _, message = raw.partition(b"\n\n")
    env: dict[str, str] = {}
    encoding = None
    for line in headers.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key in (b"author", b"committer"):
            who = _PERSON.match(value)
            if who:
                role = "AUTHOR" if key == b"author" else "COMMITTER"
                env[f"GIT_{role}_NAME"] = who["name"].decode("utf-8", "surrogateescape")
                env[f"GIT_{role}_EMAIL"] = who["email"].decode("utf-8", "surrogateescape")
                env[f"GIT_{role}_DATE"] = who["date"].decode()
        elif key == b"encoding":
            encoding = value.decode()
    config = (f"i18n.commitEncoding={encoding}",) if encoding else ()
    commit = scratch.commit_tree(tree, base, message, env, config)
    return scratch.format_patch(base, commit)


def relink(patch_file: Path, commits: dict[str, str]) -> None:
    """Point the patch's gitlinks at the rebuilt submodule commits: only `Subproject
    commit` and `index` lines change (a commit message that quotes an id stays as it is)."""
    if not commits:
        return
    done = patch_file.with_name(patch_file.name + ".relinked")
    fd = os.open(done, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, patch_file.open("rb") as source:
        for line in source:
            if line.startswith((b"+Subproject commit ", b"-Subproject commit ", b"index ")):
                for old, new in commits.items():
                    line = line.replace(old.encode(), new.encode())
            out.write(line)
    os.replace(done, patch_file)
