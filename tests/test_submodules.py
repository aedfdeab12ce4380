"""Submodule adaptations: a vendor's commits inside a submodule of the upstream are stored as a
patch of their own next to the superproject's, and a user's build makes them again, over the
objects of the user's own copy of the submodule, without the network.

The upstream ("FlagScale") has two submodules made from local repositories, third_party/sub
and third_party/other. The vendor's A_X100 commits twice inside third_party/sub (a change, then
a rename and a binary file) and moves its gitlink; B_Y100 (a hetero combo with A_X100) changes
both submodules. The user's checkout is a fresh clone of the upstream whose submodules come from
the original repositories, so it has never seen a vendor's commit; the original repositories
are moved away once every checkout has its copies, so that nothing can fetch from them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from fixtures import (
    NAME,
    clean_env,
    describe,
    doit_ok,
    executed,
    flagtasks,
    flagtasks_fails,
    flagtasks_ok,
    git,
    rev,
    up_to_date,
)
from repos import (
    BINARY_NEW,
    DODO,
    EXCLUDES,
    OLD_NAME_PY,
    VENDOR,
    Content,
    commit,
    init_repo,
    ls_tree,
    own_objects,
    sha256,
    tree_of,
    write,
    write_config,
)

A, B = "A_X100", "B_Y100"
R = "R_R100"  # a device whose adaptation is refused: nothing of it may be written
SUB, OTHER = "third_party/sub", "third_party/other"
FILE_PROTOCOL = ("-c", "protocol.file.allow=always")
GITLINK = "160000"

SUB_BASE = {"core.py": "X = 1\n", "old.py": OLD_NAME_PY, "README": "the backend\n"}
OTHER_BASE = {"lib.txt": "other lib\n"}
A_SUB_COMMITS = [
    ("sub: tune core for the X100", {"core.py": "X = 2  # vendor\n"}),
    ("sub: rename old.py, add a kernel", {"old.py": None, "new.py": OLD_NAME_PY,
                                          "kernel.bin": BINARY_NEW}),
]  # fmt: skip
A_FILES = {"README.md": "# FlagScale\n\nAdapted for the X100.\n"}
B_SUB_COMMITS = [("sub: tune core for the Y100", {"core.py": "X = 1\nY = 100\n"})]
B_OTHER_COMMITS = [("other: Y100 lib", {"lib.txt": "other lib, Y100\n", "y.txt": "y\n"})]
B_FILES = {"b.txt": "B adaptation\n"}


# --------------------------------------------------------------------------- helpers


def sub_patch_name(base8: str, path: str, encrypted: bool = False) -> str:
    return f"{base8}.{quote(path, safe='')}.patch" + (".encrypted" if encrypted else "")


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def has_object(repo: Path, sha: str) -> bool:
    proc = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "-e", sha], env=clean_env(), capture_output=True
    )
    return proc.returncode == 0


def alternates_of(objects: Path, depth: int = 5) -> set[Path]:
    """Every object folder `objects` borrows from, directly or through others."""
    found: set[Path] = set()
    file = objects / "info" / "alternates"
    if depth == 0 or not file.is_file():
        return found
    for line in file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            other = (objects / line.strip()).resolve()
            found |= {other} | alternates_of(other, depth - 1)
    return found


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, describe(proc)
    return proc


def exclude(repo: Path, *more: str) -> None:
    """The tool's outputs (and `more`) ignored in a clone, as init_repo does for its repos."""
    (repo / ".git" / "info" / "exclude").write_text(
        "".join(f"{line}\n" for line in (*EXCLUDES, *more))
    )


def origin(path: Path, msg: str, files: Mapping[str, Content]) -> Path:
    init_repo(path)
    commit(path, msg, files)
    return path


def clone(src: Path, dest: Path, *, init: bool = True, recursive: bool = False) -> Path:
    """A clone of `src` at `dest`, with its submodules initialized from their URLs (`init`)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(dest.parent, "clone", "-q", str(src), str(dest))
    exclude(dest)
    if init:
        extra = ("--recursive",) if recursive else ()
        git(dest, *FILE_PROTOCOL, "submodule", "update", "-q", "--init", *extra)
    return dest


def upstream(root: Path) -> Path:
    """The upstream superproject: a README and two submodules from local repositories, v1.0."""
    sub = origin(root / "origins" / "sub", "sub: first", SUB_BASE)
    other = origin(root / "origins" / "other", "other: first", OTHER_BASE)
    project = init_repo(root / "upstream")
    commit(project, "upstream", {"README.md": "# FlagScale\n"})
    git(project, *FILE_PROTOCOL, "submodule", "add", "-q", str(sub), SUB)
    git(project, *FILE_PROTOCOL, "submodule", "add", "-q", str(other), OTHER)
    commit(project, "add the backends as submodules")
    git(project, "tag", "v1.0")
    return project


def vendor_branch(
    project: Path,
    branch: str,
    subs: Mapping[str, Sequence[tuple[str, Mapping[str, Content]]]],
    files: Mapping[str, Content] | None = None,
    *,
    start: str = "v1.0",
    msg: str | None = None,
) -> dict[str, str]:
    """A vendor branch from `start`: commits inside each submodule of `subs` (kept on a branch
    `branch` there too), then one superproject commit moving their gitlinks (and `files`).
    Returns each submodule's new commit; the checkout stays on `branch`."""
    git(project, "checkout", "-q", "-B", branch, start)
    git(project, *FILE_PROTOCOL, "submodule", "update", "-q")
    heads = {}
    for path, commits in subs.items():
        inner = project / path
        for subject, content in commits:
            commit(inner, subject, content, author=VENDOR)
        git(inner, "branch", "-q", "-f", branch)
        git(project, "add", path)
        heads[path] = rev(inner, "HEAD")
    commit(project, msg or f"{branch}: adapt and move the backends", files, author=VENDOR)
    return heads


def checkout(project: Path, branch: str) -> None:
    git(project, "checkout", "-q", branch)
    git(project, *FILE_PROTOCOL, "submodule", "update", "-q")


def patch(*devices: str, current: str, extra: Sequence[str] = ()) -> list[str]:
    return ["patch", "--device-type", *devices, "--base-commit-id", "v1.0",
            "--current-commit-id", current, *extra]  # fmt: skip


def unpatch(base8: str, *devices: str, folder: str | None = "build") -> list[str]:
    where = ["--dir", folder] if folder else []
    return ["unpatch", "--device-type", *devices, "--commit-id", base8, *where]


def copy(checkout_: Path, parent: Path, *, build: bool = False) -> Path:
    """A copy of a checkout at `parent`/FlagScale; without `build`, none of the tool's state
    (build/, .flagtasks/, doit's files) comes along."""
    skipped = {".flagtasks", "build"} if not build else set()

    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder) != checkout_:
            return set()
        return {n for n in names if n in skipped or (not build and n.startswith(".doit"))}

    dest = parent / NAME
    shutil.copytree(checkout_, dest, symlinks=True, ignore=ignore)
    return dest


def entries(repo: Path, spec: str) -> dict[str, tuple[str, str]]:
    return {e.path: (e.mode, e.sha) for e in ls_tree(repo, spec)}


def submodule_status(tree: Path) -> dict[str, str]:
    """`git submodule status` per path: the line as git prints it."""
    out = git(tree, "submodule", "status")
    return {line[1:].split()[1]: line for line in out.splitlines() if line.strip()}


def assert_built(
    tree: Path, vendor: Path, branch: str, changed: Mapping[str, str], kept: Mapping[str, str]
) -> None:
    """`tree` is the vendor's `branch` rebuilt: every superproject entry equal but the gitlinks
    of `changed` (path -> the vendor's submodule commit), which point at commits of the
    built submodule whose files are the vendor's; the submodules of `kept` (path -> commit)
    checked out at their gitlink. Every submodule shows as clean (' ') and nothing differs."""
    want, got = entries(vendor, branch), entries(tree, "HEAD")
    for path in changed:
        assert got[path][0] == GITLINK, (path, got.get(path))
        want.pop(path)
        got.pop(path)
    assert got == want
    status = submodule_status(tree)
    for path, vendor_head in changed.items():
        inner = tree / path
        assert (inner / ".git").is_dir(), f"{path} is not a repository of its own"
        head = rev(inner, "HEAD")
        assert rev(tree, f"HEAD:{path}") == head
        assert tree_of(inner, "HEAD") == tree_of(vendor / path, vendor_head)
        assert git(inner, "status", "--porcelain", "--untracked-files=all") == ""
        assert status[path].startswith(f" {head} {path}"), status
    for path, sha in kept.items():
        assert rev(tree, f"HEAD:{path}") == sha
        assert rev(tree / path, "HEAD") == sha
        assert status[path].startswith(f" {sha} {path}"), status
    assert git(tree, "status", "--porcelain", "--untracked-files=all") == ""


# --------------------------------------------------------------------------- the project


@dataclass
class World:
    root: Path
    upstream: Path
    vendor: Path
    user: Path
    base8: str
    links: dict[str, str]  # the gitlinks at v1.0
    a_heads: dict[str, str]  # the vendor's submodule commits of A_X100
    b_heads: dict[str, str]
    patched: list[subprocess.CompletedProcess[str]]
    built: subprocess.CompletedProcess[str]  # the user's `unpatch A_X100 --dir build`

    @property
    def a_store(self) -> Path:
        return self.vendor / "hardware" / A / self.base8

    @property
    def b_store(self) -> Path:
        return self.vendor / "hardware" / B / self.base8

    def user_copy(self, parent: Path, *, store: bool = True) -> Path:
        """A fresh clone-like copy of the user's checkout (no build, no tool state)."""
        dest = copy(self.user, parent)
        if not store:
            shutil.rmtree(dest / "hardware", ignore_errors=True)
        return dest


def make_user(upstream_: Path, vendor: Path, dest: Path, *, init: bool = True) -> Path:
    """A user: a fresh clone of the upstream (main and v1.0 only; submodules from the original
    repositories unless not `init`), the vendor's hardware/ copied in, dodo.py and a
    config.toml without vendors."""
    user = clone(upstream_, dest, init=init)
    exclude(user, "/hardware/")
    if (vendor / "hardware").is_dir():
        shutil.copytree(vendor / "hardware", user / "hardware")
    (user / "dodo.py").write_text(DODO)
    write_config(user, {})
    return user


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("submodules")
    up = upstream(root)
    links = {SUB: rev(up, f"v1.0:{SUB}"), OTHER: rev(up, f"v1.0:{OTHER}")}
    vendor = clone(up, root / "vendor" / NAME)
    a_heads = vendor_branch(vendor, "vendor-a", {SUB: A_SUB_COMMITS}, A_FILES,
                            msg="A_X100: adapt and move the backend")  # fmt: skip
    b_heads = vendor_branch(vendor, "vendor-b", {OTHER: B_OTHER_COMMITS, SUB: B_SUB_COMMITS},
                            B_FILES, msg="B_Y100: adapt both backends")  # fmt: skip
    checkout(vendor, "vendor-a")
    assert git(vendor, "diff", "--name-only", "v1.0", "vendor-a").split() == ["README.md", SUB]
    (vendor / "dodo.py").write_text(DODO)
    write_config(
        vendor,
        {
            A: {"base": "v1.0", "current": "vendor-a"},
            B: {"base": "v1.0", "current": "vendor-b"},
        },
    )
    patched = [
        flagtasks(vendor, *patch(A, current="vendor-a")),
        flagtasks(vendor, *patch(A, B, current="vendor-b")),
    ]
    user = make_user(up, vendor, root / "user" / NAME)
    assert not has_object(user / SUB, a_heads[SUB]), "fixture broken: the user has it already"
    (root / "origins").rename(root / "origins-gone")  # nothing may fetch from them now
    base8 = rev(up, "v1.0")[:8]
    built = flagtasks(user, *unpatch(base8, A))
    return World(root, up, vendor, user, base8, links, a_heads, b_heads, patched, built)


@pytest.fixture(scope="module")
def hetero(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A copy of the user's checkout where `unpatch A_X100 B_Y100 --dir build` ran."""
    user = world.user_copy(tmp_path_factory.mktemp("hetero"))
    return user, flagtasks(user, *unpatch(world.base8, A, B))


# --------------------------------------------------------------------------- the vendor's store


def test_patch_writes_a_patch_per_changed_submodule(world: World) -> None:
    for proc in world.patched:
        ok(proc)
        assert "uncommitted" not in (proc.stdout + proc.stderr).lower(), describe(proc)
    b8 = world.base8
    assert listing(world.a_store) == sorted([f"{b8}.patch", sub_patch_name(b8, SUB), "meta.json"])
    assert sub_patch_name(b8, SUB) == f"{b8}.third_party%2Fsub.patch"
    upper = (world.a_store / f"{b8}.patch").read_text()
    assert f"+Subproject commit {world.a_heads[SUB]}" in upper
    assert f"-Subproject commit {world.links[SUB]}" in upper
    inner = (world.a_store / sub_patch_name(b8, SUB)).read_text()
    for subject, _files in A_SUB_COMMITS:
        assert subject in inner
        assert subject not in upper
    assert "rename from old.py" in inner and "rename to new.py" in inner
    assert "GIT binary patch" in inner


def test_meta_lists_each_submodule(world: World) -> None:
    ok(world.patched[0])
    meta = json.loads((world.a_store / "meta.json").read_text())
    inner = world.vendor / SUB
    head = world.a_heads[SUB]
    assert meta["submodules"] == [
        {
            "path": SUB,
            "url": str(world.root / "origins" / "sub"),
            "base": world.links[SUB],
            "current": head,
            "tree": tree_of(inner, head),
            "mode": "series",
            "commits": 2,
            "patch_sha256": sha256((world.a_store / sub_patch_name(world.base8, SUB)).read_bytes()),
        }
    ]
    assert meta["current"] == rev(world.vendor, "vendor-a")


def test_two_submodules_at_once_are_both_stored(world: World) -> None:
    ok(world.patched[1])
    b8 = world.base8
    assert listing(world.b_store) == sorted(
        [f"{b8}.patch", sub_patch_name(b8, OTHER), sub_patch_name(b8, SUB), "meta.json"]
    )
    meta = json.loads((world.b_store / "meta.json").read_text())
    found = [(s["path"], s["current"], s["commits"]) for s in meta["submodules"]]
    assert found == [(OTHER, world.b_heads[OTHER], 1), (SUB, world.b_heads[SUB], 1)]
    assert (world.vendor / "hardware" / "hetero.txt").read_text() == f"{b8}: {A} {B}\n"


def test_patch_is_deterministic_again_and_from_a_fresh_clone(world: World, tmp_path: Path) -> None:
    ok(world.patched[0])
    stored = {p.name: p.read_bytes() for p in world.a_store.iterdir()}
    again = copy(world.vendor, tmp_path / "again")
    flagtasks_ok(again, *patch(A, current="vendor-a"))
    assert {p.name: p.read_bytes() for p in (again / "hardware" / A / world.base8).iterdir()} == (
        stored
    )

    # a fresh clone of the vendor's repository, its submodules from the vendor's own copies
    fresh = clone(world.vendor, tmp_path / "fresh" / NAME, init=False)
    git(fresh, "submodule", "init", "-q")
    for path in (SUB, OTHER):
        url = str(world.vendor / ".git" / "modules" / path)
        git(fresh, "config", f"submodule.{path}.url", url)
    git(fresh, *FILE_PROTOCOL, "submodule", "update", "-q")
    assert git(fresh, "symbolic-ref", "--short", "HEAD") == "vendor-a"
    flagtasks_ok(fresh, *patch(A, current="vendor-a"))
    folder = fresh / "hardware" / A / world.base8
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == stored


def test_local_changes_in_the_submodule_get_a_note(world: World, tmp_path: Path) -> None:
    ok(world.patched[0])
    vendor = copy(world.vendor, tmp_path)
    write(vendor / SUB, {"core.py": "X = 99  # not committed\n", "scratch.txt": "untracked\n"})
    proc = flagtasks_ok(vendor, *patch(A, current="vendor-a"))
    lines = (proc.stdout + proc.stderr).splitlines()
    said = [line for line in lines if "uncommitted" in line.replace(str(tmp_path), "")]
    assert len(said) == 1 and SUB in said[0], describe(proc)
    folder = vendor / "hardware" / A / world.base8
    stored = {p.name: p.read_bytes() for p in world.a_store.iterdir()}
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == stored
    assert (vendor / SUB / "core.py").read_text() == "X = 99  # not committed\n"


def test_no_submodule_change_stores_as_before_and_a_seed_store_builds(
    world: World, tmp_path: Path
) -> None:
    """An adaptation that leaves the submodules alone: no submodule patch, no "submodules"
    key; the same patch alone (FlagScale's own store layout) builds."""
    vendor = copy(world.vendor, tmp_path / "vendor")
    vendor_branch(vendor, "vendor-plain", {}, {"README.md": "# FlagScale\n\nplain\n"})
    checkout(vendor, "vendor-a")
    flagtasks_ok(vendor, *patch(R, current="vendor-plain"))
    folder = vendor / "hardware" / R / world.base8
    assert listing(folder) == [f"{world.base8}.patch", "meta.json"]
    assert "submodules" not in json.loads((folder / "meta.json").read_text())

    user = world.user_copy(tmp_path / "user")
    seed = user / "hardware" / R / world.base8
    seed.mkdir(parents=True)
    shutil.copy(folder / f"{world.base8}.patch", seed)
    flagtasks_ok(user, *unpatch(world.base8, R))
    tree = user / "build" / R / NAME
    assert tree_of(tree, "HEAD") == tree_of(vendor, "vendor-plain")


def test_removing_a_submodule_is_supported(world: World, tmp_path: Path) -> None:
    vendor = copy(world.vendor, tmp_path)
    git(vendor, "checkout", "-q", "-B", "vendor-rm", "v1.0")
    git(vendor, *FILE_PROTOCOL, "submodule", "update", "-q")
    git(vendor, "rm", "-q", OTHER)
    commit(vendor, "R_R100: drop the other backend", author=VENDOR)
    flagtasks_ok(vendor, *patch(R, current="vendor-rm"))
    folder = vendor / "hardware" / R / world.base8
    assert listing(folder) == [f"{world.base8}.patch", "meta.json"]
    flagtasks_ok(vendor, *unpatch(world.base8, R))
    tree = vendor / "build" / R / NAME
    assert tree_of(tree, "HEAD") == tree_of(vendor, "vendor-rm")
    assert not (tree / OTHER).exists()
    assert_built(tree, vendor, "vendor-rm", {}, {SUB: world.links[SUB]})


# --------------------------------------------------------------------------- refused


def _refused(project: Path, current: str, says: Sequence[str]) -> None:
    flagtasks_fails(project, 2, *patch(R, current=current), says=says)
    assert not (project / "hardware" / R).exists()


def test_a_submodule_the_range_adds_is_refused(world: World, tmp_path: Path) -> None:
    vendor = copy(world.vendor, tmp_path / "vendor")
    new = origin(tmp_path / "new", "new: first", {"n.txt": "n\n"})
    git(vendor, "checkout", "-q", "-B", "vendor-add", "v1.0")
    git(vendor, *FILE_PROTOCOL, "submodule", "update", "-q")
    git(vendor, *FILE_PROTOCOL, "submodule", "add", "-q", str(new), "third_party/new")
    commit(vendor, "R_R100: add a backend", author=VENDOR)
    _refused(vendor, "vendor-add", ["third_party/new"])


def test_a_gitlink_that_is_not_a_descendant_is_refused(world: World, tmp_path: Path) -> None:
    vendor = copy(world.vendor, tmp_path)
    git(vendor, "checkout", "-q", "-B", "vendor-lone", "v1.0")
    git(vendor, *FILE_PROTOCOL, "submodule", "update", "-q")
    git(vendor / SUB, "checkout", "-q", "--orphan", "lone")
    lone = commit(vendor / SUB, "sub: unrelated history", {"core.py": "X = 5\n"}, author=VENDOR)
    assert git(vendor / SUB, "rev-list", "--count", lone) == "1"
    git(vendor, "add", SUB)
    commit(vendor, "R_R100: an unrelated backend", author=VENDOR)
    _refused(vendor, "vendor-lone", [SUB])


def test_a_moved_nested_submodule_is_refused(tmp_path: Path) -> None:
    deep = origin(tmp_path / "o" / "deep", "deep: first", {"d.txt": "deep\n"})
    mid = origin(tmp_path / "o" / "mid", "mid: first", {"m.txt": "mid\n"})
    git(mid, *FILE_PROTOCOL, "submodule", "add", "-q", str(deep), "deep")
    commit(mid, "mid: add deep")
    top = origin(tmp_path / "top", "upstream", {"README.md": "# FlagScale\n"})
    git(top, *FILE_PROTOCOL, "submodule", "add", "-q", str(mid), "third_party/mid")
    commit(top, "add mid")
    git(top, "tag", "v1.0")
    vendor = clone(top, tmp_path / "vendor" / NAME, recursive=True)
    git(vendor, "checkout", "-q", "-b", "vendor")
    inner = vendor / "third_party" / "mid"
    commit(inner / "deep", "deep: vendor", {"d.txt": "deep, vendor\n"}, author=VENDOR)
    commit(inner, "mid: move deep", {"m.txt": "mid, vendor\n"}, author=VENDOR)
    commit(vendor, "move mid", author=VENDOR)
    assert git(vendor, "diff", "--name-only", "v1.0", "vendor") == "third_party/mid"
    _refused(vendor, "vendor", ["third_party/mid", "deep"])


@pytest.mark.parametrize("how", ["never initialized", "module folder deleted"])
def test_a_gitlink_missing_from_the_vendors_copy_is_refused(
    world: World, tmp_path: Path, how: str
) -> None:
    if how == "never initialized":
        vendor = clone(world.vendor, tmp_path / NAME, init=False)
        assert git(vendor, "symbolic-ref", "--short", "HEAD") == "vendor-a"
    else:
        vendor = copy(world.vendor, tmp_path)
        shutil.rmtree(vendor / ".git" / "modules" / SUB)
    _refused(vendor, "vendor-a", [SUB])


# --------------------------------------------------------------------------- verify


def test_verify_passes_on_both_sides(world: World) -> None:
    ok(world.patched[1])
    flagtasks_ok(world.vendor, "verify")
    flagtasks_ok(world.user, "verify")
    doit_ok(world.user, "verify")


TAMPERS = pytest.mark.parametrize(
    ("old", "new"),
    [(b"+X = 2  # vendor", b"+X = 3  # vendor"), (b"-X = 1\n", b"-X = 9\n")],
    ids=["still applies", "does not apply"],
)


def _tamper(project: Path, base8: str, old: bytes, new: bytes) -> tuple[Path, bytes]:
    path = project / "hardware" / A / base8 / sub_patch_name(base8, SUB)
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    return path, data


@TAMPERS
def test_a_tampered_submodule_patch_fails_the_users_verify(
    world: World, tmp_path: Path, old: bytes, new: bytes
) -> None:
    """The user's side checks the submodule patch against the metadata (its tree id)."""
    user = world.user_copy(tmp_path)
    flagtasks_ok(user, "verify", "--device-type", A)
    path, _ = _tamper(user, world.base8, old, new)
    flagtasks_fails(user, 1, "verify", "--device-type", A, says=[path.name])


@TAMPERS
def test_a_tampered_submodule_patch_is_caught_on_the_vendors_side(
    world: World, tmp_path: Path, old: bytes, new: bytes
) -> None:
    """The vendor's side checks against current, after a verify that passed: the tampered
    file is either reported (exit 1 naming it) or regenerated from current, as a tampered
    superproject patch is; never left in the store with verify saying nothing."""
    vendor = copy(world.vendor, tmp_path)
    flagtasks_ok(vendor, "verify", "--device-type", A)
    path, good = _tamper(vendor, world.base8, old, new)
    proc = flagtasks(vendor, "verify", "--device-type", A)
    if proc.returncode == 1:
        assert path.name in proc.stderr, describe(proc)
    else:
        assert proc.returncode == 0, describe(proc)
        assert path.read_bytes() == good, f"tampered {path.name} kept\n{describe(proc)}"


def test_verify_without_the_submodule_says_how_to_get_it(world: World, tmp_path: Path) -> None:
    user = make_user(world.upstream, world.vendor, tmp_path / NAME, init=False)
    flagtasks_fails(
        user, 1, "verify", "--device-type", A, says=[f"git submodule update --init {SUB}"]
    )


# --------------------------------------------------------------------------- the user's build


def test_unpatch_rebuilds_the_submodule_commits(world: World) -> None:
    ok(world.built)
    tree = world.user / "build" / A / NAME
    assert_built(tree, world.vendor, "vendor-a", world.a_heads, {OTHER: world.links[OTHER]})
    inner = tree / SUB
    subjects = git(inner, "log", "--format=%s").splitlines()
    assert subjects == [s for s, _ in reversed(A_SUB_COMMITS)] + ["sub: first"]
    assert rev(inner, "HEAD~2") == world.links[SUB]
    assert not (inner / "old.py").exists()
    assert (inner / "kernel.bin").read_bytes() == BINARY_NEW


def test_the_built_submodule_borrows_the_users_objects(world: World) -> None:
    ok(world.built)
    inner = world.user / "build" / A / NAME / SUB
    alternates = inner / ".git" / "objects" / "info" / "alternates"
    assert alternates.is_file() and alternates.read_text().strip()
    borrowed = alternates_of(inner / ".git" / "objects")
    assert (world.user / ".git" / "modules" / SUB / "objects").resolve() in borrowed, borrowed
    assert world.links[SUB] not in own_objects(inner / ".git"), "the base was copied"


def test_a_user_without_the_submodule_gets_no_tree(world: World, tmp_path: Path) -> None:
    user = make_user(world.upstream, world.vendor, tmp_path / NAME, init=False)
    flagtasks_fails(
        user, 1, *unpatch(world.base8, A), says=[SUB, f"git submodule update --init {SUB}"]
    )
    assert not (user / "build" / A / NAME).exists()


def test_status_json_lists_the_submodules(world: World) -> None:
    ok(world.patched[1])
    data = json.loads(flagtasks_ok(world.user, "status", "--json").stdout)
    rows = {(r["device"], r["base8"]): r for r in data["adaptations"]}
    assert rows[(A, world.base8)]["submodules"] == [SUB]
    assert rows[(B, world.base8)]["submodules"] == [OTHER, SUB]


def test_hetero_builds_both_devices(
    world: World, hetero: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    user, proc = hetero
    ok(proc)
    assert_built(user / "build" / A / NAME, world.vendor, "vendor-a", world.a_heads,
                 {OTHER: world.links[OTHER]})  # fmt: skip
    assert_built(user / "build" / B / NAME, world.vendor, "vendor-b", world.b_heads, {})


def test_encrypted_round_trip(world: World, tmp_path: Path) -> None:
    ok(world.patched[0])
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    os.chmod(keys, 0o700)
    vendor = copy(world.vendor, tmp_path / "vendor")
    shutil.rmtree(vendor / "hardware")
    flagtasks_ok(vendor, *patch(A, current="vendor-a", extra=["--key-path", str(keys)]))
    folder = vendor / "hardware" / A / world.base8
    b8 = world.base8
    assert listing(folder) == sorted(
        [f"{b8}.patch.encrypted", sub_patch_name(b8, SUB, encrypted=True), "meta.json"]
    )
    assert list((vendor / "hardware").rglob("*.patch")) == []
    for path in (vendor / "hardware").rglob("*"):
        if path.is_file():
            assert b"sub: tune core" not in path.read_bytes(), path
    plain = json.loads((world.a_store / "meta.json").read_text())["submodules"]
    assert json.loads((folder / "meta.json").read_text())["submodules"] == plain

    user = world.user_copy(tmp_path / "user", store=False)
    shutil.copytree(vendor / "hardware", user / "hardware")
    flagtasks_ok(user, *unpatch(b8, A), "--key-path", str(keys))
    assert_built(user / "build" / A / NAME, world.vendor, "vendor-a", world.a_heads,
                 {OTHER: world.links[OTHER]})  # fmt: skip


def test_switching_encryption_never_leaves_both_files(world: World, tmp_path: Path) -> None:
    """Plain, then encrypted, then plain again over one store: one kind of file at a time."""
    ok(world.patched[0])
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    vendor = copy(world.vendor, tmp_path / "vendor")
    folder = vendor / "hardware" / A / world.base8
    b8 = world.base8
    flagtasks_ok(vendor, *patch(A, current="vendor-a", extra=["--key-path", str(keys)]))
    assert listing(folder) == sorted(
        [f"{b8}.patch.encrypted", sub_patch_name(b8, SUB, encrypted=True), "meta.json"]
    )
    flagtasks_ok(vendor, *patch(A, current="vendor-a"))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        p.name: p.read_bytes() for p in world.a_store.iterdir()
    }


def test_squash_mode_squashes_the_submodule_too(world: World, tmp_path: Path) -> None:
    vendor = copy(world.vendor, tmp_path)
    shutil.rmtree(vendor / "hardware")
    flagtasks_ok(vendor, *patch(A, current="vendor-a", extra=["--mode", "squash"]))
    folder = vendor / "hardware" / A / world.base8
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["mode"] == "squash"
    assert [(s["mode"], s["commits"]) for s in meta["submodules"]] == [("squash", 1)]
    inner = (folder / sub_patch_name(world.base8, SUB)).read_text()
    assert inner.count("\nSubject: ") == 1
    flagtasks_ok(vendor, *unpatch(world.base8, A))
    tree = vendor / "build" / A / NAME
    assert_built(tree, vendor, "vendor-a", world.a_heads, {OTHER: world.links[OTHER]})
    assert git(tree / SUB, "rev-list", "--count", f"{world.links[SUB]}..HEAD") == "1"


def test_commit_flag_commits_the_submodule_patches(world: World, tmp_path: Path) -> None:
    vendor = copy(world.vendor, tmp_path)
    shutil.rmtree(vendor / "hardware")
    flagtasks_ok(vendor, *patch(A, current="vendor-a", extra=["--commit"]))
    shown = git(vendor, "show", "--name-only", "--format=", "HEAD").splitlines()
    where = f"hardware/{A}/{world.base8}"
    assert sorted(shown) == sorted(
        [f"{where}/{world.base8}.patch", f"{where}/{sub_patch_name(world.base8, SUB)}",
         f"{where}/meta.json"]
    )  # fmt: skip


def _tree_state(tree: Path) -> tuple[object, ...]:
    return (
        tree.stat().st_ino,
        rev(tree, "HEAD"),
        (tree / "README.md").stat().st_mtime_ns,
        rev(tree / SUB, "HEAD"),
        (tree / SUB / "core.py").stat().st_mtime_ns,
    )


def test_doit_rebuilds_only_what_changed(world: World, tmp_path: Path) -> None:
    ok(world.patched[1])
    user = world.user_copy(tmp_path / "user")
    first = doit_ok(user, "unpatch")
    assert {f"unpatch:{A}", f"unpatch:{B}"} <= set(executed(first)), describe(first)
    tree_a, tree_b = user / "build" / A / NAME, user / "build" / B / NAME
    assert_built(tree_a, world.vendor, "vendor-a", world.a_heads, {OTHER: world.links[OTHER]})
    assert_built(tree_b, world.vendor, "vendor-b", world.b_heads, {})
    again = doit_ok(user, "unpatch")
    assert executed(again) == [], describe(again)
    assert {f"unpatch:{A}", f"unpatch:{B}"} <= set(up_to_date(again)), describe(again)

    # the vendor commits once more inside the submodule and regenerates A_X100 only
    vendor = copy(world.vendor, tmp_path / "vendor")
    more = commit(vendor / SUB, "sub: more tuning", {"core.py": "X = 3\n"}, author=VENDOR)
    git(vendor / SUB, "branch", "-q", "-f", "vendor-a")
    git(vendor, "add", SUB)
    commit(vendor, "A_X100: move the backend again", author=VENDOR)
    flagtasks_ok(vendor, *patch(A, current="vendor-a"))
    shutil.rmtree(user / "hardware" / A)
    shutil.copytree(vendor / "hardware" / A, user / "hardware" / A)

    untouched = _tree_state(tree_b)
    third = doit_ok(user, "unpatch")
    assert f"unpatch:{A}" in executed(third), describe(third)
    assert not [task for task in executed(third) if B in task], describe(third)
    assert _tree_state(tree_b) == untouched
    assert_built(tree_a, vendor, "vendor-a", {SUB: more}, {OTHER: world.links[OTHER]})
    assert git(tree_a / SUB, "log", "-1", "--format=%s") == "sub: more tuning"
    last = doit_ok(user, f"unpatch:{A}")
    assert executed(last) == [] and f"unpatch:{A}" in up_to_date(last), describe(last)


def test_unpatch_in_place_moves_the_submodule_too(world: World, tmp_path: Path) -> None:
    user = world.user_copy(tmp_path)
    assert git(user, "status", "--porcelain") == ""
    proc = flagtasks_ok(user, *unpatch(world.base8, A, folder=None))
    assert git(user, "symbolic-ref", "--short", "HEAD") == f"flagtasks/{A}/{world.base8}"
    seen = f"{describe(proc)}\n$ git submodule status\n{git(user, 'submodule', 'status')}"
    assert git(user, "status", "--porcelain") == "", seen
    head = rev(user / SUB, "HEAD")
    assert rev(user, f"HEAD:{SUB}") == head
    assert tree_of(user / SUB, "HEAD") == tree_of(world.vendor / SUB, world.a_heads[SUB])
    assert submodule_status(user)[SUB].startswith(f" {head} {SUB}")
