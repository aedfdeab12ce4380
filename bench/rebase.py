#!/usr/bin/env python3
"""flagtasks benchmark: `flagtasks rebase --check` over 10 devices on a FlagScale-size
upstream, against the plain-git floor (`git am -3` per device in one shared clone).

    python bench/rebase.py [--quick] [--files 3500] [--devices 10] [--runs 5]
                           [--workdir DIR] [--json FILE]

It builds with `git fast-import` (fixed dates: the same options give the same commit ids)
an upstream of --files files, tags it v1.0, adds 20 upstream commits touching 5 files each
(100 files), tags the tip v2.0, and puts one vendor branch per device on v1.0: 3 commits
touching 10 files, most of them the vendor's own, some also changed upstream. Where a
vendor line sits next to an upstream change (inside the patch's context) the patch no
longer applies plainly and git's three-way merge moves it; where both changed the same
line it conflicts. Devices D3 and D6 are expected to need the three-way merge, D8 and D9
to conflict (D9 also has a three-way commit before its conflict), the rest to move clean.
Each adaptation is stored with `flagtasks patch --device-type D<n>_X --base-commit-id v1.0
--current-commit-id vendor/D<n>_X`.

Timed, interleaved run by run, median of --runs:
- flagtasks: `flagtasks rebase --check --onto v2.0 --json` (exits 1: something conflicts);
- floor: in one `git clone --shared` of the upstream, for each device `git checkout -q -f
  --detach v2.0`, `git am -3 --keep-cr` of its stored patch, `git am --abort` on a conflict.

The floor stops at a device's first conflict; the forecast goes on (each conflict resolved
with the commit's own side) and lists every conflicting commit. The floor also leans on
the vendor branches being in the clone (git's three-way fallback needs the blobs the
patches start from); flagtasks makes those from the patches themselves. The script prints
both verdicts per device and says where they differ. It is a report: it exits 0 whatever
the figures are, 1 only when a flagtasks command fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
EPOCH = 1_700_000_000
AUTHOR = "Ada Lovelace <ada@example.com>"
VENDOR = "Chip Vendor <vendor@example.com>"
LINES = 40  # lines per file
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
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""flagtasks runs as installed: with its bytecode cached (PYTHONPYCACHEPREFIX, in main)."""

# The line a vendor commit changes in a file the upstream also changed (upstream changes
# line 10 and line 30 of each of its files): 20 is outside every upstream hunk's context
# (plain apply), 13 is inside line 10's (three-way merge, no conflict), 10 and 30 are the
# same line (conflict).
CLEAN, THREE_WAY, CONFLICT = 20, 13, 10


class FlagtasksFailed(Exception):
    pass


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=False
    )
    if check and proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr}")
    return proc


def flagtasks(*args: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(
        [str(BIN / "flagtasks"), *args],
        cwd=cwd,
        env=RUN_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in ok:
        raise FlagtasksFailed(
            f"`flagtasks {' '.join(args)}` exited {proc.returncode} in {cwd}\n"
            f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
        )
    return proc.stdout


# --------------------------------------------------------------------------- generation


def content(path: str, n: int, edits: dict[int, str]) -> bytes:
    """File number n: LINES distinct lines; `edits` replaces line (1-based) -> text."""
    lines = [f"VALUE_{i} = {n * 100 + i}  # {path}" for i in range(1, LINES + 1)]
    for line, text in edits.items():
        lines[line - 1] = text
    return ("\n".join(lines) + "\n").encode()


class Stream:
    """A `git fast-import` stream with inline blobs and fixed dates."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.mark = 0
        self.clock = EPOCH

    def data(self, payload: bytes) -> None:
        self.chunks += [b"data %d\n" % len(payload), payload, b"\n"]

    def commit(
        self, ref: str, message: str, parent: str | None, files: dict[str, bytes], who: str = AUTHOR
    ) -> str:
        self.mark += 1
        self.clock += 600
        self.chunks.append(
            f"commit {ref}\nmark :{self.mark}\nauthor {who} {self.clock} +0000\n"
            f"committer {who} {self.clock} +0000\n".encode()
        )
        self.data(message.encode())
        if parent:
            self.chunks.append(f"from {parent}\n".encode())
        for path, payload in files.items():
            self.chunks.append(f"M 100644 inline {path}\n".encode())
            self.data(payload)
        self.chunks.append(b"\n")
        return f":{self.mark}"

    def tag(self, name: str, target: str) -> None:
        self.clock += 600
        self.chunks.append(
            f"tag {name}\nfrom {target}\ntagger {AUTHOR} {self.clock} +0000\n".encode()
        )
        self.data(f"{name}\n".encode())


class Edits:
    """One vendor branch's edits: a file edited again keeps its earlier edits."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.state: dict[int, dict[int, str]] = {}

    def edit(self, i: int, line: int, tag: str) -> tuple[str, bytes]:
        self.state.setdefault(i, {})[line] = f"VALUE_{line} = '{tag}'"
        return self.paths[i], content(self.paths[i], i, self.state[i])


def expected(n: int) -> str:
    return {3: "three-way", 6: "three-way", 8: "conflict", 9: "conflict"}.get(n, "clean")


def build(root: Path, files: int, devices: int, upstream_commits: int, per_commit: int) -> Path:
    """The upstream repository with v1.0, v2.0 and vendor/D<n>_X; returns its path."""
    paths = [f"{TOP_DIRS[i % len(TOP_DIRS)]}/pkg{i % 37}/mod{i}.py" for i in range(files)]
    touched = upstream_commits * per_commit
    if touched + devices * 9 > files:
        sys.exit(f"--files {files} is too small for {touched} upstream and the vendor files")
    # upstream files: spread over the tree; vendor-only files: the others, in order
    step = files // touched
    upstream = [i * step for i in range(touched)]
    others = [i for i in range(files) if i not in set(upstream)]
    stream = Stream()
    base = stream.commit(
        "refs/heads/main",
        "initial import\n",
        None,
        {p: content(p, i, {}) for i, p in enumerate(paths)},
    )
    stream.tag("v1.0", base)
    tip = base
    for c in range(upstream_commits):
        changed = {}
        for i in upstream[c * per_commit : (c + 1) * per_commit]:
            edits = {10: f"VALUE_10 = 'upstream {c}'", 30: f"VALUE_30 = 'upstream {c}'"}
            changed[paths[i]] = content(paths[i], i, edits)
        tip = stream.commit("refs/heads/main", f"upstream change {c}\n", tip, changed)
    stream.tag("v2.0", tip)
    for n in range(devices):
        dev = f"D{n}_X"
        own = others[n * 9 : (n + 1) * 9]  # 9 vendor-only files
        shared = upstream[(n * 7) % touched]  # also changed upstream: moves clean (line 20)
        near = upstream[(n * 7 + 3) % touched]  # line 13: three-way
        same = upstream[(n * 7 + 5) % touched]  # line 10: conflict
        edit = Edits(paths).edit
        plan = [
            [edit(i, CLEAN, dev) for i in own[:3]] + [edit(shared, CLEAN, dev)],
            [edit(i, CLEAN, dev) for i in own[3:6]],
            [edit(i, CLEAN, dev) for i in own[6:8]] + [edit(own[0], 25, f"{dev} again")],
        ]
        if n in (3, 6):
            plan[1].append(edit(near, THREE_WAY, dev))
        if n == 8:
            plan[1].append(edit(same, CONFLICT, dev))
        if n == 9:
            plan[0].append(edit(near, THREE_WAY, dev))
            plan[2].append(edit(same, 30, dev))
        parent = base
        for k, changes in enumerate(plan, start=1):
            parent = stream.commit(
                f"refs/heads/vendor/{dev}",
                f"[{dev}] adapt part {k}\n",
                parent,
                dict(changes),
                VENDOR,
            )
    up = root / "FlagScale"
    up.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=up)
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=up, input=b"".join(stream.chunks), check=True
    )
    git("checkout", "-q", "-f", "main", cwd=up)
    (up / ".git" / "info" / "exclude").write_text("\n".join(EXCLUDES) + "\n")
    (up / "config.toml").write_text(
        '[upstream]\nrepo = "."\nname = "FlagScale"\nhardware = "hardware"\nbuild = "build"\n'
    )
    return up


def store(up: Path, devices: list[str]) -> dict[str, Path]:
    """Each device's adaptation in hardware/, made with flagtasks patch; the patch files."""
    for dev in devices:
        flagtasks(
            "patch",
            "--device-type",
            dev,
            "--base-commit-id",
            "v1.0",
            "--current-commit-id",
            f"vendor/{dev}",
            "--mode",
            "series",
            cwd=up,
        )
    base8 = git("rev-parse", "v1.0^{commit}", cwd=up).stdout.strip()[:8]
    stored = {dev: up / "hardware" / dev / base8 / f"{base8}.patch" for dev in devices}
    for dev, path in stored.items():
        if not path.is_file():
            raise FlagtasksFailed(f"flagtasks patch wrote no {path} for {dev}")
    return stored


# --------------------------------------------------------------------------- measurement

_APPLYING = re.compile(r"^Applying: ", re.M)
_FALLBACK = "Falling back to patching base and 3-way merge"


def floor_once(clone: Path, stored: dict[str, Path]) -> tuple[float, dict[str, dict]]:
    """One pass of the floor over every device: seconds, and what git am said."""
    said: dict[str, dict] = {}
    os.sync()
    start = time.perf_counter()
    for dev, patch in stored.items():
        git("checkout", "-q", "-f", "--detach", "v2.0", cwd=clone)
        run = git("am", "-3", "--keep-cr", str(patch), cwd=clone, check=False)
        if run.returncode:
            git("am", "--abort", cwd=clone)
        said[dev] = {"returncode": run.returncode, "stdout": run.stdout}
    seconds = time.perf_counter() - start
    verdicts = {}
    for dev, out in said.items():
        three_way, number = [], 0
        for line in out["stdout"].splitlines():
            if _APPLYING.match(line):
                number += 1
            elif line.startswith(_FALLBACK):
                three_way.append(number)
        if out["returncode"]:
            verdicts[dev] = {"result": "conflict", "commits": [number], "three_way": three_way}
        else:
            result = "three-way" if three_way else "clean"
            verdicts[dev] = {"result": result, "commits": three_way, "three_way": three_way}
    return seconds, verdicts


def ours_once(up: Path) -> tuple[float, dict]:
    os.sync()
    start = time.perf_counter()
    out = flagtasks("rebase", "--check", "--onto", "v2.0", "--json", cwd=up, ok=(0, 1))
    return time.perf_counter() - start, json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 files, 3 runs")
    parser.add_argument("--files", type=int, help="upstream files (default 3500; quick 500)")
    parser.add_argument("--devices", type=int, default=10, help="devices (default 10)")
    parser.add_argument("--runs", type=int, help="timed runs of each (default 5; quick 3)")
    parser.add_argument("--workdir", type=Path, help="run under DIR and keep it")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    files = args.files or (500 if args.quick else 3500)
    runs = args.runs or (3 if args.quick else 5)
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="flagtasks-bench-rebase-"))
    RUN_ENV["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    try:
        return measure(root, files, args.devices, runs, args.json)
    except FlagtasksFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, files: int, devices: int, runs: int, json_out: Path | None) -> int:
    started = time.perf_counter()
    up = build(root, files, devices, upstream_commits=20, per_commit=5)
    names = [f"D{n}_X" for n in range(devices)]
    stored = store(up, names)
    clone = root / "floor"
    git("clone", "-q", "--shared", str(up), str(clone), cwd=root)
    print(
        f"upstream: {files} files, 20 commits v1.0..v2.0 touching 100 files; {devices} devices "
        f"x 3 commits; set up in {time.perf_counter() - started:.1f} s"
    )
    ours_once(up)  # warm-up: page cache, bytecode
    floor_once(clone, stored)
    ours_times, floor_times = [], []
    forecast: dict = {}
    floor: dict[str, dict] = {}
    for i in range(runs):  # interleaved, alternating which goes first
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for side in order:
            if side == 0:
                seconds, forecast = ours_once(up)
                ours_times.append(seconds)
            else:
                seconds, floor = floor_once(clone, stored)
                floor_times.append(seconds)
    ours_med, floor_med = statistics.median(ours_times), statistics.median(floor_times)

    print(f"\n{'':44s} {'median':>8s} {'min-max':>15s}")
    rows = [
        (f"flagtasks rebase --check, {devices} devices", ours_med, ours_times),
        (f"floor: git am -3 per device, {devices} devices", floor_med, floor_times),
    ]
    for label, med, values in rows:
        print(f"{label:44s} {med:7.2f}s {min(values):6.2f}-{max(values):.2f} s")
    print(f"{'ratio (flagtasks / floor)':44s} {ours_med / floor_med:7.2f}x")

    rows_by_device = {row["device"]: row for row in forecast["devices"]}
    print(f"\n{'device':8s} {'expected':10s} {'forecast':24s} {'floor (git am -3)':24s}")
    odd = []
    for n, dev in enumerate(names):
        row = rows_by_device.get(dev, {"result": "missing", "commits": []})
        ours_nums = [c["number"] for c in row["commits"]]
        theirs = floor[dev]
        ours_said = f"{row['result']} {ours_nums or ''}".strip()
        floor_said = f"{theirs['result']} {theirs['commits'] or ''}".strip()
        mark = ""
        if row["result"] != theirs["result"] or row["result"] != expected(n):
            mark = "  <- differs"
        elif row["result"] == "conflict" and ours_nums[:1] != theirs["commits"]:
            mark = "  <- first conflict differs"
        elif row["result"] == "three-way" and ours_nums != theirs["commits"]:
            mark = "  <- three-way commits differ"
        if mark:
            odd.append(dev)
        print(f"{dev:8s} {expected(n):10s} {ours_said:24s} {floor_said:24s}{mark}")
    if odd:
        print(f"\nforecast and floor (or the expectation) differ for: {', '.join(odd)}")
    print(
        "\nThe floor stops at a device's first conflict; the forecast resolves it with the "
        "commit's side and goes on, so it lists every conflicting commit."
    )
    if json_out:
        json_out.write_text(
            json.dumps(
                {
                    "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                    "options": {"files": files, "devices": devices, "runs": runs},
                    "flagtasks": ours_times,
                    "floor": floor_times,
                    "ratio": ours_med / floor_med,
                    "forecast": forecast,
                    "floor_verdicts": floor,
                    "differ": odd,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
