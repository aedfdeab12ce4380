#!/usr/bin/env python3
"""flagtasks submodule benchmark: one device's build of an upstream with a large submodule.

    python bench/submodules.py [--files 3500] [--sub-files 5000] [--runs 5] [--quick]
                               [--workdir DIR] [--keep] [--json out.json] [--floor-only]

It makes a FlagScale-size upstream (a few commits, an annotated tag `v1.0`) holding ONE
large submodule, third_party/Megatron-LM, added with `git submodule add` from a local
repository. A vendor checkout adapts it: one commit changes 20 upstream files and moves
the gitlink to 3 vendor commits inside the submodule (30 files), which exist only there.
`flagtasks patch` stores the adaptation once; a user checkout (a clone with `git submodule
update --init` from the ORIGINAL submodule repository, without the vendor commits) gets the
store copied in and builds it with `flagtasks unpatch --dir build`. Timed, median of
--runs, against plain git in the same run (the "floor"):

  fresh build   `flagtasks unpatch` after removing build/, against
                `git clone --recurse-submodules -b v1.0` of the upstream (a plain local
                clone, hardlinked) + `git am` of the upstream patch + `git am` of the
                submodule's patch inside the submodule
  no-op         the same `flagtasks unpatch` with the tree up to date, against
                `python -c pass` + `git status` in the built tree

Each side runs once untimed first; the runs alternate which side goes first. A finished
tree is moved into the run folder's trash, not deleted (see `set_aside`). The notes give
every run and the best of each side: on a disk shared with other jobs, checkout times vary
several-fold from run to run, so compare ratios, and look at the spread.

It prints a table and exits 0 whatever the figures are; it exits 1 only when a flagtasks
command fails (its output is printed; the floor rows are still measured and shown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
NAME = "FlagScale"
SUB = "third_party/Megatron-LM"
DEVICE = "A_X100"
BASE_TAG = "v1.0"
VENDOR_BRANCH = "vendor"
EPOCH = 1_700_000_000  # fixed dates (.gitmodules holds the run folder: ids vary by run)
AUTHOR = "Ada Lovelace <ada@example.com>"
FILE_ALLOW = ("-c", "protocol.file.allow=always")  # submodules from local paths
VENDOR_FILES = 20  # upstream files the vendor commit changes (2 of them new)
SUB_COMMITS = 3  # vendor commits inside the submodule ...
SUB_FILES_PER_COMMIT = 10  # ... each changing this many files (1 of them new)
UPSTREAM_DIRS = ("flagscale/runner", "flagscale/train", "flagscale/inference", "tests", "tools")
SUB_DIRS = ("megatron/core", "megatron/training", "megatron/legacy", "tests/unit_tests", "tools")
EXCLUDES = ("/hardware/", "/build/", "/.doit*", "/.flagtasks*")
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Chip Vendor",
    "GIT_AUTHOR_EMAIL": "vendor@example.com",
    "GIT_COMMITTER_NAME": "Chip Vendor",
    "GIT_COMMITTER_EMAIL": "vendor@example.com",
    "GIT_AUTHOR_DATE": f"{EPOCH + 100_000} +0000",
    "GIT_COMMITTER_DATE": f"{EPOCH + 100_000} +0000",
}
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""flagtasks runs as installed: with its bytecode cached (PYTHONPYCACHEPREFIX, set in `run`),
and with FLAGTASKS_SYNC_DELETE=1 so a replaced tree is deleted before it exits."""
RUN_ENV["FLAGTASKS_SYNC_DELETE"] = "1"


class FlagtasksFailed(Exception):
    """A flagtasks command exited non-zero; the benchmark ends with exit code 1."""


@dataclass
class Row:
    """One line of the report: every sample is kept, the table shows the medians."""

    name: str
    ours_runs: list[float] = field(default_factory=list)
    floor_runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ours(self) -> float | None:
        return statistics.median(self.ours_runs) if self.ours_runs else None

    @property
    def floor(self) -> float | None:
        return statistics.median(self.floor_runs) if self.floor_runs else None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.floor:
            return None
        return self.ours / self.floor


@dataclass
class Project:
    """The generated repositories and what the measurements check against."""

    root: Path
    src: Path  # the original Megatron-LM (bare): the submodule's url
    upstream: Path
    vendor: Path
    user: Path
    base_sha: str = ""
    sub_base: str = ""
    sub_current: str = ""
    sub_tree: str = ""  # the vendor submodule's tree
    files: list[str] = field(default_factory=list)  # vendor's `ls-tree -r`, no gitlinks

    @property
    def base8(self) -> str:
        return self.base_sha[:8]

    @property
    def tree(self) -> Path:
        return self.user / "build" / DEVICE / NAME


# --------------------------------------------------------------------------- helpers


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run git with a fixed identity, return stdout; raise with git's stderr on failure."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env or ENV, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr}")
    return proc.stdout


def settle() -> None:
    """Flush dirty pages first, so earlier writes are not billed to the next measurement."""
    if hasattr(os, "sync"):
        os.sync()


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    settle()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    n: int, ours: Callable[[], float], floor: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """n runs of each, alternating which goes first, so drift in the machine's disk speed
    hits both sides alike."""
    a: list[float] = []
    b: list[float] = []
    for i in range(max(1, n)):
        if i % 2:
            b.append(floor())
            a.append(ours())
        else:
            a.append(ours())
            b.append(floor())
    return a, b


def flagtasks(cwd: Path, *args: str) -> tuple[float, str]:
    """Run `flagtasks ARGS` in cwd; return (seconds, stdout). Failure -> FlagtasksFailed."""
    cmd = [str(BIN / "flagtasks"), *args]
    settle()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=RUN_ENV, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise FlagtasksFailed(
            f"`flagtasks {' '.join(args)}` exited {proc.returncode} in {cwd}\n"
            f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
        )
    return seconds, proc.stdout + proc.stderr


def executed(stdout: str, prefix: str) -> list[str]:
    """Task names doit reported as run ('.  name'), not up to date ('-- name')."""
    names = re.findall(r"^\.\s+(\S+)", stdout, flags=re.M)
    return [n for n in names if n.startswith(prefix)]


# --------------------------------------------------------------------------- generation


def new_file(rng: random.Random, path: str) -> bytes:
    """Deterministic Python-looking text of 20-60 lines."""
    stem = Path(path).stem
    lines = [f'"""{path}"""', "", f"def {stem}_main(config):"]
    for j in range(rng.randint(17, 57)):
        lines.append(f"    {stem}_{j} = config.get({j}, {rng.randrange(10**6)})")
    return ("\n".join(lines) + "\n").encode()


def edit_file(rng: random.Random, data: bytes, tag: str) -> bytes:
    """Replace one line and sometimes insert another: a small, realistic hunk."""
    lines = data.decode().split("\n")[:-1]
    i = rng.randrange(2, len(lines))
    lines[i] = f"    value = {tag!r}  # changed"
    if rng.random() < 0.3:
        lines.insert(rng.randrange(len(lines) + 1), f"    # note: {tag}")
    return ("\n".join(lines) + "\n").encode()


def initial_tree(rng: random.Random, files: int, dirs: Sequence[str]) -> dict[str, bytes]:
    state: dict[str, bytes] = {}
    for n in range(files):
        folder = f"{rng.choice(dirs)}/mod{rng.randrange(8):02d}/part{rng.randrange(4)}"
        path = f"{folder}/file_{n:05d}.py"
        state[path] = new_file(rng, path)
    return state


def fast_import(repo: Path, rng: random.Random, files: int, dirs: Sequence[str]) -> dict:
    """main: an initial import of `files` files, then 2 commits of 3-5 edits each, with
    fixed dates; return the tree at main's tip."""
    state = initial_tree(rng, files, dirs)
    chunks: list[bytes] = []

    def data(payload: bytes) -> None:
        chunks.extend((b"data %d\n" % len(payload), payload, b"\n"))

    changes = dict(state)
    for n in range(3):
        when = EPOCH + 600 * n
        chunks.append(
            f"commit refs/heads/main\nmark :{n + 1}\nauthor {AUTHOR} {when} +0000\n"
            f"committer {AUTHOR} {when} +0000\n".encode()
        )
        data(b"Initial import\n" if n == 0 else f"Upstream change {n}\n".encode())
        if n:
            chunks.append(f"from :{n}\n".encode())
        for path, payload in changes.items():
            chunks.append(f"M 100644 inline {path}\n".encode())
            data(payload)
        chunks.append(b"\n")
        changes = {}
        for path in rng.sample(sorted(state), rng.randint(3, 5)):
            state[path] = changes[path] = edit_file(rng, state[path], f"upstream-{n}")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(chunks), check=True)
    return state


def clone_with_submodule(upstream: Path, dest: Path) -> None:
    """What a user does: a plain clone, then `git submodule update --init` (the submodule
    comes from the url in .gitmodules: the original repository)."""
    git("clone", "-q", str(upstream), str(dest))
    git(*FILE_ALLOW, "submodule", "update", "--init", "-q", cwd=dest)
    exclude = dest / ".git" / "info" / "exclude"
    exclude.write_text(exclude.read_text() + "\n".join(EXCLUDES) + "\n")


def commit_all(repo: Path, message: str, when: int) -> None:
    env = {**ENV, "GIT_AUTHOR_DATE": f"{when} +0000", "GIT_COMMITTER_DATE": f"{when} +0000"}
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-q", "-m", message, cwd=repo, env=env)


def vendor_changes(
    rng: random.Random, repo: Path, state: dict[str, bytes], count: int, tag: str
) -> None:
    """Edit count-1 files of `state` in the work tree and add one new file."""
    for path in rng.sample(sorted(state), count - 1):
        (repo / path).write_bytes(edit_file(rng, state[path], tag))
    path = f"{Path(sorted(state)[0]).parent}/{tag.replace('-', '_')}_new.py"
    (repo / path).write_bytes(new_file(rng, path))


def generate(root: Path, files: int, sub_files: int) -> Project:
    """The original submodule, the upstream (submodule added, v1.0), the vendor checkout
    with its adaptation (in the upstream and in the submodule) and the user checkout."""
    p = Project(
        root,
        root / "src" / "Megatron-LM.git",
        root / "upstream" / NAME,
        root / "vendor" / NAME,
        root / "user" / NAME,
    )
    rng = random.Random(20_240_601)
    p.src.mkdir(parents=True)
    git("init", "-q", "--bare", "-b", "main", cwd=p.src)
    sub_state = fast_import(p.src, rng, sub_files, SUB_DIRS)

    p.upstream.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=p.upstream)
    state = fast_import(p.upstream, rng, files, UPSTREAM_DIRS)
    git("reset", "-q", "--hard", "main", cwd=p.upstream)
    git(*FILE_ALLOW, "submodule", "add", "-q", str(p.src), SUB, cwd=p.upstream)
    commit_all(p.upstream, "Add Megatron-LM as a submodule\n", EPOCH + 3000)
    git("tag", "-a", BASE_TAG, "-m", "Release 1.0", cwd=p.upstream)
    p.base_sha = git("rev-parse", f"{BASE_TAG}^{{commit}}", cwd=p.upstream).strip()

    clone_with_submodule(p.upstream, p.vendor)
    sub = p.vendor / SUB
    p.sub_base = git("rev-parse", "HEAD", cwd=sub).strip()
    git("checkout", "-q", "-b", VENDOR_BRANCH, cwd=sub)
    for k in range(SUB_COMMITS):
        vendor_changes(rng, sub, sub_state, SUB_FILES_PER_COMMIT, f"a-x100-sub-{k}")
        commit_all(sub, f"[A_X100] Megatron kernels, step {k}\n", EPOCH + 4000 + 600 * k)
    p.sub_current = git("rev-parse", "HEAD", cwd=sub).strip()
    p.sub_tree = git("rev-parse", "HEAD^{tree}", cwd=sub).strip()
    git("checkout", "-q", "-b", VENDOR_BRANCH, cwd=p.vendor)
    vendor_changes(rng, p.vendor, state, VENDOR_FILES - 1, "a-x100-0")
    path = "flagscale/backends/a_x100/__init__.py"
    (p.vendor / path).parent.mkdir(parents=True)
    (p.vendor / path).write_bytes(new_file(rng, path))
    commit_all(p.vendor, "[A_X100] Adapt FlagScale and Megatron-LM\n", EPOCH + 9000)
    p.files = listing(p.vendor, VENDOR_BRANCH)

    clone_with_submodule(p.upstream, p.user)
    return p


def make_store(p: Project) -> tuple[float, str]:
    """`flagtasks patch` in the vendor checkout, then the store copied to the user's."""
    seconds, out = flagtasks(
        p.vendor,
        "patch",
        "--device-type",
        DEVICE,
        "--base-commit-id",
        BASE_TAG,
        "--current-commit-id",
        VENDOR_BRANCH,
    )
    shutil.copytree(p.vendor / "hardware", p.user / "hardware")
    return seconds, out


def floor_patches(p: Project, out: Path) -> tuple[Path, Path]:
    """`git format-patch` of the upstream's and of the submodule's vendor commits."""
    out.mkdir(parents=True, exist_ok=True)
    upstream, sub = out / "upstream.patch", out / "submodule.patch"
    upstream.write_text(
        git("format-patch", "--stdout", f"{BASE_TAG}..{VENDOR_BRANCH}", cwd=p.vendor)
    )
    sub.write_text(
        git("format-patch", "--stdout", f"{p.sub_base}..{VENDOR_BRANCH}", cwd=p.vendor / SUB)
    )
    return upstream, sub


# --------------------------------------------------------------------------- checks


def listing(repo: Path, rev: str) -> list[str]:
    """`git ls-tree -r` of rev without gitlinks (a build may record its own commit)."""
    out = git("ls-tree", "-r", rev, cwd=repo)
    return [line for line in out.splitlines() if line.split(None, 2)[1] != "commit"]


def check_tree(p: Project, tree: Path) -> tuple[list[str], str]:
    """(problems, what the superproject records): the upstream files, the submodule's own
    checkout and its tree must be the vendor's."""
    if not (tree / ".git").exists():
        return ["no tree"], ""
    problems = []
    if listing(tree, "HEAD") != p.files:
        problems.append("upstream files differ from the vendor's")
    sub = tree / SUB
    head = ""
    try:
        top = git("rev-parse", "--show-toplevel", cwd=sub).strip() if sub.is_dir() else ""
        if not top or Path(top).resolve() != sub.resolve():
            problems.append(f"{SUB} is not a checkout of its own")
        else:
            head = git("rev-parse", "HEAD", cwd=sub).strip()
            if git("rev-parse", "HEAD^{tree}", cwd=sub).strip() != p.sub_tree:
                problems.append("submodule tree differs from the vendor's")
            if git("status", "--porcelain", cwd=sub).strip():
                problems.append("submodule work tree not clean")
        gitlink = git("rev-parse", f"HEAD:{SUB}", cwd=tree).strip()
    except RuntimeError as err:
        problems.append(str(err).splitlines()[0])
        return problems, ""
    if gitlink == p.sub_current:
        recorded = "gitlink = vendor's commit"
    elif gitlink == head:
        recorded = "gitlink = built submodule HEAD"
    else:
        recorded = f"gitlink {gitlink[:8]} (neither vendor's nor HEAD)"
    if head == p.sub_current:
        recorded += ", submodule HEAD = vendor's commit"
    status = git("status", "--porcelain", cwd=tree).splitlines()
    recorded += f", superproject status: {'; '.join(status) if status else 'clean'}"
    return problems, recorded


def tree_signature(tree: Path) -> tuple:
    """What a rebuild would change: inode/mtime of the trees, their .git and index, HEADs."""
    parts: list[object] = []
    for top in (tree, tree / SUB):
        if not top.exists():
            parts.append("missing")
            continue
        index = Path(git("rev-parse", "--git-path", "index", cwd=top).strip())
        index = index if index.is_absolute() else top / index
        for path in (top, top / ".git", index):
            parts.append((path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None)
        parts.append(git("rev-parse", "HEAD", cwd=top).strip())
    return tuple(parts)


# --------------------------------------------------------------------------- measurements


def set_aside(p: Project, tree: Path) -> None:
    """Move a finished tree into the run folder's trash instead of deleting it: ext4 does
    not reuse just-freed inodes for minutes and searches past them, so deleting 8,500 files
    per run makes every later checkout slower (up to 10x here), on both sides."""
    if tree.exists():
        trash = p.root / "trash"
        trash.mkdir(exist_ok=True)
        tree.rename(trash / f"{len(os.listdir(trash))}")


def unpatch(p: Project) -> tuple[float, str]:
    return flagtasks(
        p.user, "unpatch", "--device-type", DEVICE, "--commit-id", p.base8, "--dir", "build"
    )


def clone_recursive(p: Project, dest: Path) -> None:
    """A plain local clone (hardlinked objects) of the upstream at v1.0 with its submodule."""
    git(
        *FILE_ALLOW,
        "clone",
        "-q",
        "--recurse-submodules",
        "-b",
        BASE_TAG,
        str(p.upstream),
        str(dest),
    )


def floor_build(p: Project, patches: tuple[Path, Path], dest: Path, problems: list[str]) -> float:
    """clone --recurse-submodules + git am in the upstream + git am in the submodule."""
    set_aside(p, dest)

    def work() -> None:
        clone_recursive(p, dest)
        git("am", "-q", "--keep-cr", str(patches[0]), cwd=dest)
        git("am", "-q", "--keep-cr", str(patches[1]), cwd=dest / SUB)

    seconds = timed(work)
    bad, _ = check_tree(p, dest)
    problems.extend(f"floor: {b}" for b in bad if f"floor: {b}" not in problems)
    set_aside(p, dest)
    return seconds


def floor_noop(p: Project, tree: Path, parts: dict[str, list[float]]) -> float:
    """`python -c pass` (an interpreter's start-up) + `git status` in the built tree (it
    looks into the submodule too; without optional locks, so that it never rewrites the
    index and the no-op check sees only what flagtasks changed)."""
    py = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], env=RUN_ENV, check=True))
    st = timed(lambda: git("--no-optional-locks", "status", "--porcelain", cwd=tree))
    parts["python"].append(py)
    parts["status"].append(st)
    return py + st


def measure_build(p: Project, patches: tuple[Path, Path], work: Path, runs: int) -> Row:
    problems: list[str] = []
    said: list[str] = []

    def ours() -> float:
        set_aside(p, p.user / "build")
        seconds, out = unpatch(p)
        said.append(out.strip().splitlines()[-1] if out.strip() else "")
        bad, recorded = check_tree(p, p.tree)
        problems.extend(f"flagtasks: {b}" for b in bad if f"flagtasks: {b}" not in problems)
        if recorded and recorded not in said:
            said.append(recorded)
        return seconds

    # warm-ups: caches, and the inodes a previous run freed (see set_aside)
    warm = (ours(), floor_build(p, patches, work / "floor-build", problems))
    row = Row("fresh build (build/ removed)")
    row.ours_runs, row.floor_runs = interleaved(
        runs, ours, lambda: floor_build(p, patches, work / "floor-build", problems)
    )
    trees = "; ".join(problems) or "both trees = vendor's files and submodule tree"
    row.note = f"{trees}; flagtasks: {' | '.join(dict.fromkeys(said))}"
    row.note += f"; untimed warm-up: flagtasks {warm[0]:.2f} s, floor {warm[1]:.2f} s"
    return row


def measure_noop(p: Project, runs: int) -> Row:
    if not (p.tree / ".git").exists():
        unpatch(p)
    git("status", "--porcelain", cwd=p.tree)  # refreshes the new index, as a user's would
    before = tree_signature(p.tree)
    ran: list[str] = []
    parts: dict[str, list[float]] = {"python": [], "status": []}

    def ours() -> float:
        seconds, out = unpatch(p)
        ran.extend(executed(out, "unpatch"))
        return seconds

    ours()  # warm-ups
    floor_noop(p, p.tree, {"python": [], "status": []})
    row = Row("no-op unpatch (up to date)")
    row.ours_runs, row.floor_runs = interleaved(runs, ours, lambda: floor_noop(p, p.tree, parts))
    touched = tree_signature(p.tree) != before
    row.note = (
        "nothing rebuilt" if not (ran or touched) else f"REBUILT: ran {ran}, touched {touched}"
    )
    row.note += (
        f"; floor = python -c pass {statistics.median(parts['python']):.3f} s"
        f" + git status {statistics.median(parts['status']):.3f} s"
    )
    return row


def floor_only_rows(p: Project, patches: tuple[Path, Path], work: Path, runs: int) -> list[Row]:
    """The git side of both rows, without flagtasks (its store may be missing)."""
    problems: list[str] = []
    floor_build(p, patches, work / "floor-build", problems)  # warm-up
    build = Row("fresh build (floor only)")
    build.floor_runs = [
        floor_build(p, patches, work / "floor-build", problems) for _ in range(runs)
    ]
    build.note = "; ".join(problems) or "floor tree = vendor's files and submodule tree"
    dest = work / "floor-noop"
    clone_recursive(p, dest)
    git("status", "--porcelain", cwd=dest)  # refreshes the new index, as a user's would
    parts: dict[str, list[float]] = {"python": [], "status": []}
    floor_noop(p, dest, {"python": [], "status": []})  # warm-up
    noop = Row("no-op (floor only)")
    noop.floor_runs = [floor_noop(p, dest, parts) for _ in range(runs)]
    noop.note = (
        f"python -c pass {statistics.median(parts['python']):.3f} s"
        f" + git status {statistics.median(parts['status']):.3f} s (in a plain clone)"
    )
    return [build, noop]


# --------------------------------------------------------------------------- report


def machine_info() -> dict[str, str]:
    info = {
        "nproc": str(os.cpu_count()),
        "git": git("--version").strip(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        info["flagtasks"] = getattr(__import__("flagtasks"), "__version__", "?")
    except ImportError:
        info["flagtasks"] = "not installed"
    return info


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.3f}{unit}"


def print_table(rows: list[Row]) -> None:
    head = ("measurement", "flagtasks s", "floor s", "ratio")
    table = [head] + [(r.name, fmt(r.ours), fmt(r.floor), fmt(r.ratio, "x")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("(medians)")
    for r in rows:
        print(f"  * {r.name}: {r.note}" if r.note else f"  * {r.name}")
        runs = " ".join(f"{x:.2f}" for x in r.ours_runs) or "-"
        floors = " ".join(f"{x:.2f}" for x in r.floor_runs) or "-"
        best = ""
        if r.ours_runs and r.floor_runs:
            low, floor = min(r.ours_runs), min(r.floor_runs)
            best = f"; best: {low:.3f} s / {floor:.3f} s = {low / floor:.3f}x"
        print(f"    all runs: flagtasks [{runs}]  floor [{floors}]{best}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, help="files in the upstream (default 3500)")
    p.add_argument("--sub-files", type=int, help="files in the submodule (default 5000)")
    p.add_argument("--runs", type=int, help="runs of each measurement (default 5)")
    p.add_argument("--quick", action="store_true", help="350 + 500 files, 3 runs")
    p.add_argument("--workdir", type=Path, help="parent folder for the run (kept)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--floor-only", action="store_true", help="generate and time git only")
    args = p.parse_args(argv)
    defaults = (350, 500, 3) if args.quick else (3500, 5000, 5)
    for name, value in zip(("files", "sub_files", "runs"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.files < 50 or args.sub_files < 50 or args.runs < 1:
        p.error("need --files >= 50, --sub-files >= 50, --runs >= 1")
    return args


def run(args: argparse.Namespace, root: Path, rows: list[Row]) -> None:
    """Generate the project and append each measurement to `rows` as it completes."""
    start = time.perf_counter()
    p = generate(root, args.files, args.sub_files)
    print(
        f"upstream: {p.upstream} ({args.files} files, base {BASE_TAG} = {p.base8}), "
        f"{SUB} ({args.sub_files} files); vendor: {VENDOR_FILES} upstream files, "
        f"{SUB_COMMITS} submodule commits ({SUB_COMMITS * SUB_FILES_PER_COMMIT} files); "
        f"generated in {time.perf_counter() - start:.1f} s"
    )
    work = root / "work"
    work.mkdir()
    RUN_ENV["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    patches = floor_patches(p, work / "patches")
    failed: FlagtasksFailed | None = None
    if not args.floor_only:
        try:
            seconds, out = make_store(p)
            stored = sorted(
                str(f.relative_to(p.user / "hardware"))
                for f in (p.user / "hardware").rglob("*")
                if f.is_file()
            )
            print(f"flagtasks patch: {seconds:.2f} s; store: {', '.join(stored)}")
        except FlagtasksFailed as err:
            failed = err
    if failed or args.floor_only:
        rows += floor_only_rows(p, patches, work, args.runs)
        if failed:
            raise failed
        return
    try:
        rows.append(measure_build(p, patches, work, args.runs))
        rows.append(measure_noop(p, args.runs * 2))
    except FlagtasksFailed:
        if not rows:  # the build failed: show what git alone takes
            rows += floor_only_rows(p, patches, work, args.runs)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="flagtasks-submodules-", dir=args.workdir))
    started = time.perf_counter()
    code = 0
    rows: list[Row] = []
    try:
        run(args, root, rows)
    except FlagtasksFailed as err:
        print(f"\nFLAGTASKS FAILED: {err}", file=sys.stderr)
        code = 1
    finally:
        if rows:
            print()
            print_table(rows)
        keep = args.keep or args.workdir or code
        print(
            f"\ntotal {time.perf_counter() - started:.1f} s; load average now "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; run folder {root}"
            + ("" if keep else " (removed)")
        )
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        data = {
            "machine": info,
            "params": {k: str(v) for k, v in vars(args).items()},
            "exit_code": code,
            "rows": [
                {**asdict(r), "ours": r.ours, "floor": r.floor, "ratio": r.ratio} for r in rows
            ],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
