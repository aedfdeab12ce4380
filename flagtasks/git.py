"""Every git command flagtasks runs, as small named functions over `subprocess`.

Work on the upstream goes through a `Scratch`: a temporary index and object folder that
borrow the upstream's objects (alternates), so making and checking patches never touches
the user's working tree, index, HEAD, refs or object store.

git runs through the standard library: `subprocess` starts it with fork_exec in C, which is
safe from threaded processes (`doit -n N -P thread`) and costs a third of what a
Python-level fork did. The caller's environment passes through `clean_env`, an allow-list,
so no `GIT_*` variable of a hook, a shell or a CI runner can redirect or break a command.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GitError, OperationError, UsageError

GIT_KEPT = frozenset(
    {
        # Where git itself lives and how it reaches remotes: nothing here changes which
        # repository, index or objects a command works on, nor what it writes.
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSL_CAINFO",
        "GIT_SSL_NO_VERIFY",
        "GIT_ASKPASS",
        "GIT_HTTP_PROXY_AUTHMETHOD",
        "GIT_ALLOW_PROTOCOL",
        # Which configuration files to read, as HOME does.
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
    }
)
"""The caller's `GIT_*` variables that reach git; every other one is dropped (GIT_DIR,
GIT_INDEX_FILE, GIT_OBJECT_DIRECTORY, GIT_CONFIG_PARAMETERS, identities, ...)."""

FIXED_ENV = {"LC_ALL": "C", "LANGUAGE": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat"}
"""Messages in English (we parse a few), never a prompt or a pager."""


def clean_env(environ: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` without the `GIT_*` variables outside GIT_KEPT, plus FIXED_ENV and `extra`."""
    env = {k: v for k, v in environ.items() if not k.startswith("GIT_") or k in GIT_KEPT}
    env.update(FIXED_ENV)
    if extra:
        env.update(extra)
    return env


# Settings that change the bytes of a patch; pinned so output is the same everywhere.
PATCH_CONFIG = (
    "core.quotePath=true",
    "core.compression=0",
    "diff.noprefix=false",
    "diff.mnemonicPrefix=false",
    "diff.relative=false",
    "diff.suppressBlankEmpty=false",
    "diff.algorithm=myers",
    "diff.indentHeuristic=true",
    "diff.renames=true",
    "format.numbered=false",
    "format.numbered=auto",
    "format.useAutoBase=false",
    "format.headers=",
    "format.signature=",
    "format.signOff=false",
    "format.coverLetter=false",
    "format.thread=false",
    "format.attach=",
    "i18n.logOutputEncoding=UTF-8",
)
PATCH_FLAGS = (
    "--stdout",
    "--no-signature",
    "--zero-commit",
    "--full-index",
    "--binary",
    "--no-stat",
    "--no-notes",
    "--no-thread",
    "--no-cover-letter",
    "--no-attach",
    "--encode-email-headers",
    "--subject-prefix=PATCH",
    "--find-renames=100%",
    "--diff-algorithm=myers",
    "--unified=3",
    "--inter-hunk-context=0",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--no-ext-diff",
    "-O/dev/null",
)
# Settings that would make applying a patch fuzzy or fix whitespace; pinned off.
APPLY_CONFIG = (
    "apply.whitespace=nowarn",
    "apply.ignoreWhitespace=no",
    "am.threeWay=false",
    "am.keepcr=true",
    "core.autocrlf=false",
    "core.safecrlf=false",
    "commit.gpgSign=false",
    "core.hooksPath=/dev/null",
    "core.symlinks=true",
    "core.fileMode=true",
    "submodule.recurse=false",
)
# Writing thousands of files is the cost of a build: use one checkout worker per core
# (git >= 2.32; older git ignores the setting). Hooks never run in trees we make.
CHECKOUT_CONFIG = ("checkout.workers=0", "core.hooksPath=/dev/null", "submodule.recurse=false")
BUILD_CONFIG = (
    *CHECKOUT_CONFIG,
    "core.autocrlf=false",
    "core.symlinks=true",
    "core.fileMode=true",
)
"""For trees flagtasks builds: what lands in them is the tree's bytes, modes and links,
whatever the user's global config or the tree's own says (an update must equal a fresh
build)."""
BUILD_IDENTITY = {
    "GIT_COMMITTER_NAME": "flagtasks",
    "GIT_COMMITTER_EMAIL": "flagtasks@localhost",
}


_GIT = shutil.which("git")


def run(
    repo: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    config: Iterable[str] = (),
) -> bytes:
    """Run `git -C repo [-c k=v ...] args` and return stdout bytes; GitError on failure.
    `--no-optional-locks`: a read such as `git status` never takes the index lock, so a
    run killed while it reads leaves no lock behind for the next one."""
    if _GIT is None:
        raise UsageError("git is not installed: install git 2.30 or newer")
    pinned = [arg for item in config for arg in ("-c", item)]
    proc = subprocess.run(
        [_GIT, "--no-optional-locks", "-C", str(repo), *pinned, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=clean_env(os.environ, env),
        check=False,
    )
    if proc.returncode:
        raise GitError(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def text(repo: Path, *args: str, **kwargs: Any) -> str:
    """`run` with stdout decoded and stripped, for one-line answers."""
    return run(repo, *args, **kwargs).decode("utf-8", "replace").strip()


def is_repo(path: Path) -> bool:
    """True when `path` is inside a git repository (bare or not)."""
    try:
        text(path, "rev-parse", "--git-dir")
    except (GitError, FileNotFoundError, NotADirectoryError):
        return False
    return True


def toplevel(path: Path) -> Path:
    """The work tree root of the checkout containing `path`."""
    return Path(text(path, "rev-parse", "--show-toplevel"))


def work_tree_top(path: Path) -> Path | None:
    """The top of the work tree holding `path`, or None outside one (or in a bare repo)."""
    try:
        top = text(path, "rev-parse", "--show-toplevel")
    except (GitError, OSError):
        return None
    return Path(top) if top else None


def info_exclude(top: Path) -> Path:
    """The checkout's own ignore file (`.git/info/exclude`, also from a linked worktree)."""
    path = Path(text(top, "rev-parse", "--git-path", "info/exclude"))
    return path if path.is_absolute() else top / path


def superproject(top: Path) -> Path | None:
    """The work tree a submodule checkout belongs to, or None."""
    try:
        found = text(top, "rev-parse", "--show-superproject-working-tree")
    except GitError:
        return None
    return Path(found) if found else None


def objects_dir(repo: Path) -> Path:
    """The object folder that build trees and scratch areas borrow from (absolute)."""
    common = Path(text(repo, "rev-parse", "--git-common-dir"))
    return ((repo / common) if not common.is_absolute() else common).resolve() / "objects"


def is_shallow(repo: Path) -> bool:
    return text(repo, "rev-parse", "--is-shallow-repository") == "true"


def resolve(repo: Path, revs: Iterable[str]) -> dict[str, str | None]:
    """Map each rev to its full commit SHA (None when unknown) with one git process.

    An ambiguous short SHA raises UsageError, since picking one would be a guess.
    """
    revs = list(dict.fromkeys(revs))
    if not revs:
        return {}
    query = "".join(f"{rev}^{{commit}}\n" for rev in revs).encode()
    out = run(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=query)
    answers = out.decode("utf-8", "replace").splitlines()
    result: dict[str, str | None] = {}
    for rev, line in zip(revs, answers, strict=True):
        parts = line.split()
        result[rev] = parts[0] if len(parts) == 2 and parts[1] == "commit" else None
    _refuse_ambiguous(repo, [rev for rev, sha in result.items() if sha is None])
    return result


def _refuse_ambiguous(repo: Path, missing: list[str]) -> None:
    """git reports `abcd^{commit}` as missing when `abcd` is ambiguous; ask plainly."""
    hexlike = [
        rev
        for rev in missing
        if 4 <= len(rev) < 40 and all(c in "0123456789abcdef" for c in rev.lower())
    ]
    if not hexlike:
        return
    out = run(repo, "cat-file", "--batch-check", stdin="".join(f"{r}\n" for r in hexlike).encode())
    for rev, line in zip(hexlike, out.decode("utf-8", "replace").splitlines(), strict=True):
        if line.endswith(" ambiguous"):
            raise UsageError(f"commit id {rev!r} is ambiguous: give more hex digits")


def commit_times(repo: Path, shas: Iterable[str]) -> dict[str, int]:
    """Committer time of each commit, to pick a device's newest base."""
    shas = list(dict.fromkeys(shas))
    if not shas:
        return {}
    out = text(repo, "show", "-s", "--no-walk=unsorted", "--format=%H %ct", *shas)
    return {sha: int(ts) for sha, ts in (line.split() for line in out.splitlines())}


def tree_of(repo: Path, rev: str) -> str:
    return text(repo, "rev-parse", "--verify", "--end-of-options", f"{rev}^{{tree}}")


def count_commits(repo: Path, spec: str) -> int:
    return int(text(repo, "rev-list", "--count", "--no-merges", spec))


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    try:
        run(repo, "merge-base", "--is-ancestor", older, newer)
    except GitError as exc:
        if exc.code == 1:
            return False
        raise
    return True


def merge_base(repo: Path, one: str, other: str) -> str | None:
    try:
        return text(repo, "merge-base", one, other) or None
    except GitError:
        return None


def merges_in(repo: Path, spec: str) -> list[str]:
    """Merge commits in a range, newest first, as 'sha8 subject'."""
    out = text(repo, "log", "--merges", "--format=%h %s", "--abbrev=8", spec, "--")
    return [line for line in out.splitlines() if line]


def commit_object(repo: Path, sha: str) -> bytes:
    """The raw commit object, to copy author and message into a squash commit."""
    return run(repo, "cat-file", "commit", sha)


APPLY_BATCH = 2000
"""Patch files per `git apply`: far under any ARG_MAX, few enough processes."""


@dataclass(frozen=True)
class Scratch:
    """A throwaway index and object folder layered over an upstream repository."""

    repo: Path
    dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "GIT_INDEX_FILE": str(self.dir / "index"),
            "GIT_OBJECT_DIRECTORY": str(self.dir / "objects"),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects_dir_cached(self.repo)),
        }

    def run(self, *args: str, **kwargs: Any) -> bytes:
        return run(self.repo, *args, env={**self.env, **kwargs.pop("env", {})}, **kwargs)

    def read_tree(self, rev: str) -> None:
        self.run("read-tree", rev)

    def apply(self, patch_files: list[Path]) -> None:
        """Apply patch files in order to the scratch index: exact, no fuzz, no fixing; in
        batches, so a series of 40,000 patches stays under the argument-list limit."""
        for start in range(0, len(patch_files), APPLY_BATCH):
            self.run(
                "apply",
                "--cached",
                "--whitespace=nowarn",
                *[str(p) for p in patch_files[start : start + APPLY_BATCH]],
                config=APPLY_CONFIG,
            )

    def write_tree(self) -> str:
        return self.run("write-tree").decode().strip()

    def gitlinks(self, paths: list[str]) -> dict[str, str]:
        """The commit each path is a gitlink to in the scratch index (others left out)."""
        literal = [f":(literal){p}" for p in paths]
        out = self.run("ls-files", "-s", "-z", "--", *literal)
        links = {}
        for entry in out.decode("utf-8", "surrogateescape").split("\0"):
            info, _, path = entry.partition("\t")
            parts = info.split()
            if len(parts) == 3 and parts[0] == GITLINK and path in paths:
                links[path] = parts[1]
        return links

    def commit_tree(
        self,
        tree: str,
        parent: str,
        message: bytes,
        env: dict[str, str],
        config: Iterable[str] = (),
    ) -> str:
        out = self.run("commit-tree", tree, "-p", parent, stdin=message, env=env, config=config)
        return out.decode().strip()

    def format_patch(self, base: str, tip: str) -> bytes:
        """The deterministic mbox for base..tip (see PATCH_CONFIG / PATCH_FLAGS)."""
        return self.run("format-patch", *PATCH_FLAGS, f"{base}..{tip}", config=PATCH_CONFIG)


_OBJECTS: dict[Path, Path] = {}


def objects_dir_cached(repo: Path) -> Path:
    if repo not in _OBJECTS:
        _OBJECTS[repo] = objects_dir(repo)
    return _OBJECTS[repo]


@contextmanager
def scratch(repo: Path) -> Iterator[Scratch]:
    """A private temporary Scratch over `repo`, removed on exit whatever happens."""
    with tempfile.TemporaryDirectory(prefix="flagtasks-") as tmp:
        os.chmod(tmp, 0o700)
        (Path(tmp) / "objects").mkdir()
        yield Scratch(repo=repo, dir=Path(tmp))


# ---- build trees: real repositories that share the upstream's objects ----


def init_shared(path: Path, borrow_from: Path, branch: str) -> None:
    """Create an empty repo at `path` whose object store borrows `borrow_from` (alternates)."""
    run(path.parent, "init", "-q", "--template=", "-b", branch, str(path))
    point_alternates(path, borrow_from)


def point_alternates(path: Path, borrow_from: Path) -> None:
    """Make the repo at `path` borrow objects from `borrow_from`, by a path relative to its
    own object folder, so moving the checkout with its build folder keeps the tree working."""
    objects = path / ".git" / "objects"
    (objects / "info").mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(borrow_from, objects.resolve())
    (objects / "info" / "alternates").write_text(f"{relative}\n", encoding="utf-8")


def alternates_broken(path: Path) -> bool:
    """True when a repo's alternates name an object folder that is not there (the upstream
    moved): every git command in it would fail, so it is repointed before anything else."""
    alternates = path / ".git" / "objects" / "info" / "alternates"
    try:
        entries = alternates.read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    base = alternates.parent.parent
    return any(line and not (base / line).is_dir() for line in entries if not line.startswith("#"))


def checkout_new(path: Path, branch: str, base: str) -> None:
    """Point `branch` at base and fill the work tree from it."""
    run(path, "update-ref", f"refs/heads/{branch}", base)
    run(path, "read-tree", "-u", "--reset", "HEAD", config=BUILD_CONFIG)


def move_tree(path: Path, rev: str) -> None:
    """Move index and work tree from HEAD's commit to `rev`, writing only the files that
    differ (two-tree merge); HEAD itself is not moved."""
    run(path, "read-tree", "-m", "-u", "HEAD", rev, config=BUILD_CONFIG)


def point_branch(path: Path, branch: str, rev: str, drop: str | None = None) -> None:
    """Put HEAD on `branch` = `rev`, deleting the branch `drop` it was on (if another)."""
    run(path, "update-ref", f"refs/heads/{branch}", rev)
    run(path, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
    if drop and drop != branch:
        run(path, "update-ref", "-d", f"refs/heads/{drop}")


def tag(path: Path, name: str, rev: str) -> None:
    run(path, "update-ref", f"refs/tags/{name}", rev)


def am(path: Path, mbox: Path) -> None:
    """Apply a format-patch mbox as commits, exactly (no 3-way, no whitespace fixing)."""
    try:
        run(
            path,
            "am",
            "-q",
            "--keep-cr",
            "--keep-non-patch",
            "--no-3way",
            "--whitespace=nowarn",
            "--committer-date-is-author-date",
            str(mbox),
            env=BUILD_IDENTITY,
            config=APPLY_CONFIG,
        )
    except GitError as exc:
        failed = re.search(r"^Patch failed at (\d+) (.*)$", exc.stderr, re.MULTILINE)
        which = f"patch {int(failed[1])} {failed[2]!r} " if failed else "the patch "
        raise OperationError(
            f"{which}does not apply: {_first_error(exc.stderr)}; regenerate the adaptation "
            "against its base, or rebase the vendor branch onto the base"
        ) from None


def _first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("error:"):
            return line[len("error:") :].strip()
    lines = stderr.strip().splitlines()
    return lines[0] if lines else "git am failed"


def head(path: Path) -> str:
    return text(path, "rev-parse", "--verify", "HEAD")


def status_porcelain(path: Path) -> list[str]:
    """Changed, staged, untracked and ignored paths: all of them would be lost with the tree
    (ignored files in a build tree are often training outputs and logs)."""
    out = run(
        path,
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--ignored",
        "--ignore-submodules=none",  # a .gitmodules `ignore = all` must not hide work
    )
    return [entry for entry in out.decode("utf-8", "replace").split("\0") if entry]


def local_refs(path: Path) -> dict[str, str]:
    out = text(path, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def listed_files(repo: Path) -> list[str]:
    """Tracked plus untracked-but-not-ignored files of a work tree."""
    out = run(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def tracked_under(repo: Path, folder: str, limit: int | None = 3) -> list[str]:
    """Tracked files under `folder` of a work tree (the first `limit` of them)."""
    out = run(repo, "ls-files", "-z", "--", f":(literal){folder}")
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p][:limit]


def subject(repo: Path, rev: str) -> str:
    return text(repo, "log", "-1", "--format=%s", rev, "--")


def commit_paths(repo: Path, paths: list[Path], message: str) -> str:
    """Commit exactly `paths` (a missing one as its deletion) on HEAD through a temporary
    index, leaving the user's other staged and unstaged work as it was."""
    relative = [str(p.relative_to(repo)) for p in paths]
    parent = text(repo, "rev-parse", "--verify", "-q", "HEAD") if _has_head(repo) else ""
    with tempfile.TemporaryDirectory(prefix="flagtasks-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run(repo, "read-tree", *([parent] if parent else ["--empty"]), env=env)
        present = [rel for rel, path in zip(relative, paths, strict=True) if path.exists()]
        gone = [rel for rel, path in zip(relative, paths, strict=True) if not path.exists()]
        if present:
            run(repo, "add", "-A", "--", *present, env=env)
        if gone:
            run(repo, "rm", "-q", "--cached", "--ignore-unmatch", "--", *gone, env=env)
        tree = text(repo, "write-tree", env=env)
        args = ["commit-tree", tree, *(["-p", parent] if parent else []), "-m", message]
        commit = text(repo, *args)
    run(repo, "update-ref", "-m", "flagtasks patch --commit", "HEAD", commit, parent or "")
    run(repo, "reset", "-q", "--", *relative)
    return commit


def _has_head(repo: Path) -> bool:
    try:
        run(repo, "rev-parse", "--verify", "-q", "HEAD")
    except GitError:
        return False
    return True


def tracked_changes(repo: Path) -> list[str]:
    """Staged or unstaged changes to tracked files (untracked files do not count)."""
    out = run(repo, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    return [e[3:] for e in out.decode("utf-8", "replace").split("\0") if len(e) > 3]


def branch_exists(repo: Path, branch: str) -> bool:
    try:
        run(repo, "show-ref", "--verify", "-q", f"refs/heads/{branch}")
    except GitError:
        return False
    return True


def current_ref(repo: Path) -> str:
    """The branch HEAD is on, or the commit when detached, to switch back to."""
    try:
        ref = text(repo, "symbolic-ref", "-q", "HEAD")
    except GitError:
        return text(repo, "rev-parse", "--verify", "HEAD")
    return ref.removeprefix("refs/heads/")  # not --short: "heads/main" when a tag is "main"


def detached_head(path: Path) -> str | None:
    """HEAD's commit when it is detached (not on a branch), else None."""
    try:
        run(path, "symbolic-ref", "-q", "HEAD")
    except GitError:
        return head(path)
    return None


def switch_new(repo: Path, branch: str, base: str) -> None:
    run(repo, "checkout", "-q", "-b", branch, base, config=CHECKOUT_CONFIG)


def git_dir(repo: Path) -> Path:
    return Path(text(repo, "rev-parse", "--absolute-git-dir"))


@dataclass(frozen=True)
class RawEntry:
    """One entry of `git diff --raw`: modes and object ids before and after ("0"*40: none)."""

    old_mode: str
    new_mode: str
    old: str
    new: str
    path: str


def _raw_diff(repo: Path, old: str, new: str, *filters: str) -> list[RawEntry]:
    """Each entry of `git diff --raw` between two commits (or trees)."""
    out = run(repo, "diff", "--raw", "-z", "--no-abbrev", "--no-renames", *filters, old, new)
    fields = out.decode("utf-8", "surrogateescape").split("\0")
    entries = []
    for status, path in zip(fields[::2], fields[1::2], strict=False):
        parts = status.lstrip(":").split()
        if len(parts) >= 4:
            entries.append(RawEntry(parts[0], parts[1], parts[2], parts[3], path))
    return entries


def gitlinks_changed(repo: Path, old: str, new: str) -> list[str]:
    """Submodule paths whose gitlink is added, moved or removed between two commits."""
    return [e.path for e in gitlink_moves(repo, old, new)]


def gitlink_moves(repo: Path, old: str, new: str) -> list[RawEntry]:
    """The entries of a diff that add, move or remove a submodule's gitlink."""
    return [e for e in _raw_diff(repo, old, new) if GITLINK in (e.old_mode, e.new_mode)]


GITLINK = "160000"


def gitlinks_in(repo: Path, rev: str) -> dict[str, str]:
    """Every submodule path of a commit's tree and the commit its gitlink names."""
    out = run(repo, "ls-tree", "-r", "-z", "--full-tree", rev)
    links = {}
    for entry in out.decode("utf-8", "surrogateescape").split("\0"):
        info, _, path = entry.partition("\t")
        parts = info.split()
        if len(parts) == 3 and parts[0] == GITLINK:
            links[path] = parts[2]
    return links


def gitmodules(repo: Path, rev: str) -> dict[str, tuple[str, str]]:
    """path -> (name, url) of the submodules `.gitmodules` declares at `rev` ({} if none)."""
    try:
        out = run(
            repo, "config", "-z", "--blob", f"{rev}:.gitmodules", "--get-regexp", r"^submodule\."
        )
    except GitError:
        return {}
    values: dict[tuple[str, str], str] = {}
    for item in out.decode("utf-8", "surrogateescape").split("\0"):
        key, _, value = item.partition("\n")
        name, _, field = key.removeprefix("submodule.").rpartition(".")
        if name and field in ("path", "url"):
            values[(name, field)] = value
    return {
        path: (name, values.get((name, "url"), ""))
        for (name, field), path in values.items()
        if field == "path"
    }


def has_commit(repo: Path, sha: str) -> bool:
    """True when the repository (or git folder) `repo` holds commit `sha`."""
    try:
        run(repo, "cat-file", "-e", f"{sha}^{{commit}}")
    except (GitError, OSError):
        return False
    return True


def detach_at(path: Path, sha: str) -> None:
    """Put a new repository's HEAD on commit `sha` (detached) and fill its work tree."""
    run(path, "update-ref", "--no-deref", "HEAD", sha)
    run(path, "read-tree", "-u", "--reset", "HEAD", config=BUILD_CONFIG)


def set_config(repo: Path, key: str, value: str) -> None:
    run(repo, "config", key, value)


def tree_with_gitlinks(repo: Path, rev: str, links: Mapping[str, str]) -> str:
    """The tree id of `rev` with the gitlinks at `links`' paths set to its commits."""
    with tempfile.TemporaryDirectory(prefix="flagtasks-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run(repo, "read-tree", rev, env=env)
        info = "".join(f"{GITLINK} {sha}\t{path}\0" for path, sha in links.items())
        run(repo, "update-index", "-z", "--index-info", env=env, stdin=info.encode())
        return text(repo, "write-tree", env=env)


def written_between(repo: Path, old: str, new: str) -> list[tuple[str, bool]]:
    """(path, executable) of the regular files commit `new` adds or changes over `old`."""
    return [
        (e.path, e.new_mode == "100755")
        for e in _raw_diff(repo, old, new, "--diff-filter=AMT")
        if e.new_mode in ("100644", "100755")
    ]


def added_between(repo: Path, old: str, new: str) -> list[str]:
    """Files that exist in commit `new` and not in `old`: what a switch would write. A
    submodule's gitlink is left out (a switch never writes into its folder)."""
    return [e.path for e in _raw_diff(repo, old, new, "--diff-filter=A") if e.new_mode != GITLINK]


def index_tree(repo: Path) -> str | None:
    """The tree the index holds, or None when it cannot be written (unmerged entries)."""
    try:
        return text(repo, "write-tree")
    except GitError:
        return None


def reset_hard(repo: Path) -> None:
    run(repo, "reset", "-q", "--hard", "HEAD", config=CHECKOUT_CONFIG)


def tracked_files(repo: Path) -> list[str]:
    out = run(repo, "ls-files", "-z")
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def commits_not_by(repo: Path, base: str, tip: str, email: str) -> int:
    """Commits in base..tip whose committer is not `email`: someone's own, not a build's."""
    out = text(repo, "log", "--format=%ce", f"{base}..{tip}", "--")
    return sum(1 for line in out.splitlines() if line != email)


def hidden_entries(repo: Path) -> list[str]:
    """Tracked files whose changes git is told not to show: assume-unchanged ones, and
    skip-worktree ones that exist on disk (a sparse checkout leaves those absent)."""
    out = run(repo, "ls-files", "-v", "-z")
    hidden = []
    for entry in out.decode("utf-8", "surrogateescape").split("\0"):
        if len(entry) > 2 and (entry[0].islower() or entry[0] == "S"):
            path = entry[2:]
            if entry[0].islower() or os.path.lexists(repo / path):
                hidden.append(path)
    return hidden


IN_PROGRESS = ("rebase-apply", "rebase-merge", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD")


def operation_in_progress(repo: Path) -> str | None:
    """The git operation (am, rebase, merge, cherry-pick, revert) the checkout is in."""
    gitdir = git_dir(repo)
    return next((name for name in IN_PROGRESS if (gitdir / name).exists()), None)


def stash_changes(repo: Path, message: str) -> None:
    run(repo, "stash", "push", "-q", "-m", message)


def am_abort(repo: Path) -> None:
    with contextlib.suppress(GitError):
        run(repo, "am", "--abort", config=("core.hooksPath=/dev/null",))


def switch_back(repo: Path, ref: str) -> None:
    run(repo, "checkout", "-q", ref, config=("core.hooksPath=/dev/null",))


def delete_branch(repo: Path, branch: str) -> None:
    run(repo, "branch", "-q", "-D", branch)


# ---- rebase: replaying an adaptation onto another base with git's three-way merge ----

AM_FLAGS = (
    "--keep-cr",
    "--keep-non-patch",
    "--whitespace=nowarn",
    "--committer-date-is-author-date",
)
"""`git am`'s options for every replay: the bytes as they are, the build's dates."""


def apply_each(
    repo: Path, base: str, patch_files: list[Path], index: Path
) -> tuple[int | None, set[str]]:
    """Apply patch files one by one to `base` in the index file `index`, so every blob the
    series passes through is written to `repo`'s objects (a later three-way merge needs
    them). Returns the number of the first patch that does not apply (or None), and every
    path the patches touch."""
    env = {"GIT_INDEX_FILE": str(index)}
    run(repo, "read-tree", base, env=env)
    touched: set[str] = set()
    for number, path in enumerate(patch_files, start=1):
        try:
            out = run(
                repo,
                "apply",
                "--cached",
                "--apply",
                "--numstat",
                "-z",
                "--whitespace=nowarn",
                str(path),
                env=env,
                config=APPLY_CONFIG,
            )
        except GitError:
            return number, touched
        touched |= _numstat_paths(out)
    return None, touched


def _numstat_paths(out: bytes) -> set[str]:
    """Paths of `git apply --numstat -z`: `a\tb\tpath\0`, or `a\tb\t\0from\0to\0`."""
    fields = out.decode("utf-8", "surrogateescape").split("\0")
    paths: set[str] = set()
    index = 0
    while index < len(fields):
        head = fields[index]
        if not head:
            index += 1
            continue
        path = head.split("\t", 2)[-1] if head.count("\t") >= 2 else ""
        if path:
            paths.add(path)
            index += 1
        else:  # a rename or copy: the two paths follow
            paths.update(p for p in fields[index + 1 : index + 3] if p)
            index += 3
    return paths


def sparse_checkout(path: Path, paths: set[str] | None) -> None:
    """Fill a scratch repository's files from HEAD: only `paths` (and whatever a merge
    brings in) when given, else all of them. A three-way replay needs the files it
    touches, not the 3,500 others, and writing those is most of a checkout's cost."""
    info = path / ".git" / "info"
    info.mkdir(exist_ok=True)
    sparse = paths is not None and len(paths) <= SPARSE_LIMIT
    run(path, "config", "core.sparseCheckout", "true" if sparse else "false")
    patterns = "".join(f"/{_pattern(p)}\n" for p in sorted(paths or ())) if sparse else "/*\n"
    (info / "sparse-checkout").write_text(patterns or "/.flagtasks-none\n", encoding="utf-8")
    run(path, "read-tree", "-u", "--reset", "HEAD", config=BUILD_CONFIG)


SPARSE_LIMIT = 2000
"""More touched paths than this: a full checkout (non-cone patterns are matched one by one)."""


def _pattern(path: str) -> str:
    """A path as a literal gitignore-style pattern."""
    escaped = re.sub(r"([\\*?\[\]!#])", r"\\\1", path)
    return escaped[:-1] + "\\ " if escaped.endswith(" ") else escaped


@dataclass(frozen=True)
class AmRun:
    """What one `git am` invocation did: finished or stopped, and what it printed."""

    done: bool
    stdout: str
    stderr: str


def _am(path: Path, *args: str) -> AmRun:
    if _GIT is None:
        raise UsageError("git is not installed: install git 2.30 or newer")
    config = [
        a
        for item in (*APPLY_CONFIG, *CHECKOUT_CONFIG)
        if not item.startswith("am.")
        for a in ("-c", item)
    ]
    proc = subprocess.run(
        [_GIT, "--no-optional-locks", "-C", str(path), *config, "am", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=clean_env(os.environ, BUILD_IDENTITY),
        check=False,
    )
    return AmRun(
        proc.returncode == 0,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def am_three_way(path: Path, mbox: Path) -> AmRun:
    """`git am -3`: plain apply first, git's three-way merge where that fails; a stop at a
    conflict is a result, not an error (the session stays for `am_continue`)."""
    return _am(path, "-3", *AM_FLAGS, str(mbox))


def am_continue(path: Path) -> AmRun:
    return _am(path, "--continue")


def am_skip(path: Path) -> AmRun:
    return _am(path, "--skip")


def unmerged(path: Path) -> dict[str, set[int]]:
    """Each path with unmerged index entries, and its stages (1 base, 2 ours, 3 theirs)."""
    out = run(path, "ls-files", "-u", "-z")
    stages: dict[str, set[int]] = {}
    for entry in out.decode("utf-8", "surrogateescape").split("\0"):
        info, _, name = entry.partition("\t")
        parts = info.split()
        if len(parts) == 3:
            stages.setdefault(name, set()).add(int(parts[2]))
    return stages


def take_theirs(path: Path, name: str, present: bool) -> None:
    """Resolve an unmerged path with the patch's side (or its deletion)."""
    if present:
        run(path, "checkout", "--theirs", "--", name)
        run(path, "add", "--", name)
    else:
        run(path, "rm", "-q", "--", name)


def reset_to(path: Path, rev: str) -> None:
    """Move a scratch repository's branch, index and files to `rev`."""
    run(path, "reset", "-q", "--hard", rev, config=CHECKOUT_CONFIG)


def clean_all(path: Path) -> None:
    """Remove every untracked and ignored file of a scratch repository."""
    run(path, "clean", "-q", "-ffdx")


def worktree_add(repo: Path, folder: Path, branch: str, rev: str) -> None:
    run(repo, "worktree", "add", "-q", "-b", branch, str(folder), rev, config=CHECKOUT_CONFIG)
