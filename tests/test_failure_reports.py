"""Failure reports: a stored patch that no longer applies is reported with the file and the
line of the hunk that failed, the patch it is in, and the fix (regenerate the adaptation
against the base, or rebase the vendor branch); CI sees every broken device in one run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fixtures import describe, doit, flagtasks, git
from repos import VENDOR, base8, commit, init_repo, make_project, sha256, write_config

A, B = "A_X100", "B_Y100"
MODEL = "src/model.py"
LINES = [f"line {i}: upstream code\n" for i in range(1, 31)]
FAILED_AT = re.compile(r"src/model\.py:\d+")


def with_line(lines: list[str], number: int, text: str) -> str:
    out = list(lines)
    out[number - 1] = text
    return "".join(out)


def build(repo: Path) -> None:
    """v1.0; vendor branches that change line 10 (A, in its second commit) and line 20
    (B); and v1.1, an upstream commit that rewrites lines 9 and 19: context lines of both
    vendors' hunks, so their stored patches no longer apply there."""
    init_repo(repo)
    commit(repo, "Upstream v1.0", {MODEL: "".join(LINES), "README.md": "# upstream\n"})
    git(repo, "tag", "v1.0")
    git(repo, "checkout", "-q", "-b", "vendor/a", "v1.0")
    commit(repo, f"[{A}] readme", {"README.md": "# upstream, on X100\n"}, author=VENDOR)
    commit(repo, f"[{A}] X100 kernels", {MODEL: with_line(LINES, 10, "X100 kernel\n")})
    git(repo, "checkout", "-q", "-b", "vendor/b", "v1.0")
    commit(repo, f"[{B}] Y100 kernels", {MODEL: with_line(LINES, 20, "Y100 kernel\n")})
    git(repo, "checkout", "-q", "main")
    moved = list(LINES)
    moved[8], moved[18] = "line 9: refactored\n", "line 19: refactored\n"
    commit(repo, "Upstream v1.1: refactor", {MODEL: "".join(moved)})
    git(repo, "tag", "v1.1")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("failures") / "upstream"
    build(repo)
    make_project(
        repo,
        {A: {"base": "v1.0", "current": "vendor/a"}, B: {"base": "v1.0", "current": "vendor/b"}},
    )
    made = doit(repo, "format_patch")
    assert made.returncode == 0, describe(made)
    shutil.rmtree(repo / ".flagtasks")
    return repo


@pytest.fixture(scope="module")
def moved_base(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """User side: both vendors' patches stored for v1.1 as well (as if someone copied them
    forward without regenerating); v1.1 is the newest base, so it is the one built."""
    project = tmp_path_factory.mktemp("moved") / "upstream"
    shutil.copytree(template, project, symlinks=True)
    write_config(project, {})
    old, new = base8(project, "v1.0"), base8(project, "v1.1")
    for dev in (A, B):
        src = project / "hardware" / dev / old / f"{old}.patch"
        dest = project / "hardware" / dev / new / f"{new}.patch"
        dest.parent.mkdir(parents=True)
        dest.write_bytes(src.read_bytes())  # a store like FlagScale's own: no metadata
    return project


def assert_reports_failure(text: str, dev: str, subject: str) -> None:
    """The file and line of the failing hunk, the patch, and a fix."""
    assert FAILED_AT.search(text), f"no <file>:<line> of the failing hunk in:\n{text}"
    assert dev in text or subject in text, f"neither {dev} nor {subject!r} named in:\n{text}"
    assert "regenerate" in text or "rebase" in text, f"no fix suggested in:\n{text}"
    assert "Traceback" not in text


def test_verify_names_file_line_patch_and_fix(moved_base: Path) -> None:
    run = flagtasks(moved_base, "verify", "--device-type", A)
    assert run.returncode == 1, describe(run)
    assert_reports_failure(run.stderr, A, f"[{A}] X100 kernels")
    assert f"[{A}] X100 kernels" in run.stderr, describe(run)  # patch 2 of 2, by subject
    assert "2/2" in run.stderr, describe(run)


@pytest.mark.parametrize("how", ["doit", "cli"])
def test_unpatch_names_file_line_and_fix(moved_base: Path, how: str) -> None:
    if how == "doit":
        run = doit(moved_base, f"unpatch:{A}")
    else:
        new = base8(moved_base, "v1.1")
        run = flagtasks(
            moved_base, "unpatch", "--device-type", A, "--commit-id", new, "--dir", "build"
        )
    assert run.returncode == 1, describe(run)
    assert_reports_failure(run.stderr, A, f"[{A}] X100 kernels")
    assert not (moved_base / "build" / A / "FlagScale").exists()


@pytest.mark.parametrize("how", ["doit", "cli"])
def test_verify_reports_every_broken_device(moved_base: Path, how: str) -> None:
    """Two broken devices: both reported (not just the first), with a summary, exit 1.

    Plain `doit verify` selects doit's group task, which doit itself fails as an error
    (exit 2) once a subtask failed; `flagtasks verify` maps that back to 1.
    """
    run = doit(moved_base, "verify") if how == "doit" else flagtasks(moved_base, "verify")
    assert run.returncode == (1 if how == "cli" else 2), describe(run)
    for dev, subject in ((A, f"[{A}] X100 kernels"), (B, f"[{B}] Y100 kernels")):
        assert f"verify:{dev}" in run.stderr, f"{dev} not reported:\n{describe(run)}"
        lines = [line for line in run.stderr.splitlines() if f"verify:{dev}" in line]
        assert_reports_failure("\n".join(lines), dev, subject)
    summary = run.stderr.strip().splitlines()[-1]
    assert "verify:A_X100" in summary and "verify:B_Y100" in summary, describe(run)


def corrupt_context(project: Path, dev: str) -> bytes:
    """Damage one context line of the stored patch and make its metadata agree, as a bad
    merge of hardware/ would; returns the good bytes."""
    b8 = base8(project, "v1.0")
    patch = project / "hardware" / dev / b8 / f"{b8}.patch"
    good = patch.read_bytes()
    bad = good.replace(b"\n line 8: upstream code\n", b"\n line 8: upstream c0de\n", 1)
    assert bad != good
    patch.write_bytes(bad)
    meta_path = patch.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["patch_sha256"] = sha256(bad)
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return good


def test_corrupted_context_line_is_reported_and_regenerating_fixes_it(
    template: Path, tmp_path: Path
) -> None:
    project = tmp_path / "upstream"
    shutil.copytree(template, project, symlinks=True)
    settled = doit(project, "format_patch")  # doit's state records the stored patches
    assert settled.returncode == 0, describe(settled)
    good = corrupt_context(project, A)
    verify = doit(project, f"verify:{A}")
    assert verify.returncode == 1, describe(verify)
    assert_reports_failure(verify.stderr, A, f"[{A}] X100 kernels")
    # the fix the message suggests: regenerate the adaptation against the base
    regen = flagtasks(
        project,
        "patch",
        "--device-type",
        A,
        "--base-commit-id",
        "v1.0",
        "--current-commit-id",
        "vendor/a",
    )
    b8 = base8(project, "v1.0")
    stored = (project / "hardware" / A / b8 / f"{b8}.patch").read_bytes()
    assert regen.returncode == 0 and stored == good, (
        "regenerating did not repair the damaged patch:\n" + describe(regen)
    )
    again = doit(project, f"verify:{A}")
    assert again.returncode == 0, describe(again)
