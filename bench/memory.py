#!/usr/bin/env python3
"""flagtasks memory benchmark: peak RSS of `unpatch` for a large patch, against git's own.

Run with the Python that has flagtasks installed:

    python bench/memory.py [--megabytes 100] [--files 50] [--encrypted] [--workdir DIR]

It makes an upstream with one base commit and a vendor commit adding `--files` text files
of `--megabytes` in all, stores the adaptation with `flagtasks patch` (plain, or encrypted
with `--encrypted`), then builds it with `flagtasks unpatch --dir build`. It reports the
peak RSS of the flagtasks process itself and of its largest git child, next to the floor:
`git am` of the same patch in a `git clone --shared --no-checkout` + `git checkout` of the
base. Target (issue 12): flagtasks' own peak <= 1.5x the patch size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_AUTHOR_DATE": "1700000000 +0000",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}
DEVICE = "M_X100"
PEAK = (
    "import atexit, resource, sys\n"
    "def _peak():\n"
    "    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "    sys.stderr.write(f'PEAK {own} {kids}\\n')\n"
    "atexit.register(_peak)\n"
    "from flagtasks.cli import main\n"
    "sys.argv[0] = 'flagtasks'\n"
    "sys.exit(main())\n"
)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_upstream(root: Path, megabytes: int, files: int) -> Path:
    up = root / "FlagScale"
    up.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=up)
    (up / "README.md").write_text("upstream\n")
    git("add", "-A", cwd=up)
    git("commit", "-q", "-m", "base", cwd=up)
    git("tag", "v1.0", cwd=up)
    git("checkout", "-q", "-b", f"vendor/{DEVICE}", cwd=up)
    rng = random.Random(7)
    per_file = megabytes * (1 << 20) // files
    line = 64
    for number in range(files):
        rows = (f"{rng.getrandbits(250):063x}\n" for _ in range(per_file // line))
        (up / f"big{number:03d}.txt").write_text("".join(rows))
    git("add", "-A", cwd=up)
    git("commit", "-q", "-m", "vendor: large data", cwd=up)
    git("checkout", "-q", "main", cwd=up)
    exclude = up / ".git" / "info" / "exclude"
    exclude.write_text("/build/\n/.flagtasks/\n/hardware/\n/floor/\n")
    return up


def flagtasks_peak(up: Path, *args: str) -> tuple[int, int]:
    """(own, largest child) peak RSS in KiB of one `flagtasks` process."""
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, *args], cwd=up, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"flagtasks {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK "))
    own, kids = line.split()[1:]
    return int(own), int(kids)


def floor_peak(up: Path, patch: Path) -> int:
    """Largest git child's peak RSS (KiB) of the plain-git build of the same patch."""
    dest = up / "floor"
    shutil.rmtree(dest, ignore_errors=True)
    script = (
        "import resource, subprocess, sys\n"
        "for cmd in sys.argv[1:]:\n"
        "    subprocess.run(cmd.split('\\x1f'), check=True, capture_output=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    cmds = [
        ["git", "clone", "-q", "--shared", "--no-checkout", str(up), str(dest)],
        ["git", "-C", str(dest), "checkout", "-q", "-b", "b", "v1.0"],
        ["git", "-C", str(dest), "am", "-q", "--keep-cr", str(patch)],
    ]
    out = subprocess.run(
        [sys.executable, "-c", script, *["\x1f".join(c) for c in cmds]],
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100, help="patch size (default 100)")
    parser.add_argument("--files", type=int, default=50, help="files added (default 50)")
    parser.add_argument("--encrypted", action="store_true", help="store it encrypted")
    parser.add_argument("--workdir", type=Path, help="run under DIR and keep it")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="flagtasks-mem-"))
    try:
        up = make_upstream(root, args.megabytes, args.files)
        keys = root / "keys"
        extra = ["--key-path", str(keys)] if args.encrypted else []
        base8 = git("rev-parse", "--short=8", "v1.0", cwd=up)
        flagtasks_peak(
            up, "patch", "--device-type", DEVICE, "--base-commit-id", "v1.0",
            "--current-commit-id", f"vendor/{DEVICE}", *extra,
        )  # fmt: skip
        folder = up / "hardware" / DEVICE / base8
        stored = next(folder.glob(f"{base8}.patch*"))
        own, kids = flagtasks_peak(
            up, "unpatch", "--device-type", DEVICE, "--commit-id", base8, "--dir", "build",
            *extra,
        )  # fmt: skip
        plain = root / "plain.patch"
        plain.write_bytes(
            subprocess.run(
                ["git", "format-patch", "--stdout", "--binary", f"v1.0..vendor/{DEVICE}"],
                cwd=up, check=True, capture_output=True,
            ).stdout
        )  # fmt: skip
        floor = floor_peak(up, plain)
        size_kib = stored.stat().st_size // 1024
        figures = {
            "patch_kib": size_kib,
            "encrypted": args.encrypted,
            "flagtasks_own_kib": own,
            "flagtasks_git_kib": kids,
            "floor_git_kib": floor,
            "own_over_patch": round(own / size_kib, 2),
        }
        print(f"patch {size_kib / 1024:.0f} MiB ({'encrypted' if args.encrypted else 'plain'})")
        print(f"flagtasks process peak  {own / 1024:8.0f} MiB  ({own / size_kib:.2f}x the patch)")
        print(f"its largest git child   {kids / 1024:8.0f} MiB")
        print(f"floor: git am peak      {floor / 1024:8.0f} MiB")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
