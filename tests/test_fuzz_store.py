"""Fuzzing the store: whatever sits where an adaptation's files should be, every command says
so in a few clear lines and carries on with the other devices.

Each case puts one shape (random bytes, JSON of the wrong shape, a symlink out of the
checkout or to /dev/zero, a FIFO, a 2 GB sparse file, an empty file, a folder) at one place of
a store (the plain patch, the encrypted patch, meta.json, hetero.txt, a device folder, a base
folder), then runs `flagtasks verify`, `flagtasks status`, `flagtasks status --json` and
`flagtasks unpatch`. Every run must: exit 0, 1 or 2 within a timeout; print no traceback and no
"internal error"; keep stderr short, one line per problem; never print what a symlink points
at outside the checkout; change nothing outside the checkout; and still report the devices the
case did not touch.

Deterministic: the random parts come from `random.Random`, seeded with FLAGTASKS_FUZZ_SEED
(default DEFAULT_SEED) and the case's name; every failure message names the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures import (
    ERROR_PREFIX,
    V10_8,
    V11_8,
    A,
    B,
    C,
    check_output,
    copy_of,
    describe,
    flagtasks_argv,
    flagtasks_ok,
    run_env,
)
from repos import D

DEFAULT_SEED = 20240917
SEED = int(os.environ.get("FLAGTASKS_FUZZ_SEED", "") or DEFAULT_SEED)
TOKEN = "FUZZSECRET" + hashlib.sha256(f"token {SEED}".encode()).hexdigest()[:24]
"""The content of the files outside the checkout: it must never be printed."""

TIMEOUT = 25.0
"""Seconds one command may take; a FIFO or a 2 GB file must not make it hang."""
STDERR_CAP = 2000
"""Characters of stderr a run may print in all: one line per problem, not a dump."""
LINE_CAP = 600
"""Characters of one stderr line (messages carry one or two absolute paths)."""
HUGE = 2 << 30
"""Size of the sparse file: reading it whole would take seconds and 2 GB."""
READ_CAP = 256 << 20
"""Bytes a run may read in all (Python, doit and git included): more means a file was read
whole that a store never holds at that size. Measured on Linux only (/proc/<pid>/io)."""
FULL_CAP = 6000
"""Characters of the failing run's full output in a failure message."""
POLL = 0.1
"""Seconds between looks at a running command's counters."""

KEYS = "keys"  # the key folder, in the outside folder


def seeded(case: str) -> random.Random:
    """The case's own generator: the same bytes every run for a given seed and case."""
    return random.Random(f"{SEED}:{case}")


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Fuzzed:
    """The module's store, and the folder outside it that symlinks point into."""

    project: Path
    outside: Path


def outside_store(outside: Path, meta: dict[str, Any]) -> None:
    """outside/store/<V10_8>/: an adaptation that looks real, whose patch names TOKEN."""
    folder = outside / "store" / V10_8
    folder.mkdir(parents=True)
    patch = (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: Mallory <mallory@example.invalid>\n"
        "Date: Thu, 16 Nov 2023 02:13:20 +0800\n"
        f"Subject: [PATCH] {TOKEN}\n\n{TOKEN}\n---\n"
        f"diff --git a/{TOKEN}.txt b/{TOKEN}.txt\nnew file mode 100644\n"
        "index 0000000000000000000000000000000000000000..1111111111111111111111111111111111111111\n"
        f"--- /dev/null\n+++ b/{TOKEN}.txt\n@@ -0,0 +1 @@\n+{TOKEN}\n-- \n2.0\n\n"
    ).encode()
    (folder / f"{V10_8}.patch").write_bytes(patch)
    consistent = {**meta, "patch_sha256": hashlib.sha256(patch).hexdigest()}
    (folder / "meta.json").write_text(json.dumps(consistent, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def fuzzed(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    """A copy of the session's store plus an encrypted adaptation (A_X100 on v1.1, key folder
    outside the checkout, named in config.toml [keys] so verify checks its content), and the
    outside folder: secret.txt, a look-alike store, the key folder."""
    root = tmp_path_factory.mktemp("fuzz")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{TOKEN} {TOKEN}_X100\n")
    project = copy_of(store, root / "template")
    keys = outside / KEYS
    flagtasks_ok(project, "patch", "--device-type", A, "--base-commit-id", "v1.1",
                 "--current-commit-id", f"vendor/{A}-v1.1", "--key-path", str(keys))  # fmt: skip
    (project / "config.toml").write_text(f"[keys]\n{A} = {json.dumps(str(keys))}\n")
    assert (project / "hardware" / A / V11_8 / f"{V11_8}.patch.encrypted").is_file()
    flagtasks_ok(project, "verify")  # the template is sound: every failure below is the case's
    outside_store(outside, json.loads((project / "hardware" / D / V10_8 / "meta.json").read_text()))
    return Fuzzed(project, outside)


def outside_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything below `root`, symlinks not followed: type, and for files size, mtime, sha."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, digest)
    return out


# --------------------------------------------------------------------------- shapes


def clear(path: Path) -> None:
    """Remove whatever is at `path`: file, symlink, FIFO or folder."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: scalars of every type, strings with newlines and NULs, containers."""
    kinds = ["int", "float", "str", "null", "bool"] + (["list", "dict"] * 2 if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, -(2**63), 10**30, rng.randint(-(10**9), 10**9)])
    if kind == "float":
        return rng.choice([0.5, -1e-300, 1e308, rng.random()])
    if kind == "str":
        alphabet = "ab0f:/.\\ \n\r\t\x00\x1b\u202e\udcff\u00e9\u6570" + V10_8
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {str(random_json(rng, 4)): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


INJECTED_BEFORE = "0" * 20
INJECTED = "injected line"
"""A value with a newline: INJECTED on a stderr line without INJECTED_BEFORE was printed raw,
as a line of its own (a forged `error:` line)."""
WRONG = [
    ("number", lambda rng: rng.choice([0, -7, 3.25, 10**40, 1e308])),
    ("list", lambda rng: [V10_8, 1, None]),
    ("null", lambda rng: None),
    ("newline", lambda rng: f"{INJECTED_BEFORE}\nerror: {INJECTED}\n" + "0" * 18),
    ("nul", lambda rng: V10_8 + "\x00" + "0" * 31),
]
"""Wrong values for a metadata key: each key gets each of these in one of the types cases."""
META_KEYS = ("base", "tree", "encrypted", "patch_sha256")


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def meta_shape(name: str) -> Callable[[Path, random.Random], bytes]:
    """The bytes of a JSON shape for meta.json, from the meta.json it replaces."""

    def make(original: Path, rng: random.Random) -> bytes:
        meta = json.loads(original.read_text())
        if name == "deep-open":
            return b"[" * 200_000
        if name == "deep-closed":
            return b"[" * 100_000 + b"]" * 100_000
        if name == "bigint":  # more digits than int() converts by default
            return json.dumps(meta)[:-1].encode() + b', "commits": 1' + b"0" * 5000 + b"}"
        if name == "random":
            return json_bytes(random_json(rng))
        if name == "mutate":
            for key in rng.sample(sorted(meta), k=rng.randint(1, len(meta))):
                meta[key] = random_json(rng, 2)
            meta[str(random_json(rng, 4))] = random_json(rng, 3)
            return json_bytes(meta)
        if name.startswith("types-"):  # key i gets WRONG[(i + k) % len(WRONG)]
            k = int(name.removeprefix("types-"))
            for i, key in enumerate(META_KEYS):
                meta[key] = WRONG[(i + k) % len(WRONG)][1](rng)
            return json_bytes(meta)
        raise AssertionError(name)  # pragma: no cover

    return make


def hetero_shape(name: str) -> Callable[[Path, random.Random], bytes]:
    """hetero.txt: one very long line, or random lines of store-like words, NULs, CRs."""

    def make(original: Path, rng: random.Random) -> bytes:
        if name == "long-line":
            return f"{V10_8}: ".encode() + b" ".join([A.encode(), B.encode()] * 100_000) + b"\n"
        words = [V10_8 + ":", V11_8 + ":", A, B, "#", "\x00", "\r", "../x", "\udcff", ":", "ZZ_9"]
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(40)]
        return "\n".join(lines).encode("utf-8", "surrogateescape")

    return make


def plant(path: Path, shape: str, rng: random.Random, outside: Path) -> None:
    """Put `shape` at `path` (after removing what was there)."""
    original = path.with_name(path.name + ".orig")
    if path.is_file() and not path.is_symlink():
        shutil.copyfile(path, original)
    made: bytes | None = None
    if shape.startswith("json-"):
        made = meta_shape(shape.removeprefix("json-"))(original, rng)
    elif shape.startswith("text-"):
        made = hetero_shape(shape.removeprefix("text-"))(original, rng)
    elif shape == "keep-magic":  # the real header's first bytes, then noise
        made = original.read_bytes()[: rng.randint(4, 64)] + rng.randbytes(rng.randint(0, 4096))
    if original.exists():
        original.unlink()
    clear(path)
    if made is not None:
        path.write_bytes(made)
    elif shape in ("random", "file"):
        path.write_bytes(rng.randbytes(rng.randint(1, 8192)))
    elif shape == "empty":
        path.write_bytes(b"")
    elif shape == "secret":
        path.symlink_to(outside / "secret.txt")
    elif shape == "devzero":
        path.symlink_to("/dev/zero")
    elif shape == "fifo":
        os.mkfifo(path)
    elif shape == "huge":
        with path.open("wb") as handle:
            handle.truncate(HUGE)
    elif shape == "folder":  # a folder where a file is expected
        path.mkdir()
        (path / "inner.txt").write_text(f"{V10_8}: {A} {B}\n")
    elif shape == "empty-folder":
        path.mkdir()
    elif shape == "outside-store":  # the device folder -> outside/store
        path.symlink_to(outside / "store")
    elif shape == "outside-base":  # the base folder -> outside/store/<V10_8>
        path.symlink_to(outside / "store" / V10_8)
    else:  # pragma: no cover
        raise AssertionError(shape)


# --------------------------------------------------------------------------- places


@dataclass(frozen=True)
class Place:
    """Where a case plants its shape, what `unpatch` builds from it, and which adaptations
    the case leaves alone (device, base8)."""

    rel: str
    unpatch: tuple[str, ...]
    untouched: tuple[tuple[str, str], ...]
    key: bool = False


UNPATCH_D = ("--device-type", D, "--commit-id", V10_8)
NOT_D = ((A, V10_8), (A, V11_8), (B, V10_8), (C, V11_8))
PLACES = {
    "patch": Place(f"hardware/{D}/{V10_8}/{V10_8}.patch", UNPATCH_D, NOT_D),
    "encrypted": Place(
        f"hardware/{A}/{V11_8}/{V11_8}.patch.encrypted",
        ("--device-type", A, "--commit-id", V11_8),
        ((A, V10_8), (B, V10_8), (C, V11_8), (D, V10_8)),
        key=True,
    ),
    "meta": Place(f"hardware/{D}/{V10_8}/meta.json", UNPATCH_D, NOT_D),
    "encrypted-meta": Place(
        f"hardware/{A}/{V11_8}/meta.json",
        ("--device-type", A, "--commit-id", V11_8),
        ((A, V10_8), (B, V10_8), (C, V11_8), (D, V10_8)),
        key=True,
    ),
    "hetero": Place(
        "hardware/hetero.txt",
        ("--device-type", A, B, "--commit-id", V10_8),
        ((C, V11_8), (D, V10_8)),
    ),
    "device": Place(f"hardware/{D}", UNPATCH_D, NOT_D),
    "base": Place(f"hardware/{D}/{V10_8}", UNPATCH_D, NOT_D),
}

CASES = [
    *(("patch", s) for s in ["random", "empty", "secret", "devzero", "fifo", "huge", "folder"]),
    *(("encrypted", s) for s in ["random", "keep-magic", "empty", "secret", "devzero", "fifo"]),
    ("encrypted", "huge"),
    *(("meta", s) for s in ["random", "empty", "secret", "devzero", "fifo", "huge"]),
    *(("meta", f"json-{s}") for s in ["deep-open", "deep-closed", "bigint", "random", "mutate"]),
    *(("meta", f"json-types-{k}") for k in range(len(WRONG))),
    ("encrypted-meta", "json-types-2"),
    *(("hetero", s) for s in ["empty", "secret", "devzero", "fifo", "huge", "folder"]),
    ("hetero", "text-long-line"),
    ("hetero", "text-random"),
    *(("device", s) for s in ["file", "outside-store", "fifo", "empty-folder"]),
    *(("base", s) for s in ["file", "outside-base", "empty-folder"]),
]
"""(place, shape) pairs: every shape at each file of the store, JSON shapes at meta.json,
text shapes at hetero.txt, and what can replace a folder at the device and base folders."""


# --------------------------------------------------------------------------- runs


PROC_IO = Path("/proc/self/io")
"""Linux's I/O counters: `rchar` counts the bytes a process read, its reaped children's too."""


def rchar(pid: int | str = "self") -> int:
    """Bytes process `pid` (with the children it reaped) read so far; 0 where unknown."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return 0
    return int(text.split("rchar:", 1)[1].split(None, 1)[0])


def group_rchar(group: int) -> int:
    """Bytes read so far by the live processes of process group `group`."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(group):  # state, ppid, pgrp
            total += rchar(entry)
    return total


@dataclass
class Run:
    """One finished (or killed) `flagtasks` run."""

    proc: subprocess.CompletedProcess[str]
    killed: str  # why the run was killed, "" when it exited by itself
    read: int  # bytes it and its children read (0 where the system does not say)

    @property
    def code(self) -> int | None:
        return None if self.killed else self.proc.returncode


def run(project: Path, *args: str) -> Run:
    """`flagtasks ARGS` in `project` (fixtures' command line and environment), stdin closed,
    in a process group of its own. The group is killed after TIMEOUT seconds, or as soon as it
    has read READ_CAP bytes (a store file read whole), so neither it nor a git it started can
    hang the suite or spend it reading a 2 GB file."""
    argv = flagtasks_argv(*args)
    measured = PROC_IO.exists()
    start = rchar()
    proc = subprocess.Popen(
        argv,
        cwd=project,
        env=run_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + TIMEOUT
    killed = ""
    while True:
        try:
            out, err = proc.communicate(timeout=POLL)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                killed = f"no exit within {TIMEOUT:.0f}s"
            elif measured and group_rchar(proc.pid) > READ_CAP:
                killed = f"read more than {READ_CAP >> 20} MiB"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                break
    read = rchar() - start if measured else 0
    done = subprocess.CompletedProcess(
        argv, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )
    return Run(done, killed, read)


def problems_of(run_: Run) -> list[str]:
    """What is wrong with one run, whatever the case: the contract's output rules."""
    proc = run_.proc
    found = []
    if run_.killed:
        found.append(f"killed: {run_.killed}")
    elif proc.returncode not in (0, 1, 2):
        found.append(f"exit code {proc.returncode}, not 0, 1 or 2")
    if run_.read > READ_CAP and not run_.killed:
        found.append(f"read {run_.read >> 20} MiB: a store file was read whole")
    try:
        check_output(proc)
    except AssertionError:
        found.append("a traceback or key material in the output")
    if "internal error" in proc.stderr:
        found.append("an internal error (an exception nobody foresaw)")
    if TOKEN in proc.stdout or TOKEN in proc.stderr:
        found.append("the content of a file outside the checkout is printed")
    if len(proc.stderr) > STDERR_CAP:
        found.append(f"{len(proc.stderr)} characters on stderr (cap {STDERR_CAP})")
    lines = proc.stderr.splitlines()
    long_lines = [line for line in lines if len(line) > LINE_CAP]
    if long_lines:
        found.append(f"{len(long_lines)} stderr line(s) longer than {LINE_CAP} characters")
    if any(INJECTED in line and INJECTED_BEFORE not in line for line in lines):
        found.append("a newline in a stored value starts a stderr line of its own")
    controls = sorted({c for c in proc.stderr if ord(c) < 32 and c not in "\n\t"})
    if controls:
        found.append(f"control characters {controls!r} on stderr (raw bytes echoed)")
    said_error = any(line.startswith(ERROR_PREFIX) for line in lines)
    if proc.returncode and not run_.killed and not said_error:
        found.append(f"exit {proc.returncode} without an {ERROR_PREFIX!r} line")
    return found


def listed(status_json: Run) -> set[tuple[str, str]] | str:
    """The (device, base8) pairs `status --json` lists, or why it could not be read."""
    try:
        data = json.loads(status_json.proc.stdout)
        return {(row["device"], row["base8"]) for row in data["adaptations"]}
    except (ValueError, KeyError, TypeError) as exc:
        return f"stdout is not the status JSON: {exc!r}"


def short(run_: Run, lines: int = 6) -> str:
    """A run, with only the first lines of stdout and stderr."""
    proc = run_.proc
    out = "\n".join(proc.stdout.splitlines()[:lines])
    err = "\n".join(proc.stderr.splitlines()[:lines])
    return (
        f"$ flagtasks {' '.join(map(str, proc.args[1:]))}\n"
        f"exit {proc.returncode}{f' (killed: {run_.killed})' if run_.killed else ''}, "
        f"read {run_.read >> 20} MiB\n"
        f"--- stdout (first {lines} lines)\n{out}\n--- stderr (first {lines} lines)\n{err}"
    )


FAST = {
    ("patch", "secret"),
    ("patch", "huge"),
    ("encrypted", "random"),
    ("encrypted", "devzero"),
    ("meta", "fifo"),
    ("meta", "json-deep-open"),
    ("meta", "json-types-0"),
    ("hetero", "secret"),
    ("device", "outside-store"),
    ("base", "outside-base"),
}
"""One case per kind of place and shape runs in the fast suite; CI runs all of them (slow)."""


@pytest.mark.parametrize(
    ("where", "shape"),
    [
        pytest.param(w, s, id=f"{w}-{s}", marks=() if (w, s) in FAST else pytest.mark.slow)
        for w, s in CASES
    ],
)
def test_fuzzed_store(fuzzed: Fuzzed, tmp_path: Path, where: str, shape: str) -> None:
    place = PLACES[where]
    case = f"{where}-{shape}"
    project = copy_of(fuzzed.project, tmp_path)
    plant(project / place.rel, shape, seeded(case), fuzzed.outside)
    before = outside_state(fuzzed.outside)

    key = ("--key-path", str(fuzzed.outside / KEYS)) if place.key else ()
    commands = [
        ("verify",),
        ("status",),
        ("status", "--json"),
        ("unpatch", *place.unpatch, "--dir", "build", *key),
    ]
    problems: list[str] = []
    runs: dict[tuple[str, ...], Run] = {}
    for args in commands:
        runs[args] = done = run(project, *args)
        problems += [f"{problem}\n{short(done)}" for problem in problems_of(done)]

    verify = runs[("verify",)]
    if verify.code in (0, 1):  # verify ran the tasks: the untouched ones are named
        said = verify.proc.stdout + verify.proc.stderr
        missing = sorted({dev for dev, _ in place.untouched if f"verify:{dev}" not in said})
        if missing:
            problems.append(f"verify does not report {missing}\n{short(verify, 20)}")
    status_json = runs[("status", "--json")]
    if status_json.code == 0:
        pairs = listed(status_json)
        if isinstance(pairs, str):
            problems.append(f"{pairs}\n{short(status_json)}")
        else:
            gone = sorted(set(place.untouched) - pairs)
            if gone:
                problems.append(f"status --json no longer lists {gone}\n{short(status_json)}")

    after = outside_state(fuzzed.outside)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if changed:
        problems.append(f"changed outside the checkout: {changed}")

    codes = ", ".join(
        f"{' '.join(a[:2]) if a[0] == 'status' else a[0]}={r.code}" for a, r in runs.items()
    )
    print(f"{case} (seed {SEED}): {codes}")
    failing = next((r for r in runs.values() if problems_of(r)), verify)
    assert not problems, (
        f"case {case}, seed {SEED} (FLAGTASKS_FUZZ_SEED={SEED} replays it):\n\n"
        + "\n\n".join(problems)
        + "\n\nthe first failing run in full:\n"
        + describe(failing.proc)[:FULL_CAP]
    )
