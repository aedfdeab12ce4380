"""Hostile input: names, commit ids, stored patches, config and hetero.txt that try to escape,
inject or crash. Each is refused with one clear line (exit 2 for bad input, exit 1 for a
stored patch that fails), never a traceback, and nothing is written.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures import (
    DEVICES,
    ERROR_PREFIX,
    check_output,
    copy_of,
    describe,
    doit,
    flagtasks,
    git,
    sample_project,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from repos import Link, commit, snapshot, snapshot_diff, tree_files

from flagtasks import patches, store
from flagtasks.cli import main
from flagtasks.errors import OperationError, UsageError
from flagtasks.names import check_device, check_rev

CONTRACT_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(_[A-Za-z0-9-]+)+")
USER_CONFIG = '[upstream]\nrepo = "."\nname = "FlagScale"\n'


def assert_clear_error(code: int, err: str, want: int, *names: str) -> None:
    """The contract's error shape: the exit code, one or two lines, no traceback."""
    assert code == want, f"exit {code}, want {want}:\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("usage:", " "))]
    assert 1 <= len(lines) <= 2, f"expected one or two lines:\n{err}"
    for name in names:
        assert name in err, f"{name!r} not named in:\n{err}"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user-side project: the sample's three adaptations in hardware/, no [vendor]."""
    path = sample_project(tmp_path_factory.mktemp("hostile") / "FlagScale", vendors=False)
    (path / "config.toml").write_text(
        USER_CONFIG
        + "".join(
            f'[vendor.{d}]\nbase = "{b}"\ncurrent = "vendor/{d}"\n' for d, b in DEVICES.items()
        )
    )
    made = doit(path, "format_patch")
    assert made.returncode == 0, describe(made)
    (path / "config.toml").write_text(USER_CONFIG)
    shutil.rmtree(path / ".flagtasks")
    return path


class Untouched:
    """Everything a refused command must leave as it was."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.before = self.take()

    def take(self) -> dict[str, object]:
        build = self.project / "build"
        return {
            "checkout": snapshot(self.project),
            "hardware": tree_files(self.project / "hardware"),
            "build": sorted(p.relative_to(build).as_posix() for p in build.rglob("*"))
            if build.exists()
            else [],
        }

    def check(self) -> None:
        after = self.take()
        assert snapshot_diff(self.before["checkout"], after["checkout"]) == []
        assert after["hardware"] == self.before["hardware"], "hardware/ changed"
        assert after["build"] == self.before["build"], "build/ changed"
        for where in (self.project, self.project.parent, Path.cwd()):
            assert not (where / "x").exists(), f"a file named x appeared in {where}"


# --------------------------------------------------------------------------- names and ids

HOSTILE_DEVICES = [
    "../evil",
    "A_X100/../../evil",
    "A/B_C",
    "A_X100 B",
    " A_X100",
    "A_X100;rm -rf ~",
    "$(touch x)_A",
    "A_$(touch x)",
    "`touch x`_A",
    "A_X100|touch x",
    "A_X100\n",
    "A_X100\x00",
    ".A_X100",
    "A_X100.",
    "A..B_C",
    "A_" + "X" * 10_000,
    "Ä_X100",
    "A_X100\udcff",
    "A_X100\u200b",
    "NoUnderscore",
    "_A",
    "A_",
    "",
]

HOSTILE_REVS = [
    "--output=/tmp/flagtasks-hostile",
    "-rf",
    "$(touch x)",
    "x$(touch${IFS}x)",
    ";rm -rf ~",
    "`touch x`",
    "a b",
    "HEAD\nv1.0",
    "v1.0\x00",
    "x" * 10_000,
    "\udcff\udcfe",
    "v1.0\udcff",
    "v1.0..vendor/A_X100",
    "v1.0...HEAD",
    "HEAD:README.md",
    "v1.0^{tree}",
    "../../../etc/passwd",
    "/etc/passwd",
    "deadbeef",
    "0" * 40,
    "",
]


def commands_for_device(dev: str) -> list[list[str]]:
    return [
        ["unpatch", "--device-type", dev, "--commit-id", "v1.0", "--dir", "build"],
        ["unpatch", "--device-type", "A_X100", dev, "--commit-id", "v1.0", "--dir", "build"],
        ["patch", "--device-type", dev, "--base-commit-id", "v1.0"],
        ["verify", "--device-type", dev],
    ]


def commands_for_rev(rev: str) -> list[list[str]]:
    return [
        ["unpatch", "--device-type", "A_X100", f"--commit-id={rev}", "--dir", "build"],
        ["unpatch", "--device-type", "A_X100", f"--commit-id={rev}"],
        ["patch", "--device-type", "A_X100", f"--base-commit-id={rev}"],
        ["patch", "--device-type", "A_X100", "--base-commit-id", "v1.0"]
        + [f"--current-commit-id={rev}"],
    ]


@pytest.fixture(scope="module")
def cli_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project only the in-process command line touches."""
    return copy_of(template, tmp_path_factory.mktemp("cli"))


def call(project: Path, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`flagtasks ARGV` in this process (fast enough for many inputs); exit code, stderr."""
    monkeypatch.chdir(project)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    check_output(subprocess.CompletedProcess(argv, code, captured.out, captured.err))
    return code, captured.err


def refusals(project: Path, argvs: list[list[str]], word: str, monkeypatch, capsys) -> list[str]:
    """Run each command line in-process; what did not give exit 2 and one clear line."""
    problems = []
    for argv in argvs:
        code, err = call(project, argv, monkeypatch, capsys)
        try:
            assert_clear_error(code, err, 2)
            assert word in err or "argument" in err, f"{word!r} not in:\n{err}"
        except AssertionError as exc:
            problems.append(f"{[a[:40] for a in argv]}: {exc}")
    return problems


def test_hostile_device_names_are_refused(cli_project: Path, monkeypatch, capsys) -> None:
    """Every name of HOSTILE_DEVICES through unpatch (one and two devices), patch, verify."""
    guard = Untouched(cli_project)
    argvs = [argv for dev in HOSTILE_DEVICES for argv in commands_for_device(dev)]
    problems = refusals(cli_project, argvs, "device", monkeypatch, capsys)
    assert not problems, "\n\n".join(problems)
    guard.check()


def test_hostile_commit_ids_are_refused(cli_project: Path, monkeypatch, capsys) -> None:
    """Every id of HOSTILE_REVS as --commit-id (with and without --dir), --base-commit-id
    and --current-commit-id."""
    guard = Untouched(cli_project)
    argvs = [argv for rev in HOSTILE_REVS for argv in commands_for_rev(rev)]
    problems = refusals(cli_project, argvs, "commit", monkeypatch, capsys)
    assert not problems, "\n\n".join(problems)
    guard.check()
    assert not Path("/tmp/flagtasks-hostile").exists()


def test_hostile_arguments_through_the_real_command_line(template: Path, tmp_path: Path):
    """The same through `python -m flagtasks`, with non-UTF-8 bytes as the shell passes
    them, and through doit task names."""
    project = copy_of(template, tmp_path)
    guard = Untouched(project)
    argvs = [
        ["unpatch", "--device-type", b"\xff\xfe_X100", "--commit-id", "v1.0"],
        ["verify", "--device-type", b"A_\xc3(X100"],
        ["unpatch", "--device-type", "A_X100", b"--commit-id=\xff\xfe", "--dir", "b"],
        ["patch", "--device-type", "A_X100", b"--base-commit-id=v1.0\xff"],
        ["patch", "--device-type", "A_" + "X" * 10_000, "--base-commit-id", "v1.0"],
        ["unpatch", "--device-type", "A_X100", "--commit-id=$(touch x)"],
    ]
    problems = []
    for argv in argvs:
        run = flagtasks(project, *argv, errors="replace")  # argv's bytes come back in messages
        try:
            assert_clear_error(run.returncode, run.stderr, 2)
        except AssertionError as exc:
            problems.append(f"{[a if isinstance(a, bytes) else a[:40] for a in argv]}: {exc}")
    for task in ("unpatch:../evil", "unpatch:$(touch x)", "verify:A_X100;touch x"):
        run = doit(project, task)
        if run.returncode == 0 or "Traceback" in run.stderr:
            problems.append(describe(run))
    guard.check()
    assert not problems, "\n\n".join(problems)


def test_a_refused_command_outside_a_checkout_writes_nothing(tmp_path: Path) -> None:
    """Bad input in a folder that is not a checkout: exit 2, and the folder stays empty."""
    empty = tmp_path / "not-a-checkout"
    empty.mkdir()
    for args in (
        ["unpatch", "--device-type", "../evil", "--commit-id", "v1.0", "--dir", "build"],
        ["verify"],
        ["status"],
    ):
        run = flagtasks(empty, *args)
        assert_clear_error(run.returncode, run.stderr, 2)
        assert sorted(os.listdir(empty)) == [], f"{args} wrote {os.listdir(empty)}"


# --------------------------------------------------------------------------- stored patches

HEADER = (
    "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
    "From: Mallory <mallory@example.invalid>\n"
    "Date: Thu, 16 Nov 2023 02:13:20 +0800\n"
    "Subject: [PATCH {n}/{total}] {subject}\n\n---\n"
)
MARK = "PWNED"


def new_file(path: str, body: str, mode: str = "100644") -> str:
    lines = body.splitlines(keepends=True)
    return (
        f"diff --git a/{path} b/{path}\nnew file mode {mode}\n"
        "index 0000000000000000000000000000000000000000..1111111111111111111111111111111111111111\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n"
        + "".join(f"+{line}" for line in lines)
    )


def new_link(path: str, target: str) -> str:
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 120000\n"
        "index 0000000000000000000000000000000000000000..1111111111111111111111111111111111111111\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n"
    )


def mbox(*diffs: tuple[str, str]) -> bytes:
    out = ""
    for n, (subject, diff) in enumerate(diffs, start=1):
        out += HEADER.format(n=n, total=len(diffs), subject=subject) + diff + "-- \n2.0\n\n"
    return out.encode()


def hostile_store(project: Path, outside: Path) -> dict[str, tuple[str, bytes]]:
    """Device -> (base rev, stored patch bytes) for every way a patch can misbehave."""
    body = f"{MARK}\n"
    # a base commit with a symlink pointing out of the tree
    git(project, "checkout", "-q", "-b", "linkbase", "v1.0")
    commit(project, "Add a link out", {"escape": Link(str(outside))})
    git(project, "tag", "linkbase")
    git(project, "checkout", "-q", "main")
    good = next((project / "hardware" / "A_X100").glob("*/*.patch")).read_bytes()
    cut = good.index(b"\n+", good.index(b"@@")) + 3  # inside the first hunk
    return {
        "Evil_dotdot": ("v1.0", mbox(("dotdot", new_file(f"../{MARK}-dotdot.txt", body)))),
        "Evil_abs": ("v1.0", mbox(("abs", new_file(f"{outside}/{MARK}-abs.txt", body)))),
        "Evil_gitdir": (
            "v1.0",
            mbox(("hook", new_file(".git/hooks/post-applypatch", f"touch {outside}/h", "100755"))),
        ),
        "Evil_subgit": ("v1.0", mbox(("sub", new_file("sub/.git/config", body)))),
        "Evil_baselink": ("linkbase", mbox(("through", new_file(f"escape/{MARK}.txt", body)))),
        "Evil_serieslink": (
            "v1.0",
            mbox(
                ("link", new_link("ln", str(outside))),
                ("through", new_file(f"ln/{MARK}-series.txt", body)),
            ),
        ),
        "Evil_truncated": ("v1.0", good[:cut]),
        "Evil_random": ("v1.0", random.Random(7).randbytes(4096)),
        "Evil_empty": ("v1.0", b""),
        "Evil_mailonly": ("v1.0", HEADER.format(n=1, total=1, subject="no diff").encode()),
    }


@pytest.fixture(scope="module")
def evil(template: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("evil")
    project = copy_of(template, root)
    outside = root / "outside"
    outside.mkdir()
    cases = hostile_store(project, outside)
    for dev, (rev, data) in cases.items():
        b8 = git(project, "rev-parse", rev)[:8]
        folder = project / "hardware" / dev / b8
        folder.mkdir(parents=True)
        (folder / f"{b8}.patch").write_bytes(data)
    return project, outside, cases


def marks_outside_store(root: Path) -> list[str]:
    """Files anywhere under `root` carrying the attack's mark, other than the stored patches."""
    found = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("hardware", "objects")]
        for name in names:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            if MARK in name or (
                path.stat().st_size < 1 << 20 and MARK.encode() in path.read_bytes()
            ):
                found.append(str(path.relative_to(root)))
    return found


EVIL_DEVICES = [
    "Evil_dotdot",
    "Evil_abs",
    "Evil_gitdir",
    "Evil_subgit",
    "Evil_baselink",
    "Evil_serieslink",
    "Evil_truncated",
    "Evil_random",
    "Evil_empty",
    "Evil_mailonly",
]


@pytest.mark.parametrize("dev", EVIL_DEVICES)
def test_hostile_stored_patch_is_refused(evil, dev: str) -> None:
    """`flagtasks unpatch` or `flagtasks verify` of each hostile patch (the doit run below
    does both for all): exit 1, one clear line, no tree, nothing written outside it."""
    project, outside, cases = evil
    b8 = git(project, "rev-parse", cases[dev][0])[:8]
    if dev in ("Evil_dotdot", "Evil_abs", "Evil_baselink", "Evil_serieslink", "Evil_empty"):
        unpatch = flagtasks(
            project, "unpatch", "--device-type", dev, "--commit-id", b8, "--dir", "build"
        )
        assert_clear_error(unpatch.returncode, unpatch.stderr, 1, dev)
    else:
        verify = flagtasks(project, "verify", "--device-type", dev)
        assert_clear_error(verify.returncode, verify.stderr, 1, dev)
    dev_dir = project / "build" / dev
    assert not dev_dir.exists() or os.listdir(dev_dir) == [], "a half tree was left"
    assert os.listdir(outside) == [], f"written outside the tree: {os.listdir(outside)}"
    assert marks_outside_store(project.parent) == []


def test_every_hostile_patch_is_reported_in_one_run(evil) -> None:
    """`doit --continue` over all of them: each verify and unpatch fails with one line
    naming it, the run exits non-zero, good devices still build, nothing escapes."""
    project, outside, _ = evil
    tasks = [f"verify:{d}" for d in EVIL_DEVICES] + [f"unpatch:{d}" for d in EVIL_DEVICES]
    run = doit(project, "--continue", *tasks, "unpatch:A_X100")
    assert run.returncode != 0, describe(run)
    assert "Traceback" not in run.stderr, describe(run)
    for task in tasks:
        assert f"{ERROR_PREFIX}{task}: " in run.stderr, f"{task} not reported\n{describe(run)}"
    assert (project / "build" / "A_X100" / "FlagScale" / ".git").is_dir()
    for dev in EVIL_DEVICES:
        dev_dir = project / "build" / dev
        assert not dev_dir.exists() or os.listdir(dev_dir) == [], f"half tree for {dev}"
    assert os.listdir(outside) == []
    assert marks_outside_store(project.parent) == []


# --------------------------------------------------------------------------- config.toml

BAD_CONFIGS = {
    "repo-int": ("[upstream]\nrepo = 5\n", "upstream.repo"),
    "repo-escapes": ('[upstream]\nrepo = "../.."\n', "upstream.repo"),
    "hardware-abs": ('[upstream]\nhardware = "/tmp"\n', "upstream.hardware"),
    "build-escapes": ('[upstream]\nbuild = "build/../../out"\n', "upstream.build"),
    "name-escapes": ('[upstream]\nname = "../x"\n', "upstream.name"),
    "name-int": ("[upstream]\nname = 1\n", "upstream.name"),
    "unknown-upstream-key": ('[upstream]\nrpo = "."\n', "upstream.rpo"),
    "unknown-section": ("[foo]\nx = 1\n", "foo"),
    "upstream-not-table": ('upstream = "x"\n', "upstream"),
    "vendor-not-table": ("vendor = 5\n", "vendor"),
    "vendor-unknown-key": ('[vendor.A_X100]\nbse = "v1.0"\n', "vendor.A_X100.bse"),
    "vendor-no-base": ('[vendor.A_X100]\ncurrent = "HEAD"\n', "vendor.A_X100.base"),
    "vendor-base-int": ("[vendor.A_X100]\nbase = 1\n", "vendor.A_X100.base"),
    "vendor-base-option": ('[vendor.A_X100]\nbase = "--output=x"\n', "vendor.A_X100.base"),
    "vendor-current-space": (
        '[vendor.A_X100]\nbase = "v1.0"\ncurrent = "a b"\n',
        "vendor.A_X100.current",
    ),
    "vendor-mode": ('[vendor.A_X100]\nbase = "v1.0"\nmode = "fast"\n', "vendor.A_X100.mode"),
    "vendor-key-int": ('[vendor.A_X100]\nbase = "v1.0"\nkey = 3\n', "vendor.A_X100.key"),
    "vendor-recipients": (
        '[vendor.A_X100]\nbase = "v1.0"\nrecipients = "x"\n',
        "vendor.A_X100.recipients",
    ),
    "vendor-bad-device": ('[vendor."../evil"]\nbase = "v1.0"\n', "vendor.../evil"),
    "use-int": ("[use]\nA_X100 = 5\n", "use.A_X100"),
    "use-option": ('[use]\nA_X100 = "--x"\n', "use.A_X100"),
    "use-bad-device": ('[use]\n"A/B" = "v1.0"\n', "use.A/B"),
    "keys-int": ("[keys]\nA_X100 = 5\n", "keys.A_X100"),
    "invalid-toml": ('[upstream\nrepo = "."\n', "not valid TOML"),
    "duplicate-key": ('[upstream]\nrepo = "."\nrepo = "."\n', "not valid TOML"),
    "not-utf8": (b'[upstream]\nname = "\xff"\n', "config.toml"),
}


@pytest.fixture(scope="module")
def config_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_of(template, tmp_path_factory.mktemp("config"))


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_names_the_key(config_project: Path, case: str, monkeypatch, capsys):
    text, key = BAD_CONFIGS[case]
    path = config_project / "config.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    guard = Untouched(config_project)
    for argv in (
        ["status"],
        ["verify"],
        ["unpatch", "--device-type", "A_X100", "--commit-id", "v1.0", "--dir", "build"],
    ):
        code, err = call(config_project, argv, monkeypatch, capsys)
        assert_clear_error(code, err, 2, "config.toml", key)
    guard.check()


@pytest.mark.parametrize(
    ("case", "args"), [("repo-escapes", "list"), ("invalid-toml", "unpatch"), ("use-int", "verify")]
)
def test_bad_config_through_doit(config_project: Path, case: str, args: str) -> None:
    text, key = BAD_CONFIGS[case]
    (config_project / "config.toml").write_text(text)
    guard = Untouched(config_project)
    run = doit(config_project, args)
    assert_clear_error(run.returncode, run.stderr, 2, "config.toml", key)
    guard.check()


# --------------------------------------------------------------------------- hetero.txt

JUNK_HETERO = """\
# combos
50b3e4bf A_X100 B_Y100
garbage line
zzzz1111: A_X100
50b3e4bf: A_X100 A_X100
50b3e4bf: ../evil
"""


def test_junk_hetero_and_store_entries_are_reported(template: Path, tmp_path: Path) -> None:
    project = copy_of(template, tmp_path)
    (project / "hardware" / "hetero.txt").write_text(JUNK_HETERO)
    verify = flagtasks(project, "verify", "--device-type", "A_X100")
    assert_clear_error(verify.returncode, verify.stderr, 1, "hetero.txt:2")
    guard = Untouched(project)
    for args in (
        ["unpatch", "--device-type", "A_X100", "B_Y100", "--commit-id", "v1.0", "--dir", "b"],
        ["unpatch", "--device-type", "A_X100", "B_Y100", "--commit-id", "50b3e4bf", "--dir", "b"],
    ):
        run = flagtasks(project, *args)
        assert_clear_error(run.returncode, run.stderr, 2, "hetero.txt")
    guard.check()
    (project / "hardware" / "hetero.txt").unlink()
    (project / "hardware" / "not a device").mkdir()
    (project / "hardware" / "A_X100" / "notbase8").mkdir()
    (project / "hardware" / "A_X100" / "50b3e4bf" / "stray.patch").write_text("x")
    # files directly in hardware/ are the project's own (FlagScale keeps README, LICENSE)
    (project / "hardware" / "README.md").write_text("the project's own\n")
    store_run = doit(project, "verify:store")
    assert store_run.returncode == 1, describe(store_run)
    for junk in ("not a device", "notbase8", "stray.patch"):
        assert junk in store_run.stderr, describe(store_run)
    assert "README.md" not in store_run.stderr, describe(store_run)


# --------------------------------------------------------------------------- parsers

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
WORD = st.text(alphabet=ALNUM + "-", min_size=1, max_size=12)
DEVICE_LIKE = st.builds(
    lambda first, head, chips: first + head + "".join("_" + c for c in chips),
    st.sampled_from(ALNUM),
    st.text(alphabet=ALNUM + "-", max_size=10),
    st.lists(WORD, min_size=1, max_size=3),
)
"""Names the contract's regex accepts, built directly (from_regex is slow)."""
DEVICE_OK = DEVICE_LIKE.filter(lambda n: len(n) <= 100)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=120)  # surrogates too
NAMEISH = st.one_of(
    ANY_TEXT,
    DEVICE_LIKE,
    st.builds(lambda a, b: a + b, DEVICE_LIKE, st.text(alphabet="./ $`;\n\x00_-", max_size=3)),
    st.text(alphabet="Aa0_-./ $`;\n\x00", max_size=40),
)


@PROPERTY
@given(NAMEISH)
def test_check_device_accepts_only_contract_names(name: str) -> None:
    try:
        accepted = check_device(name)
    except UsageError as exc:
        assert exc.exit_code == 2 and "\n" not in exc.message
        return
    assert accepted == name
    assert CONTRACT_DEVICE.fullmatch(name), name
    assert ".." not in name and "/" not in name and not name.startswith(("-", "."))


@PROPERTY
@given(DEVICE_OK)
def test_check_device_accepts_contract_names(name: str) -> None:
    assert check_device(name) == name


@PROPERTY
@given(NAMEISH)
def test_check_rev_raises_only_usage_errors(rev: str) -> None:
    try:
        accepted = check_rev(rev)
    except UsageError as exc:
        assert "\n" not in exc.message
        return
    assert accepted == rev and rev and not rev.startswith("-")
    assert not any(c.isspace() or ord(c) < 32 for c in rev)


BASE8 = st.text(alphabet="0123456789abcdef", min_size=8, max_size=8)
COMBO = st.tuples(BASE8, st.lists(DEVICE_OK, min_size=1, max_size=4, unique=True))
COMMENT = st.text(st.characters(exclude_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))


@st.composite
def hetero_files(draw) -> tuple[str, list[tuple[str, tuple[str, ...]]], list[str]]:
    """A valid hetero.txt: combos with distinct bases, comment and blank lines between."""
    combos = draw(st.lists(COMBO, max_size=5, unique_by=lambda c: c[0]))
    lines, comments = [], []
    for base8, devices in combos:
        if draw(st.booleans()):
            comment = "# " + draw(COMMENT)
            comments.append(comment)
            lines.append(comment)
        if draw(st.booleans()):
            lines.append("")
        note = "  # " + draw(COMMENT) if draw(st.booleans()) else ""
        lines.append(f"{base8}: {' '.join(devices)}{note}")
    text = "\n".join(lines) + ("\n" if draw(st.booleans()) else "")
    return text, [(b, tuple(d)) for b, d in combos], comments


@PROPERTY
@given(hetero_files(), COMBO)
def test_with_combo_round_trips(existing, combo) -> None:
    text, combos, comments = existing
    base8, devices = combo[0], tuple(combo[1])
    assert [(c.base8, c.devices) for c in store.parse_hetero(text)] == combos
    updated = store.with_combo(text, base8, devices)
    parsed = [(c.base8, c.devices) for c in store.parse_hetero(updated)]
    assert parsed.count((base8, devices)) == 1
    assert [c for c in parsed if c[0] != base8] == [c for c in combos if c[0] != base8]
    kept = [line for line in text.splitlines() if not line.startswith(base8)]
    assert [line for line in updated.splitlines() if not line.startswith(base8)] == kept
    assert [b for b, _ in parsed].count(base8) == 1
    for comment in comments:
        assert comment in updated.splitlines()
    assert store.with_combo(updated, base8, devices) == updated  # idempotent


@PROPERTY
@given(st.one_of(ANY_TEXT, st.text(alphabet="0123456789abcdef:# _AX-\n", max_size=200)))
def test_parse_hetero_raises_only_usage_errors(text: str) -> None:
    try:
        combos = store.parse_hetero(text)
    except UsageError as exc:
        assert "hetero.txt:" in exc.message
        return
    for combo in combos:
        assert store.is_base8(combo.base8) and all(map(check_device, combo.devices))


@PROPERTY
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.builds(
            lambda a, b: a + b"\nFrom " + b"0" * 40 + b" Mon Sep 17 00:00:00 2001\n" + b,
            st.binary(max_size=200),
            st.binary(max_size=200),
        ),
        st.builds(lambda a: b"diff --git " + a, st.binary(max_size=200)),
    )
)
def test_split_raises_only_operation_errors(data: bytes) -> None:
    try:
        parts = patches.split(data)
    except OperationError as exc:
        assert exc.exit_code == 1 and "not a patch" in exc.message
        return
    assert parts and all(isinstance(p, bytes) for p in parts)
    assert b"".join(parts) in data


def test_split_keeps_every_patch_of_a_series(template: Path) -> None:
    good = next((template / "hardware" / "A_X100").glob("*/*.patch")).read_bytes()
    parts = patches.split(good)
    assert len(parts) == 4 and b"".join(parts) == good
