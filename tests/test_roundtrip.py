"""format_patch -> verify -> unpatch on a vendor branch full of edge cases, in every mode."""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures import Runs, describe, doit, git, rev
from repos import (
    BINARY_LOGO,
    BINARY_NEW,
    CRLF_ADDED,
    CRLF_NEW,
    HOSTILE_APPLY_CONFIG,
    HOSTILE_FORMAT_CONFIG,
    NON_ASCII,
    SPACE_NAME,
    TIP_AUTHOR,
    TRAILING_WS,
    Scenario,
    base8,
    build_edge_case,
    build_tree,
    commits_in_range,
    hostile_home,
    make_project,
    own_objects,
    patch_file,
    read_meta,
    sha256,
    store_dir,
    tree_of,
    worktree_mismatches,
)

MODES = ("series", "squash", "auto")
USED = {"series": "series", "squash": "squash", "auto": "series"}
"""The mode meta.json must record: auto on a linear, reproducible branch stays a series."""


def dev(mode: str) -> str:
    return f"{mode}_EDGE"


@dataclass
class Edge:
    sc: Scenario
    runs: Runs

    @property
    def project(self) -> Path:
        return self.sc.repo

    def patch(self, mode: str) -> bytes:
        self.runs.ok(f"format_patch:{dev(mode)}")
        return patch_file(self.project, dev(mode), self.sc.base).read_bytes()

    def built(self, mode: str) -> Path:
        self.runs.ok(f"format_patch:{dev(mode)}")
        self.runs.ok(f"unpatch:{dev(mode)}")
        return build_tree(self.project, dev(mode))


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Edge:
    sc = build_edge_case(tmp_path_factory.mktemp("edge") / "upstream")
    assert sc.notes["reference_git_am"] is None, "fixture: plain git am must reproduce it"
    vendors = {dev(m): {"base": sc.base, "current": sc.current, "mode": m} for m in MODES}
    make_project(sc.repo, vendors)
    return Edge(sc, Runs(sc.repo))


@pytest.mark.parametrize("mode", MODES)
def test_format_patch_writes_patch_and_meta(edge: Edge, mode: str) -> None:
    data = edge.patch(mode)
    folder = store_dir(edge.project, dev(mode), edge.sc.base)
    b8 = base8(edge.project, edge.sc.base)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{b8}.patch", "meta.json"])
    meta = read_meta(edge.project, dev(mode), edge.sc.base)
    assert meta["base"] == rev(edge.project, "v1.0^{commit}")
    assert meta["current"] == rev(edge.project, edge.sc.current)
    assert meta["tree"] == tree_of(edge.project, edge.sc.current)
    assert meta["mode"] == USED[mode]
    assert meta["patch_sha256"] == sha256(data)
    for key in ("commits", "format", "tool_version"):
        assert key in meta, f"meta.json lacks {key!r}: {meta}"


@pytest.mark.parametrize("mode", MODES)
def test_verify_passes(edge: Edge, mode: str) -> None:
    edge.patch(mode)
    proc = edge.runs(f"verify:{dev(mode)}")
    assert proc.returncode == 0, describe(proc)


@pytest.mark.parametrize("mode", MODES)
def test_unpatch_reproduces_current_exactly(edge: Edge, mode: str) -> None:
    build = edge.built(mode)
    assert git(build, "rev-parse", "HEAD^{tree}") == tree_of(edge.project, edge.sc.current)
    assert worktree_mismatches(build, edge.project, edge.sc.current) == []
    assert git(build, "status", "--porcelain", "--untracked-files=all", "--ignored") == ""


@pytest.mark.parametrize("mode", MODES)
def test_build_tree_is_a_branch_on_base_sharing_objects(edge: Edge, mode: str) -> None:
    build = edge.built(mode)
    b8 = base8(edge.project, edge.sc.base)
    assert git(build, "symbolic-ref", "HEAD") == f"refs/heads/flagtasks/{dev(mode)}/{b8}"
    base = rev(edge.project, "v1.0^{commit}")
    git(build, "merge-base", "--is-ancestor", base, "HEAD")  # raises when base is not there
    alternates = (build / ".git" / "objects" / "info" / "alternates").read_text().split()
    upstream_objects = (edge.project / ".git" / "objects").resolve()
    assert any(
        (build / ".git" / "objects" / a).resolve() == upstream_objects for a in alternates
    ), alternates
    own = own_objects(build / ".git")
    assert base not in own, "the base commit was copied instead of shared"
    assert tree_of(edge.project, base) not in own


@pytest.mark.parametrize("mode", MODES)
def test_every_edge_case_survives(edge: Edge, mode: str) -> None:
    build = edge.built(mode)
    # rename, deletion, delete + re-add, rename + modify
    assert not (build / "src/old_name.py").exists()
    assert (build / "src/new_name.py").read_text().startswith("def f():")
    assert not (build / "docs/remove_me.md").exists()
    assert (build / "keep/phoenix.txt").read_bytes() == b"I am back, different\n"
    assert not (build / "a/orig.txt").exists()
    assert "line seven:" in (build / "b/moved.txt").read_text()
    # exec bits both ways
    assert (build / "scripts/run.sh").stat().st_mode & stat.S_IXUSR
    assert not (build / "scripts/tool.sh").stat().st_mode & stat.S_IXUSR
    # symlinks, dangling ones and a file that became a symlink
    assert (build / "link_to_readme").is_symlink()
    assert os.readlink(build / "link_to_readme") == "README.md"
    assert os.readlink(build / "links/dangling") == "../nowhere/missing.txt"
    assert os.readlink(build / "typechange/was_file.txt") == "../README.md"
    # binary, empty, non-ASCII, CRLF, trailing whitespace
    assert (build / "assets/new.bin").read_bytes() == BINARY_NEW
    assert (build / "assets/logo.bin").read_bytes() == BINARY_LOGO[:300] + b"\xff" * 7
    assert (build / "empty.txt").is_file()
    assert (build / "empty.txt").stat().st_size == 0
    assert (build / "src/pkg/__init__.py").stat().st_size == 0
    assert (build / NON_ASCII).read_bytes() == "grüße, 数据\n".encode()
    assert (build / SPACE_NAME).is_file()
    assert (build / "win/crlf.txt").read_bytes() == CRLF_NEW
    assert (build / "win/new_crlf.txt").read_bytes() == CRLF_ADDED
    assert (build / "cfg/ws.txt").read_bytes() == TRAILING_WS


@pytest.mark.parametrize("mode", ["series", "auto"])
def test_series_keeps_the_vendor_commits(edge: Edge, mode: str) -> None:
    build = edge.built(mode)
    base = rev(edge.project, "v1.0^{commit}")
    fmt = "%s%x00%an%x00%ae%x00%ad"
    expected = [
        git(edge.project, "log", "-1", "--date=raw", f"--format={fmt}", sha)
        for sha in commits_in_range(edge.project, base, edge.sc.current)
    ]
    got = git(build, "log", "--reverse", "--date=raw", f"--format={fmt}", f"{base}..HEAD")
    assert got.split("\n") == expected
    assert len(expected) == 13


def test_squash_is_one_commit_with_current_message_and_author(edge: Edge) -> None:
    build = edge.built("squash")
    base = rev(edge.project, "v1.0^{commit}")
    assert git(build, "rev-list", "--count", f"{base}..HEAD") == "1"
    assert git(build, "rev-parse", "HEAD^") == base
    assert git(build, "log", "-1", "--format=%B", "HEAD") == git(
        edge.project, "log", "-1", "--format=%B", edge.sc.current
    )
    assert git(build, "log", "-1", "--format=%an <%ae>", "HEAD") == "{} <{}>".format(*TIP_AUTHOR)


@pytest.mark.parametrize("mode", MODES)
def test_patch_bytes_are_canonical(edge: Edge, mode: str) -> None:
    data = edge.patch(mode)
    text = data.decode("utf-8", "surrogateescape")
    froms = re.findall(r"^From ([0-9a-f]{40}) ", text, re.M)
    expected = 13 if USED[mode] == "series" else 1
    assert froms == ["0" * 40] * expected
    for sha in git(edge.project, "rev-list", "--all").split():
        assert sha[:12] not in text, f"commit {sha} appears in the patch"
    assert not re.search(r"^-- \n\d+\.\d+", text, re.M), "git version signature present"
    index_lines = re.findall(r"^index .*$", text, re.M)
    assert index_lines, "no index lines at all"
    for line in index_lines:
        assert re.fullmatch(r"index [0-9a-f]{40}\.\.[0-9a-f]{40}( \d{6})?", line), line
    assert "GIT binary patch" in text


# --------------------------------------------------------------------------- determinism

REGEN = ("series", "squash")


@dataclass
class Regen:
    sc: Scenario
    first: dict[str, bytes]

    def regenerate(self, env: dict[str, str] | None = None) -> dict[str, bytes]:
        shutil.rmtree(self.sc.repo / "hardware")
        tasks = [f"format_patch:{dev(m)}" for m in REGEN]
        forgot = doit(self.sc.repo, "forget", *tasks, env=env)
        assert forgot.returncode == 0, describe(forgot)
        proc = doit(self.sc.repo, *tasks, env=env)
        assert proc.returncode == 0, describe(proc)
        return {m: patch_file(self.sc.repo, dev(m), self.sc.base).read_bytes() for m in REGEN}


@pytest.fixture(scope="module")
def regen(tmp_path_factory: pytest.TempPathFactory) -> Regen:
    sc = build_edge_case(tmp_path_factory.mktemp("regen") / "upstream")
    make_project(
        sc.repo, {dev(m): {"base": sc.base, "current": sc.current, "mode": m} for m in REGEN}
    )
    proc = doit(sc.repo, *[f"format_patch:{dev(m)}" for m in REGEN])
    assert proc.returncode == 0, describe(proc)
    return Regen(sc, {m: patch_file(sc.repo, dev(m), sc.base).read_bytes() for m in REGEN})


def bytes_diff(a: bytes, b: bytes) -> str:
    """The first lines where two patches differ, as a unified diff."""
    lines = difflib.unified_diff(
        a.decode("utf-8", "replace").splitlines(True),
        b.decode("utf-8", "replace").splitlines(True),
        "first",
        "again",
        n=1,
    )
    return "".join(list(lines)[:40])


def test_regenerating_gives_identical_bytes(regen: Regen) -> None:
    later = {
        "GIT_COMMITTER_DATE": "2031-02-03T04:05:06 +0900",
        "GIT_COMMITTER_NAME": "Someone Else",
        "TZ": "Asia/Tokyo",
    }
    again = regen.regenerate(later)
    for mode in REGEN:
        assert again[mode] == regen.first[mode], bytes_diff(regen.first[mode], again[mode])


def test_user_git_config_does_not_change_patch_bytes(regen: Regen) -> None:
    home = hostile_home(regen.sc.repo.parent, HOSTILE_FORMAT_CONFIG)
    again = regen.regenerate({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    for mode in REGEN:
        assert again[mode] == regen.first[mode], (
            f"{mode}: ~/.gitconfig leaked into the patch:\n"
            + (bytes_diff(regen.first[mode], again[mode]))
        )


def test_user_git_config_does_not_fuzz_or_fix_whitespace(tmp_path: Path) -> None:
    sc = build_edge_case(tmp_path / "upstream")
    make_project(
        sc.repo, {dev("series"): {"base": sc.base, "current": sc.current, "mode": "series"}}
    )
    home = hostile_home(tmp_path, HOSTILE_APPLY_CONFIG)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    for task in ("format_patch", "verify", "unpatch"):
        proc = doit(sc.repo, f"{task}:{dev('series')}", env=env)
        assert proc.returncode == 0, describe(proc)
    build = build_tree(sc.repo, dev("series"))
    assert git(build, "rev-parse", "HEAD^{tree}") == tree_of(sc.repo, sc.current)
    assert worktree_mismatches(build, sc.repo, sc.current) == []


def test_verify_compares_trees_not_looks(tmp_path: Path) -> None:
    """A stored patch that applies cleanly but drops trailing whitespace must fail verify,
    even with its metadata made to match."""
    sc = build_edge_case(tmp_path / "upstream")
    device = dev("series")
    make_project(sc.repo, {device: {"base": sc.base, "current": sc.current, "mode": "series"}})
    made = doit(sc.repo, f"format_patch:{device}")
    assert made.returncode == 0, describe(made)
    path = patch_file(sc.repo, device, sc.base)
    data = path.read_bytes()
    assert b"\n+trailing spaces   \n" in data
    path.write_bytes(data.replace(b"\n+trailing spaces   \n", b"\n+trailing spaces\n"))
    meta_path = store_dir(sc.repo, device, sc.base) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["patch_sha256"] = sha256(path.read_bytes())
    meta_path.write_text(json.dumps(meta))
    proc = doit(sc.repo, f"verify:{device}")
    assert proc.returncode == 1, describe(proc)
    assert proc.stderr.strip(), describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr, describe(proc)
