"""Real git repositories for the tests: files and commits, project setup, store paths, tree
comparisons, snapshots and scenario builders, on top of fixtures.py (environment, runners, the
sample).

Every builder makes a tiny upstream repository whose history is a pure function of the code
(fixed identities and dates), so commit ids are the same on every run and every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from fixtures import (
    EPOCH,
    UPSTREAM,
    A,
    B,
    C,
    clean_env,
    clone_sample,
    flagtasks_ok,
    git,
    git_env,
    git_raw,
    rev,
)

VENDOR = ("Vera Vendor", "vera@vendor.example")
TIP_AUTHOR = ("Tomás Tip-Author", "tip@vendor.example")

SKIPPED_TOP = frozenset({".git", "build", ".flagtasks", "hardware", "__pycache__"})
"""Top-level entries of a project that snapshot() leaves out: the tool's own outputs."""

DODO = "from flagtasks.tasks import *  # noqa: F401,F403\n"
EXCLUDES = ("build/", ".flagtasks/", "/dodo.py", "/config.toml", ".doit*", "__pycache__/")


class Link(NamedTuple):
    """A symlink to write: `write(repo, {"l": Link("target")})`."""

    target: str


class Exe(NamedTuple):
    """An executable file (mode 755) to write."""

    data: bytes | str


Content = bytes | str | Link | Exe | None


# --------------------------------------------------------------------------- git


def tree_of(repo: Path, spec: str) -> str:
    return rev(repo, f"{spec}^{{tree}}")


def base8(repo: Path, spec: str) -> str:
    return rev(repo, f"{spec}^{{commit}}")[:8]


def subject(repo: Path, spec: str) -> str:
    return git(repo, "log", "-1", "--format=%s", spec)


def changed_paths(repo: Path, commit: str) -> list[str]:
    return sorted(git(repo, "diff-tree", "--no-commit-id", "-r", "--name-only", commit).split())


def ambiguous_prefix(repo: Path) -> str:
    """Write two commits whose SHAs share their first 4 hex digits; return those 4 digits.

    Commit ids are computed here (sha1 of the object), so only the pair is written."""
    tree = rev(repo, "v1.0^{tree}")
    parent = rev(repo, "v1.0")
    seen: dict[str, bytes] = {}
    for i in range(200_000):
        body = (
            f"tree {tree}\nparent {parent}\n"
            "author Probe <probe@example.invalid> 1700000000 +0000\n"
            "committer Probe <probe@example.invalid> 1700000000 +0000\n\n"
            f"probe {i}\n"
        ).encode()
        sha = hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
        prefix = sha[:4]
        if prefix in seen:
            for data in (seen[prefix], body):
                written = git_raw(repo, "hash-object", "-t", "commit", "-w", "--stdin", input=data)
                assert written.decode().startswith(prefix)
            return prefix
        seen[prefix] = body
    raise AssertionError("no 4-hex collision found")  # pragma: no cover


# --------------------------------------------------------------------------- files


def write(repo: Path, files: Mapping[str, Content]) -> None:
    """Write work-tree files: bytes/str (mode 644), Exe (755), Link (symlink), None (delete)."""
    for rel, content in files.items():
        path = repo / rel
        if path.is_symlink() or path.exists():
            path.unlink()
        if content is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            os.symlink(content.target, path)
            continue
        data = content.data if isinstance(content, Exe) else content
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(path, 0o755 if isinstance(content, Exe) else 0o644)


def chmod(repo: Path, rel: str, executable: bool) -> None:
    os.chmod(repo / rel, 0o755 if executable else 0o644)


_clock: dict[str, int] = {}


def _next_time(repo: Path) -> int:
    """A minute after the previous fixture commit of this repository."""
    key = str(repo.resolve())
    _clock[key] = _clock.get(key, EPOCH - 60) + 60
    return _clock[key]


def commit(
    repo: Path,
    msg: str,
    files: Mapping[str, Content] | None = None,
    date: int | None = None,
    author: tuple[str, str] = UPSTREAM,
    allow_empty: bool = False,
) -> str:
    """Write `files`, stage them and every change to tracked files, commit on the current
    branch; return the SHA. Untracked files not named in `files` are never committed."""
    if files:
        write(repo, files)
        git(repo, "--literal-pathspecs", "add", "-A", "--", *files)
    git(repo, "add", "-u")
    when = date if date is not None else _next_time(repo)
    args = ["commit", "-q", "--no-verify", "-F", "-"]
    if allow_empty:
        args.append("--allow-empty")
    git(repo, *args, env=git_env(when, author), input=msg.encode())
    return rev(repo, "HEAD")


def init_repo(path: Path) -> Path:
    """An empty upstream repository on `main` that ignores the tool's outputs."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "core.autocrlf", "false")
    exclude = path / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("".join(f"{line}\n" for line in EXCLUDES))
    return path


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_config(
    project: Path,
    vendors: Mapping[str, Mapping[str, str]],
    name: str = "FlagScale",
    extra: str = "",
) -> None:
    """(Re)write config.toml with an [upstream] table and one [vendor.<DEV>] per device."""
    lines = ["[upstream]", 'repo = "."', f"name = {_toml_str(name)}", ""]
    for dev, table in vendors.items():
        lines.append(f"[vendor.{dev}]")
        lines.extend(f"{key} = {_toml_str(value)}" for key, value in table.items())
        lines.append("")
    (project / "config.toml").write_text("\n".join(lines) + extra)


def make_project(
    path: Path,
    vendors: Mapping[str, Mapping[str, str]],
    name: str = "FlagScale",
) -> Path:
    """Turn `path` (an upstream repo, created if missing) into a flagtasks project."""
    if not (path / ".git").exists():
        init_repo(path)
    (path / "dodo.py").write_text(DODO)
    write_config(path, vendors, name)
    return path


# --------------------------------------------------------------------------- store


def store_dir(project: Path, dev: str, base: str) -> Path:
    return project / "hardware" / dev / base8(project, base)


def patch_file(project: Path, dev: str, base: str) -> Path:
    folder = store_dir(project, dev, base)
    return folder / f"{folder.name}.patch"


def read_meta(project: Path, dev: str, base: str) -> dict[str, object]:
    return json.loads((store_dir(project, dev, base) / "meta.json").read_text())


def build_tree(project: Path, dev: str, name: str = "FlagScale") -> Path:
    return project / "build" / dev / name


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file below `root` (symlinks not followed) -> bytes; `.git` left out."""
    out: dict[str, bytes] = {}
    if not root.exists():
        return out
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            out[rel] = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- trees


@dataclass(frozen=True)
class Entry:
    mode: str
    sha: str
    path: str


def ls_tree(repo: Path, spec: str) -> list[Entry]:
    out = git_raw(repo, "ls-tree", "-r", "-z", "--full-tree", spec)
    entries = []
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        mode, _kind, sha = meta.decode().split()
        entries.append(Entry(mode, sha, path.decode("utf-8", "surrogateescape")))
    return entries


def blobs(repo: Path, shas: Iterable[str]) -> dict[str, bytes]:
    """Contents of many blobs in one `git cat-file --batch`."""
    wanted = sorted(set(shas))
    out = git_raw(repo, "cat-file", "--batch", input="".join(f"{s}\n" for s in wanted).encode())
    result: dict[str, bytes] = {}
    pos = 0
    for sha in wanted:
        header_end = out.index(b"\n", pos)
        got, _kind, size = out[pos:header_end].decode().split()
        assert got == sha
        start = header_end + 1
        result[sha] = out[start : start + int(size)]
        pos = start + int(size) + 1
    return result


def worktree_mismatches(checkout: Path, repo: Path, spec: str) -> list[str]:
    """How the files of `checkout` differ from the tree `spec` of `repo` (empty when exact):
    same paths, same bytes, symlinks as symlinks with the same target, exec bits."""
    entries = ls_tree(repo, spec)
    contents = blobs(repo, [e.sha for e in entries if e.mode != "160000"])
    problems = []
    expected = {e.path for e in entries}
    present = set(tree_files(checkout))
    for extra in sorted(present - expected):
        problems.append(f"unexpected file {extra!r}")
    for e in entries:
        path = checkout / e.path
        want = contents[e.sha]
        if e.mode == "120000":
            if not path.is_symlink():
                problems.append(f"{e.path!r} should be a symlink")
            elif os.readlink(path).encode() != want:
                problems.append(f"{e.path!r} -> {os.readlink(path)!r}, want {want!r}")
            continue
        if path.is_symlink() or not path.is_file():
            problems.append(f"{e.path!r} missing or not a regular file")
            continue
        if path.read_bytes() != want:
            problems.append(f"{e.path!r} bytes differ")
        is_exec = bool(path.stat().st_mode & stat.S_IXUSR)
        if is_exec != (e.mode == "100755"):
            problems.append(f"{e.path!r} exec bit {is_exec}, tree mode {e.mode}")
    return problems


def own_objects(git_dir: Path) -> set[str]:
    """Object ids stored in this repository's own object store (loose and packed)."""
    objects = git_dir / "objects"
    found: set[str] = set()
    for sub in objects.iterdir():
        if re.fullmatch(r"[0-9a-f]{2}", sub.name):
            found.update(sub.name + child.name for child in sub.iterdir())
    pack = objects / "pack"
    if pack.is_dir():
        for idx in pack.glob("*.idx"):
            out = subprocess.run(
                ["git", "show-index"],
                input=idx.read_bytes(),
                capture_output=True,
                check=True,
                env=clean_env(),
            ).stdout.decode()
            found.update(line.split()[1] for line in out.splitlines() if line.strip())
    return found


def commits_in_range(repo: Path, base: str, current: str) -> list[str]:
    """Non-merge commits of base..current that change the tree, oldest first."""
    shas = git(repo, "rev-list", "--reverse", "--no-merges", f"{base}..{current}").split()
    return [
        s
        for s in shas
        if git(repo, "diff-tree", "--root", "-r", "--name-only", "--no-commit-id", s)
    ]


# --------------------------------------------------------------------------- snapshot


def _skipped(top: str) -> bool:
    return top in SKIPPED_TOP or top.startswith(".doit")


def _status_entries(repo: Path) -> list[str]:
    raw = git_raw(
        repo,
        "--no-optional-locks",
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
    )
    fields = raw.split(b"\0")
    entries: list[str] = []
    i = 0
    while i < len(fields):
        rec = fields[i].decode("utf-8", "surrogateescape")
        i += 1
        if not rec:
            continue
        if rec[0] in "RC":  # a rename/copy carries its source as the next field
            rec += " <- " + fields[i].decode("utf-8", "surrogateescape")
            i += 1
        if not _skipped(rec[3:].split("/", 1)[0]):
            entries.append(rec)
    return entries


def snapshot(repo: Path) -> dict[str, object]:
    """Everything a user sees of a checkout, byte for byte: work-tree files (tracked, untracked,
    ignored: type, mode, mtime, bytes or link target), the index file, HEAD, refs, stash,
    status, .git/config and the names in .git/. The tool's outputs (build/, hardware/,
    .flagtasks/, doit state) are left out."""
    files: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, names in os.walk(repo):
        here = Path(dirpath)
        if here == repo:
            dirs[:] = [d for d in dirs if not _skipped(d)]
            names = [n for n in names if not _skipped(n)]
        for name in sorted([*dirs, *names]):
            path = here / name
            rel = path.relative_to(repo).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                files[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                files[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                files[rel] = (
                    "file",
                    stat.S_IMODE(st.st_mode),
                    st.st_mtime_ns,
                    sha256(path.read_bytes()),
                )
    dot_git = repo / ".git"
    return {
        "files": files,
        "index": sha256((dot_git / "index").read_bytes()),
        "HEAD file": (dot_git / "HEAD").read_text(),
        "HEAD": git(repo, "rev-parse", "HEAD"),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname) %(symref)"),
        "stash": git(repo, "stash", "list", "--format=%H %gd %gs"),
        "status": _status_entries(repo),
        "config": (dot_git / "config").read_text(),
        "exclude": (dot_git / "info" / "exclude").read_text(),
        ".git entries": sorted(p.name for p in dot_git.iterdir() if p.name not in {"logs"}),
    }


def snapshot_diff(before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    """Readable differences between two snapshots."""
    out = []
    for key in before:
        a, b = before[key], after[key]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for path in sorted(set(a) | set(b)):
                if a.get(path) != b.get(path):
                    out.append(f"{key}: {path}: {a.get(path)} -> {b.get(path)}")
        else:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def settle_index(repo: Path) -> None:
    """Age every work-tree file and refresh the index once, so that no entry is racily clean
    and a read-only `git status` by anyone later has no reason to rewrite .git/index."""
    old = EPOCH
    for dirpath, dirs, names in os.walk(repo):
        if Path(dirpath) == repo:
            dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            os.utime(Path(dirpath, name), (old, old), follow_symlinks=False)
    git_raw(repo, "status", "--porcelain")


def files_state(root: Path, skip: frozenset[str] = frozenset({".git"})) -> dict[str, tuple]:
    """Every entry below `root` (top-level names in `skip` left out): type, mode, bytes."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirs, names in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirs[:] = [d for d in dirs if d not in skip]
            names = [n for n in names if n not in skip]
        for name in [*dirs, *names]:
            path = here / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def git_state(repo: Path) -> dict[str, str]:
    """What git shows of a checkout: HEAD, refs, staged and unstaged changes, untracked."""
    return {
        "HEAD": git(repo, "symbolic-ref", "-q", "HEAD") if _on_branch(repo) else "detached",
        "head": rev(repo, "HEAD"),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "status": "\n".join(
            line
            for line in git(repo, "status", "--porcelain=v1", "--untracked-files=all").splitlines()
            if not line[3:].startswith(".flagtasks/")  # the tool's own state folder
        ),
        "staged": git(repo, "diff", "--cached", "--binary"),
        "unstaged": git(repo, "diff", "--binary"),
        "stash": git(repo, "stash", "list"),
    }


def _on_branch(repo: Path) -> bool:
    return (repo / ".git" / "HEAD").read_text().startswith("ref:")


class Frozen:
    """Everything a failing command must leave as it was: files (hardware/ included, the
    state folder .flagtasks/ left out) and git's view of the checkout."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.files = files_state(repo, frozenset({".git", ".flagtasks"}))
        self.git = git_state(repo)

    def assert_unchanged(self) -> None:
        after = files_state(self.repo, frozenset({".git", ".flagtasks"}))
        changed = sorted(
            p for p in set(self.files) | set(after) if self.files.get(p) != after.get(p)
        )
        assert changed == [], f"files changed by a failing command: {changed}"
        after_git = git_state(self.repo)
        assert {k: v for k, v in after_git.items() if v != self.git[k]} == {}


# --------------------------------------------------------------------------- series check


def series_failure(repo: Path, base: str, current: str, scratch: Path) -> str | None:
    """Replay `git format-patch base..current` with `git am` on base in a throwaway clone.

    Returns None when the series reproduces current's tree, else what went wrong: the
    subject of the patch that did not apply, or "tree differs"."""
    clone = Path(tempfile.mkdtemp(prefix="series-check-", dir=scratch))
    git(scratch, "clone", "-q", "--shared", "--no-checkout", str(repo), str(clone))
    git(clone, "checkout", "-q", "--detach", rev(repo, base))
    mbox = git_raw(
        repo, "format-patch", "--stdout", "--binary", "--full-index", base + ".." + current
    )
    git_raw(clone, "am", "-q", "--keep-cr", input=mbox, check=False)  # failure is the point
    if (clone / ".git" / "rebase-apply").exists():
        failed = git(clone, "am", "--show-current-patch=raw")
        subject = re.search(r"^Subject: (?:\[PATCH[^\]]*\] )?(.*)$", failed, re.M)
        return f"patch does not apply: {subject.group(1) if subject else '?'}"
    if tree_of(clone, "HEAD") != tree_of(repo, current):
        return "tree differs"
    return None


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """A built history: where it lives and what the tests need to know about it."""

    repo: Path
    base: str
    current: str
    notes: dict[str, object] = field(default_factory=dict)


BINARY_LOGO = bytes(range(256)) * 4
BINARY_NEW = b"\x00\x01\xff\xfe\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) + b"\x00" * 16
CRLF_OLD = b"one\r\ntwo\r\nthree\r\n"
CRLF_NEW = b"one\r\nTWO\r\nthree\r\n"
CRLF_ADDED = b"alpha\r\nbeta\r\nmixed line\n\r\n"
TRAILING_WS = b"trailing spaces   \n\ttab line\t\n \n\n\nno newline at end, spaces   "
NON_ASCII = "数据/ü.txt"
SPACE_NAME = "docs/naïve name.txt"
OLD_NAME_PY = "def f():\n    return 1\n\n\ndef g():\n    return 2\n"
MOVED_TEXT = "".join(f"line {i}: some upstream text\n" for i in range(1, 13))
TIP_MESSAGE = (
    "A_X100: tune kernels for the X100\n\n"
    "Body line one of the vendor's message.\nBody line two, mentioning Ünïcode.\n"
)


def build_base(repo: Path) -> str:
    """The upstream base commit (tag v1.0) every scenario starts from."""
    init_repo(repo)
    sha = commit(
        repo,
        "Upstream v1.0",
        {
            "README.md": "# FlagScale\n\nUpstream readme.\n",
            "src/old_name.py": OLD_NAME_PY,
            "docs/remove_me.md": "obsolete\n",
            "scripts/run.sh": "#!/bin/sh\necho run\n",
            "scripts/tool.sh": Exe("#!/bin/sh\necho tool\n"),
            "assets/logo.bin": BINARY_LOGO,
            "win/crlf.txt": CRLF_OLD,
            "keep/phoenix.txt": "I will be deleted and re-added\n",
            "a/orig.txt": MOVED_TEXT,
            "typechange/was_file.txt": "a regular file for now\n",
            "cfg/ws.txt": "clean\n",
            "conflict.txt": "first\nshared = base\nlast\n",
            "lib.py": "# upstream lib\n",
        },
    )
    git(repo, "tag", "v1.0")
    return sha


def build_edge_case(repo: Path, branch: str = "vendor/edge") -> Scenario:
    """A linear vendor branch on v1.0 that exercises every exactness case in the contract."""
    if not (repo / ".git").exists():
        build_base(repo)
    git(repo, "checkout", "-q", "-b", branch, "v1.0")
    commit(
        repo,
        "Rename old_name.py to new_name.py",
        {"src/old_name.py": None, "src/new_name.py": OLD_NAME_PY},
    )
    commit(repo, "Remove obsolete docs", {"docs/remove_me.md": None})
    chmod(repo, "scripts/run.sh", True)
    chmod(repo, "scripts/tool.sh", False)
    commit(repo, "Flip exec bits of run.sh and tool.sh")
    commit(
        repo,
        "Add symlinks",
        {
            "link_to_readme": Link("README.md"),
            "links/dangling": Link("../nowhere/missing.txt"),
            "typechange/was_file.txt": Link("../README.md"),
        },
    )
    commit(
        repo,
        "Add and change binary files",
        {"assets/new.bin": BINARY_NEW, "assets/logo.bin": BINARY_LOGO[:300] + b"\xff" * 7},
    )
    commit(repo, "Add empty files", {"empty.txt": b"", "src/pkg/__init__.py": b""})
    commit(
        repo,
        "Add files with non-ASCII names",
        {NON_ASCII: "grüße, 数据\n", SPACE_NAME: "a space in the name\n"},
    )
    commit(
        repo,
        "CRLF files and trailing whitespace",
        {"win/crlf.txt": CRLF_NEW, "win/new_crlf.txt": CRLF_ADDED, "cfg/ws.txt": TRAILING_WS},
    )
    commit(repo, "Delete phoenix", {"keep/phoenix.txt": None})
    commit(repo, "Re-add phoenix", {"keep/phoenix.txt": "I am back, different\n"})
    commit(repo, "Move orig.txt to b/moved.txt", {"a/orig.txt": None, "b/moved.txt": MOVED_TEXT})
    commit(
        repo,
        "Edit the moved file",
        {"b/moved.txt": MOVED_TEXT.replace("line 7:", "line seven:") + "appended\n"},
    )
    current = commit(
        repo,
        TIP_MESSAGE,
        {"README.md": "# FlagScale\n\nUpstream readme.\n\nAdapted for X100.\n"},
        author=TIP_AUTHOR,
    )
    git(repo, "checkout", "-q", "main")
    problem = series_failure(repo, "v1.0", branch, repo.parent)
    return Scenario(repo, "v1.0", branch, {"reference_git_am": problem, "tip": current})


def build_conflict_merge(repo: Path, branch: str = "vendor/merge") -> Scenario:
    """Vendor and side branch both change one line; the merge resolves it to a third value."""
    build_base(repo)
    git(repo, "checkout", "-q", "-b", "side", "v1.0")
    side = commit(
        repo, "side: set shared to side", {"conflict.txt": "first\nshared = side\nlast\n"}
    )
    git(repo, "checkout", "-q", "-b", branch, "v1.0")
    vendor = commit(
        repo, "vendor: set shared to vendor", {"conflict.txt": "first\nshared = vendor\nlast\n"}
    )
    git_raw(repo, "merge", "-q", "--no-edit", "side", check=False)  # conflicts, on purpose
    assert (repo / ".git" / "MERGE_HEAD").exists()
    write(repo, {"conflict.txt": "first\nshared = resolved by neither side\nlast\n"})
    commit(repo, "Merge branch 'side' into vendor/merge")
    current = commit(
        repo, "vendor: tip after the merge", {"README.md": "# FlagScale\n\nmerged vendor\n"}
    )
    git(repo, "checkout", "-q", "main")
    problem = series_failure(repo, "v1.0", branch, repo.parent)
    assert problem is not None, "fixture broken: the series reproduces the evil merge"
    return Scenario(
        repo,
        "v1.0",
        branch,
        {
            "reference_git_am": problem,
            # either conflicting commit is "the first that does not apply", depending on order
            "culprits": [vendor, side],
            "subjects": ["vendor: set shared to vendor", "side: set shared to side"],
            "tip": current,
        },
    )


def build_subtree_merge(repo: Path, branch: str = "vendor/subtree") -> Scenario:
    """A third-party history subtree-merged under third_party/lib/; its commits touch lib.py at
    the top level, where upstream already has a different lib.py."""
    build_base(repo)
    git(repo, "checkout", "-q", "--orphan", "thirdparty")
    git(repo, "rm", "-q", "-r", "-f", ".")
    r1 = commit(repo, "lib: import third-party lib", {"lib.py": "# third party v1\n"})
    commit(repo, "lib: update", {"lib.py": "# third party v2\n", "util.py": "X = 1\n"})
    git(repo, "checkout", "-q", "-f", "-b", branch, "v1.0")
    commit(repo, "vendor: prepare", {"README.md": "# FlagScale\n\nvendor prepares\n"})
    git(
        repo,
        "merge",
        "-q",
        "-s",
        "ours",
        "--no-commit",
        "--allow-unrelated-histories",
        "thirdparty",
    )
    git(repo, "read-tree", "--prefix=third_party/lib/", "-u", "thirdparty")
    commit(repo, "Subtree-merge thirdparty into third_party/lib")
    current = commit(
        repo, "vendor: use the lib", {"third_party/lib/lib.py": "# third party v2, patched\n"}
    )
    git(repo, "checkout", "-q", "main")
    problem = series_failure(repo, "v1.0", branch, repo.parent)
    assert problem is not None, "fixture broken: the series reproduces the subtree merge"
    return Scenario(
        repo,
        "v1.0",
        branch,
        {
            "reference_git_am": problem,
            "culprits": [r1],
            "subjects": ["lib: import third-party lib"],
            "tip": current,
        },
    )


def add_vendor_branch(
    repo: Path, branch: str, files: Mapping[str, Content], start: str = "v1.0"
) -> str:
    """A one-commit vendor branch from `start`; the checkout goes back to where it was."""
    head = git(repo, "symbolic-ref", "-q", "--short", "HEAD")
    git(repo, "checkout", "-q", "-b", branch, start)
    sha = commit(repo, f"{branch}: adapt", files, author=VENDOR)
    git(repo, "checkout", "-q", head)
    return sha


def commit_on(repo: Path, branch: str, msg: str, files: Mapping[str, Content]) -> str:
    """Add a commit on `branch`; the checkout goes back to where it was."""
    head = git(repo, "symbolic-ref", "-q", "--short", "HEAD")
    git(repo, "checkout", "-q", branch)
    sha = commit(repo, msg, files, author=VENDOR)
    git(repo, "checkout", "-q", head)
    return sha


HOSTILE_FORMAT_CONFIG = """\
[diff]
\tnoprefix = true
\tmnemonicPrefix = true
\talgorithm = histogram
\trenames = copies
\tcontext = 5
\tsuppressBlankEmpty = true
[core]
\tabbrev = 12
\tquotePath = false
[format]
\tsignature = hostile signature
\tsignOff = true
\tcoverLetter = auto
\tthread = shallow
\tsubjectPrefix = HOSTILE
\tnumbered = true
[color]
\tui = always
"""
"""A developer's ~/.gitconfig that changes what plain `git format-patch` prints."""

HOSTILE_APPLY_CONFIG = """\
[apply]
\twhitespace = fix
\tignoreWhitespace = change
[am]
\tthreeWay = true
\tkeepcr = false
[core]
\twhitespace = trailing-space,space-before-tab,indent-with-non-tab,cr-at-eol
"""
"""A developer's ~/.gitconfig that makes plain `git am`/`git apply` fix or fuzz patches."""


def hostile_home(parent: Path, config: str) -> Path:
    """A HOME whose .gitconfig has the test identity plus `config`."""
    home = Path(tempfile.mkdtemp(prefix="hostile-home-", dir=parent))
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test User\n\temail = test@example.invalid\n" + config
    )
    return home


# --------------------------------------------------------------------------- the CLI's sample

D = "D_W300"  # a fourth device, on v1.0, only in vendor_checkout()
D_FILES = {"flagscale/backends/d_w300.py": "W300 = True\n"}
A11_FILES = {"flagscale/backends/a_x100.py": "X100_ON_V11 = True\n"}


def vendor_checkout(dest: Path) -> Path:
    """A realistic checkout of the sample: local vendor branches, an identity, HEAD on main.

    Two extra one-commit vendor branches: vendor/D_W300 on v1.0 and vendor/A_X100-v1.1."""
    clone_sample(dest, branches=True, identity=("Test Vendor", "vendor@example.invalid"))
    add_vendor_branch(dest, f"vendor/{D}", D_FILES, start="v1.0")
    add_vendor_branch(dest, f"vendor/{A}-v1.1", A11_FILES, start="v1.1")
    return dest


def add_store(repo: Path) -> Path:
    """Make a patch store in (a copy of) vendor_checkout: A_X100, B_Y100 (hetero with A_X100)
    and D_W300 on v1.0, C_Z200 on v1.1. HEAD stays on main, clean."""
    flagtasks_ok(repo, "patch", "--device-type", A, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{A}")  # fmt: skip
    flagtasks_ok(repo, "patch", "--device-type", A, B, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{B}")  # fmt: skip
    flagtasks_ok(repo, "patch", "--device-type", C, "--base-commit-id", "v1.1",
                 "--current-commit-id", f"vendor/{C}")  # fmt: skip
    flagtasks_ok(repo, "patch", "--device-type", D, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{D}")  # fmt: skip
    return repo
