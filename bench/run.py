#!/usr/bin/env python3
"""flagtasks benchmark: doit tasks against plain git on a large synthetic upstream.

Run from anywhere with the Python that has flagtasks installed:

    python bench/run.py [--files 3000] [--commits 150] [--devices 10] [--long-series 120]
                        [--repeat 3] [--workdir DIR] [--keep] [--json out.json] [--floor-only]

It builds a synthetic upstream with `git fast-import` (nested folders, merge commits, an
annotated tag `v1.0`, one vendor branch per device on top of it), writes a config.toml and
a dodo.py there (kept out of git with .git/info/exclude), then times `doit` against the
fastest plain-git way to do the same work (the "floor"). It prints a table and exits 0
whatever the ratios are; it exits 1 only when a flagtasks command fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import asdict, dataclass, field
from pathlib import Path

DOIT = Path(sys.executable).parent / "doit"
NAME = "FlagScale"
BASE_TAG = "v1.0"
EPOCH = 1_700_000_000  # fixed dates: the same options give the same commit ids
AUTHORS = ("Ada Lovelace <ada@example.com>", "Alan Turing <alan@example.com>")
VENDOR = "Chip Vendor <vendor@example.com>"
GIT_ID = ("-c", "user.name=bench", "-c", "user.email=bench@example.com")
TOP_DIRS = (
    "flagscale/runner",
    "flagscale/train",
    "megatron/core",
    "megatron/training",
    "tests/unit_tests",
    "tools/checkpoint",
    "examples",
    "docs/source",
)
EXCLUDES = ("/config.toml", "/dodo.py", "/hardware/", "/build/", "/.doit*", "/.flagtasks*")

Change = tuple  # ("M", path, data) | ("D", path) | ("R", src, dst)


class FlagtasksFailed(Exception):
    """A doit/flagtasks command exited non-zero; the benchmark stops with exit code 1."""


@dataclass
class Row:
    """One line of the report: every sample is kept, the table shows the best."""

    name: str
    ours_runs: list[float] = field(default_factory=list)
    floor_runs: list[float] = field(default_factory=list)
    target: str = "-"
    passed: bool | None = None
    note: str = ""

    @property
    def ours(self) -> float | None:
        return min(self.ours_runs) if self.ours_runs else None

    @property
    def floor(self) -> float | None:
        return min(self.floor_runs) if self.floor_runs else None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.floor:
            return None
        return self.ours / self.floor

    def judge(self, limit: float, ok: bool = True) -> None:
        """PASS when the ratio is at most `limit` and the extra check `ok` holds."""
        self.passed = ok and self.ratio is not None and self.ratio <= limit


@dataclass
class Upstream:
    """The generated repository and what the measurements need to know about it."""

    path: Path
    devices: list[str]
    base_sha: str
    long_device: str
    stale_device: str
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def base8(self) -> str:
        return self.base_sha[:8]

    def branch(self, dev: str) -> str:
        return f"vendor/{dev}"

    def stored_patch(self, dev: str) -> Path:
        return self.path / "hardware" / dev / self.base8 / f"{self.base8}.patch"

    def tree(self, dev: str) -> Path:
        return self.path / "build" / dev / NAME


# --------------------------------------------------------------------------- helpers


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run git, return stdout; raise with git's stderr on failure (a benchmark bug)."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed:\n{proc.stderr}")
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


def samples(n: int, fn: Callable[[], float]) -> list[float]:
    """n measurements; fn returns the seconds of its timed part."""
    return [fn() for _ in range(max(1, n))]


def interleaved(
    n: int, ours: Callable[[int], float], floor: Callable[[int], float]
) -> tuple[list[float], list[float]]:
    """n runs of each, alternating which goes first, so drift in the machine's disk speed
    (writeback, discards of deleted trees) hits both sides alike."""
    a: list[float] = []
    b: list[float] = []
    for i in range(max(1, n)):
        if i % 2:
            b.append(floor(i))
            a.append(ours(i))
        else:
            a.append(ours(i))
            b.append(floor(i))
    return a, b


RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""doit runs as installed: with its bytecode cached (PYTHONPYCACHEPREFIX, set in `run`)."""


def doit(up: Path, *args: str) -> tuple[float, str]:
    """Run `doit ARGS` in the upstream; return (seconds, stdout). Failure -> FlagtasksFailed."""
    cmd = [str(DOIT), *args]
    settle()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=up, env=RUN_ENV, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise FlagtasksFailed(
            f"`doit {' '.join(args)}` exited {proc.returncode} in {up}\n"
            f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
        )
    return seconds, proc.stdout


def executed(doit_stdout: str, prefix: str) -> list[str]:
    """Task names doit reported as run ('.  name'), not up to date ('-- name')."""
    names = re.findall(r"^\.\s+(\S+)", doit_stdout, flags=re.M)
    return [n for n in names if n.startswith(prefix)]


# --------------------------------------------------------------------------- generation


class FastImport:
    """Accumulates a `git fast-import` stream with inline blobs and fixed dates."""

    def __init__(self, first_mark: int = 1, clock: int = EPOCH) -> None:
        self.chunks: list[bytes] = []
        self.mark = first_mark - 1
        self.clock = clock

    def _data(self, payload: bytes) -> None:
        self.chunks += [b"data %d\n" % len(payload), payload, b"\n"]

    def _tick(self) -> int:
        self.clock += 600
        return self.clock

    def commit(
        self,
        ref: str,
        message: str,
        parents: Sequence[str],
        changes: Sequence[Change],
        author: str = AUTHORS[0],
    ) -> str:
        """Append one commit; parents are ':mark' or rev strings; return its ':mark'."""
        self.mark += 1
        when = self._tick()
        head = f"commit {ref}\nmark :{self.mark}\n"
        head += f"author {author} {when} +0000\ncommitter {author} {when} +0000\n"
        self.chunks.append(head.encode())
        self._data(message.encode())
        for i, parent in enumerate(parents):
            self.chunks.append(f"{'from' if i == 0 else 'merge'} {parent}\n".encode())
        for change in changes:
            if change[0] == "M":
                self.chunks.append(f"M 100644 inline {change[1]}\n".encode())
                self._data(change[2])
            elif change[0] == "D":
                self.chunks.append(f"D {change[1]}\n".encode())
            else:
                self.chunks.append(f"R {change[1]} {change[2]}\n".encode())
        self.chunks.append(b"\n")
        return f":{self.mark}"

    def tag(self, name: str, target: str, message: str) -> None:
        when = self._tick()
        self.chunks.append(
            f"tag {name}\nfrom {target}\ntagger {AUTHORS[1]} {when} +0000\n".encode()
        )
        self._data(message.encode())

    def run(self, repo: Path) -> None:
        subprocess.run(
            ["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(self.chunks), check=True
        )


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
    i = rng.randrange(2, len(lines)) if len(lines) > 2 else 0
    lines[i] = f"    value = {tag!r}  # changed"
    if rng.random() < 0.3:
        lines.insert(rng.randrange(len(lines) + 1), f"    # note: {tag}")
    return ("\n".join(lines) + "\n").encode()


def pick(rng: random.Random, state: dict[str, bytes], avoid: Set[str] = frozenset()) -> str:
    paths = list(state)
    while True:
        path = rng.choice(paths)
        if path not in avoid:
            return path


def initial_tree(rng: random.Random, files: int) -> dict[str, bytes]:
    state: dict[str, bytes] = {}
    for n in range(files):
        folder = f"{rng.choice(TOP_DIRS)}/mod{rng.randrange(8):02d}/part{rng.randrange(4)}"
        path = f"{folder}/file_{n:05d}.py"
        state[path] = new_file(rng, path)
    return state


def main_history(
    fi: FastImport, rng: random.Random, files: int, commits: int
) -> tuple[str, dict[str, bytes], int]:
    """Main line of `commits` commits with side branches merged in; returns the v1.0
    mark, the tree at v1.0 and the total number of commits written."""
    state = initial_tree(rng, files)
    tip = fi.commit(
        "refs/heads/main", "Initial import\n", [], [("M", p, d) for p, d in state.items()]
    )
    base_at = commits - 1 - max(3, commits // 15)
    base_mark, base_state, written = tip, dict(state), 1
    side: dict | None = None
    for i in range(1, commits):
        if side is None and i % 15 == 5 and i + 9 < commits:
            side = start_side(fi, rng, state, tip, i)
            written += side["commits"]
        if side is not None and i == side["merge_at"]:
            changes = [("M", p, side["state"][p]) for p in side["touched"] if p in side["state"]]
            changes += [("D", p) for p in side["touched"] if p not in side["state"]]
            for change in changes:
                if change[0] == "M":
                    state[change[1]] = change[2]
                else:
                    state.pop(change[1], None)
            msg = f"Merge branch '{side['ref']}' into main\n"
            tip = fi.commit("refs/heads/main", msg, [tip, side["tip"]], changes, AUTHORS[1])
            side = None
        else:
            avoid = side["touched"] if side else set()
            changes = upstream_changes(rng, state, avoid, i)
            tip = fi.commit("refs/heads/main", f"Upstream change {i}\n", [tip], changes)
        written += 1
        if i == base_at:
            base_mark, base_state = tip, dict(state)
    fi.tag(BASE_TAG, base_mark, f"FlagScale {BASE_TAG}\n")
    return base_mark, base_state, written


def upstream_changes(
    rng: random.Random, state: dict[str, bytes], avoid: set[str], i: int
) -> list[Change]:
    changes: list[Change] = []
    for _ in range(rng.randint(2, 8)):
        path = pick(rng, state, avoid)
        state[path] = edit_file(rng, state[path], f"main-{i}")
        changes.append(("M", path, state[path]))
    if i % 7 == 0:
        path = f"{rng.choice(TOP_DIRS)}/added/new_{i:04d}.py"
        state[path] = new_file(rng, path)
        changes.append(("M", path, state[path]))
    return changes


def start_side(
    fi: FastImport, rng: random.Random, state: dict[str, bytes], fork: str, i: int
) -> dict:
    """Write a 3-commit side branch forked at `fork`; main merges it 9 commits later."""
    ref = f"side/topic-{i:03d}"
    sstate = dict(state)
    touched = {pick(rng, state) for _ in range(6)}
    tip = fork
    for k in range(3):
        changes: list[Change] = []
        for path in sorted(touched)[k * 2 : k * 2 + 2]:
            sstate[path] = edit_file(rng, sstate[path], f"{ref}-{k}")
            changes.append(("M", path, sstate[path]))
        tip = fi.commit(f"refs/heads/{ref}", f"Topic {i} part {k}\n", [tip], changes, AUTHORS[1])
    new = f"flagscale/topics/topic_{i:03d}.py"
    sstate[new] = new_file(rng, new)
    touched.add(new)
    tip = fi.commit(
        f"refs/heads/{ref}", f"Topic {i} adds a module\n", [tip], [("M", new, sstate[new])]
    )
    return {
        "ref": ref,
        "state": sstate,
        "touched": touched,
        "tip": tip,
        "merge_at": i + 9,
        "commits": 4,
    }


def vendor_series(
    fi: FastImport, rng: random.Random, dev: str, base: str, state: dict[str, bytes], n: int
) -> None:
    """A linear series of n commits adding, changing, deleting and renaming files."""
    state = dict(state)
    tip = base
    ref = f"refs/heads/vendor/{dev}"
    for k in range(n):
        changes: list[Change] = []
        if k == 0:
            path = f"flagscale/backends/{dev.lower()}/__init__.py"
            state[path] = new_file(rng, path)
            changes.append(("M", path, state[path]))
        for _ in range(rng.randint(1, 3)):
            changes += vendor_op(rng, dev, state, k)
        fi.commit(
            ref, f"[{dev}] adaptation step {k}\n\nPort kernels for {dev}.\n", [tip], changes, VENDOR
        )
        tip = f":{fi.mark}"


def vendor_op(rng: random.Random, dev: str, state: dict[str, bytes], k: int) -> list[Change]:
    roll = rng.random()
    tag = f"{dev}-{k}"
    if roll < 0.6:
        path = pick(rng, state)
        state[path] = edit_file(rng, state[path], tag)
        return [("M", path, state[path])]
    if roll < 0.75:
        path = f"flagscale/backends/{dev.lower()}/op_{k:03d}_{rng.randrange(1000):03d}.py"
        state[path] = new_file(rng, path)
        return [("M", path, state[path])]
    if roll < 0.85:
        path = pick(rng, state)
        del state[path]
        return [("D", path)]
    src = pick(rng, state)
    dst = f"{Path(src).parent}/{dev.lower()}_{k:03d}_{Path(src).name}"
    state[dst] = state.pop(src)
    if roll < 0.95:
        return [("R", src, dst)]
    state[dst] = edit_file(rng, state[dst], tag)  # renamed then modified
    return [("R", src, dst), ("M", dst, state[dst])]


def series_length(i: int, long_series: int) -> int:
    return long_series if i == 0 else 10 + (i * 3) % 11


def build_upstream(root: Path, args: argparse.Namespace) -> Upstream:
    up = root / "upstream"
    up.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=up)
    rng = random.Random(20_240_601)
    fi = FastImport()
    base_mark, base_state, written = main_history(fi, rng, args.files, args.commits)
    devices = [f"V{i}_X100" for i in range(args.devices)]
    for i, dev in enumerate(devices):
        vendor_series(fi, rng, dev, base_mark, base_state, series_length(i, args.long_series))
    fi.run(up)
    git("reset", "-q", "--hard", "main", cwd=up)
    exclude = up / ".git" / "info" / "exclude"
    exclude.write_text(exclude.read_text() + "\n".join(EXCLUDES) + "\n")
    write_project_files(up, devices)
    base_sha = git("rev-parse", f"{BASE_TAG}^{{commit}}", cwd=up).strip()
    upstream = Upstream(up, devices, base_sha, devices[0], devices[1 % len(devices)])
    upstream.extra = {"main_history_commits": written, "fast_import_commits": fi.mark}
    return upstream


def write_project_files(
    up: Path, devices: list[str], moved: dict[str, tuple[str, str]] | None = None
) -> None:
    """config.toml (one [vendor] per device on v1.0; `moved` gives some another base and
    current) and dodo.py."""
    lines = [
        "[upstream]",
        'repo = "."',
        f'name = "{NAME}"',
        'hardware = "hardware"',
        'build = "build"',
    ]
    for dev in devices:
        base, current = (moved or {}).get(dev, (BASE_TAG, f"vendor/{dev}"))
        lines += ["", f"[vendor.{dev}]", f'base = "{base}"', f'current = "{current}"']
        lines.append('mode = "series"')
    (up / "config.toml").write_text("\n".join(lines) + "\n")
    (up / "dodo.py").write_text("from flagtasks.tasks import *  # noqa: F401,F403\n")


def add_vendor_commit(up: Upstream, dev: str, n: int) -> None:
    """One more commit on the device's vendor branch (a new file): its patch changes."""
    fi = FastImport(clock=EPOCH + 10_000_000 + n * 600)
    path = f"flagscale/backends/{dev.lower()}/late_fix_{n:03d}.py"
    data = new_file(random.Random(n), path)
    fi.commit(
        f"refs/heads/{up.branch(dev)}",
        f"[{dev}] late fix {n}\n",
        [f"refs/heads/{up.branch(dev)}^0"],
        [("M", path, data)],
        VENDOR,
    )
    fi.run(up.path)


# --------------------------------------------------------------------------- floors


def plain_patch(up: Upstream, dev: str, out_dir: Path) -> Path:
    """Use flagtasks' stored patch when there is one, else `git format-patch` (floor-only)."""
    stored = up.stored_patch(dev)
    if stored.is_file():
        return stored
    out_dir.mkdir(parents=True, exist_ok=True)
    patch = out_dir / f"{dev}.patch"
    patch.write_text(
        git("format-patch", "--stdout", f"{up.base_sha}..{up.branch(dev)}", cwd=up.path)
    )
    return patch


def floor_build(up: Upstream, patches: dict[str, Path], dest: Path) -> float:
    """clone --shared --no-checkout + checkout base + git am, per device; seconds."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)

    def work() -> None:
        for dev, patch in patches.items():
            tree = dest / dev / NAME
            git("clone", "-q", "--shared", "--no-checkout", str(up.path), str(tree))
            git("checkout", "-q", up.base_sha, cwd=tree)
            git(*GIT_ID, "am", "-q", "--keep-cr", str(patch), cwd=tree)

    seconds = timed(work)
    for dev in patches:
        want = git("rev-parse", f"{up.branch(dev)}^{{tree}}", cwd=up.path)
        got = git("rev-parse", "HEAD^{tree}", cwd=dest / dev / NAME)
        if want != got:
            raise RuntimeError(f"floor build of {dev} does not reproduce its vendor branch")
    shutil.rmtree(dest, ignore_errors=True)
    return seconds


def floor_format_patch(up: Upstream, dest: Path) -> float:
    """`git format-patch --stdout base..vendor` for every device, written to files."""
    dest.mkdir(parents=True, exist_ok=True)

    def work() -> None:
        for dev in up.devices:
            out = git("format-patch", "--stdout", f"{up.base_sha}..{up.branch(dev)}", cwd=up.path)
            (dest / f"{dev}.patch").write_text(out)

    return timed(work)


def floor_verify(up: Upstream, dev: str, work_dir: Path) -> float:
    """read-tree base + one `git apply --cached` of the per-commit patches + write-tree."""
    split = work_dir / f"split-{dev}"
    shutil.rmtree(split, ignore_errors=True)
    git("format-patch", "-q", "-o", str(split), f"{up.base_sha}..{up.branch(dev)}", cwd=up.path)
    files = sorted(str(p) for p in split.glob("*.patch"))
    index = work_dir / "floor-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    result: list[str] = []

    def work() -> None:
        git("read-tree", up.base_sha, cwd=up.path, env=env)
        git("apply", "--cached", *files, cwd=up.path, env=env)
        result.append(git("write-tree", cwd=up.path, env=env).strip())

    seconds = timed(work)
    index.unlink(missing_ok=True)
    if result[0] != git("rev-parse", f"{up.branch(dev)}^{{tree}}", cwd=up.path).strip():
        raise RuntimeError(f"verify floor for {dev} does not reproduce its vendor tree")
    return seconds


# --------------------------------------------------------------------------- measurements


def tree_signature(tree: Path) -> tuple:
    """What a rebuild would change: inode/mtime of the tree, its .git and index, HEAD."""
    if not tree.exists():
        return ("missing",)
    index = Path(git("rev-parse", "--git-path", "index", cwd=tree).strip())
    index = index if index.is_absolute() else tree / index
    parts = [tree, tree / ".git", index]
    stats = [(p.stat().st_ino, p.stat().st_mtime_ns) if p.exists() else None for p in parts]
    return (*stats, git("rev-parse", "HEAD", cwd=tree).strip())


def check_trees(up: Upstream) -> list[str]:
    """Devices whose build tree is missing or does not hold the vendor branch's tree."""
    bad = []
    for dev in up.devices:
        tree = up.tree(dev)
        want = git("rev-parse", f"{up.branch(dev)}^{{tree}}", cwd=up.path)
        got = git("rev-parse", "HEAD^{tree}", cwd=tree) if (tree / ".git").exists() else ""
        if want != got:
            bad.append(dev)
    return bad


def measure_format_patch(up: Upstream, work: Path, repeat: int) -> Row:
    seconds, out = doit(up.path, "format_patch")
    missing = [d for d in up.devices if not up.stored_patch(d).is_file()]
    row = Row("format_patch, all devices", [seconds])
    row.floor_runs = samples(repeat, lambda: floor_format_patch(up, work / "fp"))
    row.note = f"ran {len(executed(out, 'format_patch'))} format_patch tasks"
    if missing:
        row.note += f"; NO stored plaintext patch for {', '.join(missing)}"
    return row


def measure_full_build(up: Upstream, work: Path, repeat: int) -> Row:
    patches = {dev: plain_patch(up, dev, work / "patches") for dev in up.devices}
    bad: list[str] = []

    def ours(_: int) -> float:
        shutil.rmtree(up.path / "build", ignore_errors=True)
        doit(up.path, "forget", "unpatch")
        seconds = doit(up.path, "unpatch")[0]
        bad.extend(d for d in check_trees(up) if d not in bad)
        return seconds

    row = Row(f"full build, {len(up.devices)} devices", target="<= 1.1x")
    row.ours_runs, row.floor_runs = interleaved(
        repeat, ours, lambda _: floor_build(up, patches, work / "floor-build")
    )
    row.note = f"trees wrong or missing: {', '.join(bad)}" if bad else "all trees = vendor trees"
    row.judge(1.1, not bad)
    return row


def measure_noop(up: Upstream, repeat: int) -> tuple[Row, Row]:
    before = {dev: tree_signature(up.tree(dev)) for dev in up.devices}
    ran: list[str] = []

    def once() -> float:
        seconds, out = doit(up.path, "unpatch")
        ran.extend(executed(out, "unpatch"))
        return seconds

    row = Row("no-op unpatch (floor = doit list)", samples(repeat, once), target="<= 0.50 s")
    listing = samples(repeat, lambda: doit(up.path, "list")[0])
    row.floor_runs = listing
    touched = [d for d in up.devices if tree_signature(up.tree(d)) != before[d]]
    row.note = "nothing rebuilt" if not (ran or touched) else f"ran {ran}; touched {touched}"
    row.passed = (row.ours or 0.0) <= 0.5 and not ran and not touched
    return row, Row("doit list (start-up reference)", listing)


def measure_one_stale(up: Upstream, work: Path, repeat: int) -> Row:
    dev = up.stale_device
    others = [d for d in up.devices if d != dev]
    problems: list[str] = []

    def ours(n: int) -> float:
        before = {d: tree_signature(up.tree(d)) for d in others}
        seconds, out = doit(up.path, "unpatch")
        ran = executed(out, "unpatch")
        if ran != [f"unpatch:{dev}"]:
            problems.append(f"run {n}: executed {ran}")
        touched = [d for d in others if tree_signature(up.tree(d)) != before[d]]
        if touched:
            problems.append(f"run {n}: other trees changed {touched}")
        wrong = check_trees(up)
        if wrong:
            problems.append(f"run {n}: trees wrong {wrong}")
        return seconds

    def floor(_: int) -> float:
        patch = plain_patch(up, dev, work / "patches-stale")
        return floor_build(up, {dev: patch}, work / "floor-one")

    row = Row(f"one device's patch changed ({dev}, in place)", target="<= 0.2x")
    for n in range(max(1, repeat)):
        add_vendor_commit(up, dev, n)
        doit(up.path, f"format_patch:{dev}")
        if n % 2:  # alternate which side goes first, as in `interleaved`
            row.floor_runs.append(floor(n))
            row.ours_runs.append(ours(n))
        else:
            row.ours_runs.append(ours(n))
            row.floor_runs.append(floor(n))
    row.note = "; ".join(problems) or f"only unpatch:{dev} ran, other trees untouched"
    row.judge(0.2, not problems)
    return row


def measure_moved_base(up: Upstream, work: Path, repeat: int, startup: float) -> Row:
    """A device moves from v1.0 to main's tip (10 commits later) with a new patch, and back:
    flagtasks updates the tree in place; the floor is a plain clone doing the same move
    (`git checkout` of the other base, a two-tree switch, + `git am`)."""
    dev = up.devices[min(2, len(up.devices) - 1)]
    moved_branch = f"{up.branch(dev)}-moved"
    fi = FastImport(clock=EPOCH + 20_000_000)
    path = f"flagscale/backends/{dev.lower()}/moved.py"
    fi.commit(
        f"refs/heads/{moved_branch}",
        f"[{dev}] adapt on main\n",
        ["refs/heads/main^0"],
        [("M", path, new_file(random.Random(7), path))],
        VENDOR,
    )
    fi.run(up.path)
    main_sha = git("rev-parse", "main^{commit}", cwd=up.path).strip()
    states = {
        "old": (up.base_sha, up.branch(dev), None),
        "new": (main_sha, moved_branch, {dev: (main_sha, moved_branch)}),
    }
    patches: dict[str, Path] = {}
    for name, (_, _, moved) in states.items():
        write_project_files(up.path, up.devices, moved)
        doit(up.path, f"format_patch:{dev}")
        sha = states[name][0]
        patches[name] = up.path / "hardware" / dev / sha[:8] / f"{sha[:8]}.patch"
    write_project_files(up.path, up.devices)
    doit(up.path, f"unpatch:{dev}")  # the tree holds the old state
    floor_tree = work / "floor-moved" / NAME
    shutil.rmtree(floor_tree.parent, ignore_errors=True)
    git("clone", "-q", "--shared", "--no-checkout", str(up.path), str(floor_tree))
    git("checkout", "-q", "--detach", up.base_sha, cwd=floor_tree)
    git(*GIT_ID, "am", "-q", "--keep-cr", str(patches["old"]), cwd=floor_tree)
    problems: list[str] = []
    differ = len(git("diff", "--name-only", up.base_sha, main_sha, cwd=up.path).split())

    def ours(to: str) -> float:
        write_project_files(up.path, up.devices, states[to][2])
        doit(up.path, f"format_patch:{dev}")
        seconds, out = doit(up.path, f"unpatch:{dev}")
        if "in place" not in out:
            problems.append(f"to {to}: not updated in place: {out.strip()[:200]}")
        want = git("rev-parse", f"{states[to][1]}^{{tree}}", cwd=up.path)
        if git("rev-parse", "HEAD^{tree}", cwd=up.tree(dev)) != want:
            problems.append(f"to {to}: the tree is not {states[to][1]}")
        return seconds

    def floor(to: str) -> float:
        def work() -> None:
            git("checkout", "-q", "--detach", states[to][0], cwd=floor_tree)
            git(*GIT_ID, "am", "-q", "--keep-cr", str(patches[to]), cwd=floor_tree)

        return timed(work)

    row = Row(f"moved base ({dev}, {differ} files differ)", target="<= 1.5x +s")
    for n in range(max(1, repeat) * 2):
        to = "new" if n % 2 == 0 else "old"
        row.ours_runs.append(ours(to))
        row.floor_runs.append(floor(to))
    write_project_files(up.path, up.devices)
    row.note = "; ".join(problems) or "updated in place both ways, trees = vendor trees"
    if row.ours is not None and row.floor is not None:
        # the floor is git's own work only; doit's start-up (`doit list`) comes on top
        allowed = 1.5 * (row.floor + startup)
        row.passed = not problems and row.ours <= allowed
        row.note += f"; judged against 1.5x (floor + doit start-up {startup:.3f} s)"
    return row


def measure_verify(up: Upstream, work: Path, repeat: int, startup: float) -> Row:
    dev = up.long_device

    def ours(_: int) -> float:
        doit(up.path, "forget", f"verify:{dev}")
        seconds, out = doit(up.path, f"verify:{dev}")
        if f"verify:{dev}" not in executed(out, "verify"):
            raise FlagtasksFailed(f"verify:{dev} did not run after forget:\n{out}")
        return seconds

    commits = up.extra.get(f"series_{dev}", 0)
    row = Row(f"verify ({dev}, {commits} commits)", target="<= 2x")
    row.ours_runs, row.floor_runs = interleaved(repeat, ours, lambda _: floor_verify(up, dev, work))
    row.judge(2.0)
    if row.ours is not None and row.floor is not None:
        row.note = f"for context: floor + doit start-up (doit list) = {row.floor + startup:.3f} s"
    return row


def measure_verify_work(up: Upstream, work: Path, repeat: int) -> Row:
    """The verify work itself, in-process (flagtasks.patches.apply_tree), against the floor.

    `doit verify:<DEV>` adds doit's start-up (about as long as `doit list`), which alone is
    several times the plain-git floor for one apply; this row isolates flagtasks' own cost.
    """
    from flagtasks import patches

    dev = up.long_device
    mbox = up.stored_patch(dev).read_bytes()
    base = git("rev-parse", "v1.0^{commit}", cwd=up.path).strip()
    want = git("rev-parse", f"{up.branch(dev)}^{{tree}}", cwd=up.path).strip()

    def ours(_: int) -> float:
        start = time.perf_counter()
        got = patches.apply_tree(up.path, base, mbox)
        seconds = time.perf_counter() - start
        if got != want:
            raise FlagtasksFailed(f"apply_tree gave {got}, expected {want}")
        return seconds

    commits = up.extra.get(f"series_{dev}", 0)
    row = Row(f"verify work in-process ({commits} commits)", target="<= 2x")
    row.ours_runs, row.floor_runs = interleaved(repeat, ours, lambda _: floor_verify(up, dev, work))
    row.judge(2.0)
    return row


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
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = str(len(os.sched_getaffinity(0)))
    for module in ("doit", "flagtasks"):
        try:
            version = getattr(__import__(module), "__version__", "?")
            info[module] = ".".join(map(str, version)) if isinstance(version, tuple) else version
        except ImportError:
            info[module] = "not installed"
    return info


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.3f}{unit}"


def print_table(rows: list[Row]) -> None:
    head = ("measurement", "flagtasks s", "floor s", "ratio", "target", "result")
    table = [head]
    for r in rows:
        result = "-" if r.passed is None else ("PASS" if r.passed else "FAIL")
        table.append((r.name, fmt(r.ours), fmt(r.floor), fmt(r.ratio, "x"), r.target, result))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        several = len(r.ours_runs) > 1 or len(r.floor_runs) > 1
        if r.note or several:
            print(f"  * {r.name}: {r.note}" if r.note else f"  * {r.name}")
        if several:
            runs = " ".join(f"{x:.2f}" for x in r.ours_runs) or "-"
            floors = " ".join(f"{x:.2f}" for x in r.floor_runs) or "-"
            print(f"    all runs: flagtasks [{runs}]  floor [{floors}]")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=3000, help="files in the upstream tree")
    p.add_argument("--commits", type=int, default=150, help="commits on upstream main")
    p.add_argument("--devices", type=int, default=10, help="devices V0_X100..")
    p.add_argument("--long-series", type=int, default=120, help="commits of V0_X100's series")
    p.add_argument("--repeat", type=int, default=3, help="best of N for each measurement")
    p.add_argument("--workdir", type=Path, help="parent folder for the run (kept)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--floor-only", action="store_true", help="generate and time git only")
    args = p.parse_args(argv)
    if args.files < 10 or args.commits < 20 or args.devices < 1 or args.long_series < 1:
        p.error("need --files >= 10, --commits >= 20, --devices >= 1, --long-series >= 1")
    return args


def floor_only_rows(up: Upstream, work: Path, repeat: int) -> list[Row]:
    """--floor-only: the git side of every measurement, without flagtasks."""
    patches = {dev: plain_patch(up, dev, work / "patches") for dev in up.devices}
    one = {up.stale_device: patches[up.stale_device]}
    floors = {
        "format-patch, all devices": lambda: floor_format_patch(up, work / "fp"),
        f"full build, {len(up.devices)} devices": lambda: floor_build(up, patches, work / "fb"),
        f"one build ({up.stale_device})": lambda: floor_build(up, one, work / "fo"),
        f"verify ({up.long_device})": lambda: floor_verify(up, up.long_device, work),
    }
    return [Row(name, [], samples(repeat, fn)) for name, fn in floors.items()]


def run(args: argparse.Namespace, root: Path, rows: list[Row]) -> None:
    """Generate the upstream and append each measurement to `rows` as it completes."""
    start = time.perf_counter()
    up = build_upstream(root, args)
    for i, dev in enumerate(up.devices):
        up.extra[f"series_{dev}"] = series_length(i, args.long_series)
    print(
        f"upstream: {up.path}  ({args.files} files, {up.extra['main_history_commits']} "
        f"commits on main incl. merges, base {BASE_TAG} = {up.base8}, "
        f"generated in {time.perf_counter() - start:.1f} s)"
    )
    work = root / "work"
    work.mkdir()
    RUN_ENV["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    if args.floor_only:
        rows += floor_only_rows(up, work, args.repeat)
        return
    rows.append(measure_format_patch(up, work, args.repeat))
    rows.append(measure_full_build(up, work, args.repeat))
    noop, startup = measure_noop(up, args.repeat)
    rows += [noop, startup]
    rows.append(measure_one_stale(up, work, args.repeat))
    rows.append(measure_moved_base(up, work, args.repeat, startup.ours or 0.0))
    rows.append(measure_verify(up, work, args.repeat, startup.ours or 0.0))
    rows.append(measure_verify_work(up, work, args.repeat))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="flagtasks-bench-", dir=args.workdir))
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
        print(
            f"\ntotal {time.perf_counter() - started:.1f} s; load average now "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; run folder {root}"
            + ("" if args.keep or args.workdir or code else " (removed)")
        )
        if not (args.keep or args.workdir or code):
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
