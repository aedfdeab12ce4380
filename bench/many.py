#!/usr/bin/env python3
"""flagtasks start-up benchmark: a no-op `doit unpatch` and `flagtasks status` over many
devices, against doit's own start-up (`doit list` over an empty dodo.py) in the same run.

    python bench/many.py [--devices 50] [--files 200] [--runs 10] [--workdir DIR] [--json F]

It makes a small upstream (the no-op cost does not depend on the tree's size: an up-to-date
build reads its marker and runs no git), stores one adaptation per device, builds every
tree, then times, interleaved run by run: the no-op `doit unpatch`, `flagtasks status`, and
`doit list` in a folder whose dodo.py is empty. Targets (issue 12): no-op <= 1.2x doit's
start-up; status <= 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_AUTHOR_DATE": "1700000000 +0000",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""Commands run as installed: with their bytecode cached (see `main` for where)."""


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=RUN_ENV, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def make_project(root: Path, devices: int, files: int) -> tuple[Path, list[str]]:
    up = root / "FlagScale"
    up.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=up)
    for number in range(files):
        path = up / f"pkg{number % 10}" / f"mod{number}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"VALUE = {number}\n")
    git("add", "-A", cwd=up)
    git("commit", "-q", "-m", "base", cwd=up)
    git("tag", "v1.0", cwd=up)
    names = [f"V{n}_X100" for n in range(devices)]
    for number, dev in enumerate(names):
        git("checkout", "-q", "-b", f"vendor/{dev}", "v1.0", cwd=up)
        target = number % files
        (up / f"pkg{target % 10}" / f"mod{target}.py").write_text(f"VALUE = '{dev}'\n")
        git("commit", "-q", "-am", f"[{dev}] adapt", cwd=up)
    git("checkout", "-q", "main", cwd=up)
    (up / ".git" / "info" / "exclude").write_text("/build/\n/.flagtasks/\n/dodo.py\n")
    run([str(BIN / "flagtasks"), "init"], up)
    config = (up / "config.toml").read_text()
    vendors = "".join(
        f'\n[vendor.{dev}]\nbase = "v1.0"\ncurrent = "vendor/{dev}"\n' for dev in names
    )
    (up / "config.toml").write_text(config + vendors)
    run([str(BIN / "doit"), "-n", "2", "format_patch"], up)
    (up / "config.toml").write_text(config)  # the user's side: the store only
    run([str(BIN / "doit"), "-n", "2", "unpatch"], up)
    return up, names


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    out = run(cmd, cwd)
    seconds = time.perf_counter() - start
    if cmd[-1] == "unpatch" and "\n.  unpatch:" in f"\n{out}":
        sys.exit(f"the no-op run rebuilt something:\n{out}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50, help="devices (default 50)")
    parser.add_argument("--files", type=int, default=200, help="upstream files (default 200)")
    parser.add_argument("--runs", type=int, default=10, help="runs of each (default 10)")
    parser.add_argument("--workdir", type=Path, help="run under DIR and keep it")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="flagtasks-many-"))
    RUN_ENV["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    try:
        started = time.perf_counter()
        up, names = make_project(root, args.devices, args.files)
        print(f"{len(names)} devices built in {time.perf_counter() - started:.1f} s")
        empty = root / "empty"
        empty.mkdir()
        (empty / "dodo.py").write_text("")
        commands = {
            "doit list, empty dodo.py": ([str(BIN / "doit"), "list"], empty),
            f"no-op doit unpatch, {len(names)} devices": ([str(BIN / "doit"), "unpatch"], up),
            f"flagtasks status, {len(names)} devices": ([str(BIN / "flagtasks"), "status"], up),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for cmd, cwd in commands.values():
            timed(cmd, cwd)  # warm-up
        for _ in range(args.runs):
            for name, (cmd, cwd) in commands.items():
                times[name].append(timed(cmd, cwd))
        medians = {name: statistics.median(values) for name, values in times.items()}
        floor = medians["doit list, empty dodo.py"]
        for name, value in medians.items():
            spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
            print(f"{name:40s} median {value:.3f} s ({spread}), {value / floor:.2f}x doit")
        if args.json:
            args.json.write_text(json.dumps({"medians": medians, "runs": times}, indent=2))
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
