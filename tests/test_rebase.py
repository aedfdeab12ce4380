"""`flagtasks rebase`: a stored adaptation carried onto a newer upstream commit with git's own
three-way machinery, and `rebase --check`, the forecast for every stored device.

One small upstream (tag v1.0) with a vendor branch of three commits (a.py, b.py, then c.py and
a binary file) and one upstream branch per case: unrelated changes, b.py shifted by lines on
top, a context line of commit 2 changed, a.py renamed, the lines of commits 2 and 3 changed,
c.py deleted. A_X100 and B_Y100 (a hetero combo) are stored plain, E_K300 encrypted. Every
result is held against what git itself gives by hand: `git am -3` of the vendor's
`git format-patch v1.0..vendor` in a separate clone of the upstream.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures import (
    copy_of,
    flagtasks,
    flagtasks_fails,
    flagtasks_ok,
    git,
    git_raw,
    holding_lock,
    rev,
)
from repos import (
    Frozen,
    build_tree,
    commit,
    files_state,
    init_repo,
    settle_index,
    snapshot,
    snapshot_diff,
    tree_of,
    worktree_mismatches,
    write,
)

DEV, HET, ENC = "A_X100", "B_Y100", "E_K300"
VENDOR = "vendor"
SUBJECTS = ("vendor: edit a.py", "vendor: edit b.py", "vendor: edit c.py and add a binary file")
BLOB = bytes(range(256)) * 3 + b"\x00\xff\r\n" * 8
SECRET = b"b line 10, the vendor's"  # a line of the vendor's adaptation, never plaintext in store


def _text(name: str, changed: dict[int, str] | None = None, top: int = 0) -> str:
    """A 20-line file `name`, lines replaced by `changed`, `top` new lines in front."""
    lines = [f"{name} line {i}" for i in range(1, 21)]
    for number, line in (changed or {}).items():
        lines[number - 1] = line
    return "".join(f"upstream header {i}\n" for i in range(top)) + "".join(
        f"{line}\n" for line in lines
    )


@dataclass(frozen=True)
class Case:
    """An upstream branch off v1.0 and what replaying the vendor's series onto it gives."""

    changes: dict[str, str | None]
    result: str  # clean, three-way or conflict
    commits: tuple[int, ...] = ()  # the commits merged three-way, or that conflict
    lines: tuple[str, ...] = ()  # the conflict lines rebase prints
    rename: tuple[str, str] | None = None


CASES = {
    "plain": Case({"README.md": "readme, newer\n", "docs/new.md": "an upstream page\n"}, "clean"),
    # git apply finds a hunk at an offset: lines added on top need no three-way merge
    "offset": Case({"b.py": _text("b", top=10)}, "clean"),
    # a context line of commit 2's hunk changed (not its line): only the merge moves it
    "near": Case({"b.py": _text("b", {8: "b line 8, changed upstream"})}, "three-way", (2,)),
    "rename": Case({}, "three-way", (1,), rename=("a.py", "a_renamed.py")),
    "conflict": Case(
        {
            "b.py": _text("b", {10: "b line 10, upstream's"}),
            "c.py": _text("c", {10: "c line 10, upstream's"}),
        },
        "conflict",
        (2, 3),
        (
            f"  commit 2/3 {SUBJECTS[1]!r}: b.py (lines 10-14)",
            f"  commit 3/3 {SUBJECTS[2]!r}: c.py (lines 10-14)",
        ),
    ),
    "deleted": Case(
        {"c.py": None},
        "conflict",
        (3,),
        (f"  commit 3/3 {SUBJECTS[2]!r}: c.py (deleted upstream, changed by the commit)",),
    ),
}
CLEAN = [name for name, case in CASES.items() if case.result != "conflict"]
CONFLICTS = [name for name, case in CASES.items() if case.result == "conflict"]


@dataclass(frozen=True)
class World:
    repo: Path  # the upstream checkout with the store, HEAD on main (= v1.0)
    keys: Path  # E_K300's key folder, outside the checkout
    old: str  # full sha of v1.0
    revs: dict[str, str]  # case -> full sha of its upstream branch

    @property
    def old8(self) -> str:
        return self.old[:8]


def _build_world(root: Path) -> World:
    repo = init_repo(root / "FlagScale")
    commit(
        repo,
        "Upstream v1.0",
        {
            "README.md": "readme\n",
            "a.py": _text("a"),
            "b.py": _text("b"),
            "c.py": _text("c"),
        },
    )
    git(repo, "tag", "v1.0")
    git(repo, "checkout", "-q", "-b", VENDOR)
    commit(repo, SUBJECTS[0], {"a.py": _text("a", {10: "a line 10, the vendor's"})})
    commit(repo, SUBJECTS[1], {"b.py": _text("b", {10: SECRET.decode()})})
    commit(
        repo,
        SUBJECTS[2],
        {"c.py": _text("c", {10: "c line 10, the vendor's"}), "assets/kernel.bin": BLOB},
    )
    git(repo, "checkout", "-q", "-b", "vendor-b", "v1.0")
    commit(repo, "vendor-b: add the Y100 backend", {"b_y100.py": "Y100 = True\n"})
    revs = {}
    for name, case in CASES.items():
        git(repo, "checkout", "-q", "-b", f"up/{name}", "v1.0")
        if case.rename:
            git(repo, "mv", *case.rename)
        revs[name] = commit(repo, f"upstream: {name}", case.changes)
    git(repo, "checkout", "-q", "main")
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    on_v1 = ("--base-commit-id", "v1.0", "--current-commit-id")
    flagtasks_ok(repo, "patch", "--device-type", DEV, *on_v1, VENDOR)
    flagtasks_ok(repo, "patch", "--device-type", DEV, HET, *on_v1, "vendor-b")
    flagtasks_ok(repo, "patch", "--device-type", ENC, *on_v1, VENDOR, "--key-path", str(keys))
    settle_index(repo)
    return World(repo, keys, rev(repo, "v1.0"), revs)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return _build_world(tmp_path_factory.mktemp("rebase-world"))


@pytest.fixture
def project(world: World, tmp_path: Path) -> Path:
    """A private copy of the checkout, for a test that writes."""
    return copy_of(world.repo, tmp_path)


@pytest.fixture
def busy(project: Path) -> Path:
    """The copy with a user's work in it: on their own branch with a local commit, a staged
    and an unstaged edit, a stash, an untracked file; the index settled."""
    git(project, "checkout", "-q", "-b", "mine")
    commit(project, "mine: notes", {"notes/mine.md": "my notes\n"})
    write(project, {"a.py": "stashed work\n"})
    git(project, "stash", "-q")
    write(project, {"README.md": "staged work\n"})
    git(project, "add", "README.md")
    write(project, {"c.py": "unstaged work\n", "scratch.txt": "untracked\n"})
    settle_index(project)
    return project


# --------------------------------------------------------------------------- git by hand


@dataclass(frozen=True)
class ByHand:
    """`git checkout REV && git am -3 <format-patch v1.0..vendor>` in a separate clone."""

    clone: Path
    merged: tuple[int, ...]  # the patches git said it fell back to the three-way merge for
    stopped: int | None  # the patch `git am` stopped at, when it did


_BY_HAND: dict[tuple[Path, str], ByHand] = {}


def _by_hand(world: World, case: str) -> ByHand:
    if (world.repo, case) not in _BY_HAND:
        clone = world.repo.parent / f"by-hand-{case}"
        git(world.repo.parent, "clone", "-q", "--no-checkout", str(world.repo), str(clone))
        git(clone, "checkout", "-q", "--detach", world.revs[case])
        mbox = git_raw(world.repo, "format-patch", "--stdout", "--binary", "v1.0..vendor")
        out = git_raw(clone, "am", "-3", "--keep-cr", input=mbox, check=False).decode()
        merged, number = [], 0
        for line in out.splitlines():
            if line.startswith("Applying: "):
                number += 1
            elif line.startswith("Falling back to patching base and 3-way merge"):
                merged.append(number)
        session = clone / ".git" / "rebase-apply"
        stopped = int((session / "next").read_text()) if session.exists() else None
        _BY_HAND[world.repo, case] = ByHand(clone, tuple(merged), stopped)
    return _BY_HAND[world.repo, case]


def test_the_cases_are_what_git_by_hand_says(world: World) -> None:
    """The histories are built right: git itself merges three-way exactly the commits each
    case names, and stops at the first conflict of a conflicting one."""
    for name, case in CASES.items():
        got = _by_hand(world, name)
        if case.result == "conflict":
            assert got.stopped == case.commits[0], (name, got)
        else:
            assert got.stopped is None, (name, got)
            assert got.merged == case.commits, (name, got)
    first = (_by_hand(world, "conflict").clone / "b.py").read_text().splitlines()
    assert first[9].startswith("<<<<<<< ") and first[13].startswith(">>>>>>> "), first


# --------------------------------------------------------------------------- helpers


def _rebase(*more: str, device: str = DEV, old: str = "v1.0") -> list[str]:
    return ["rebase", "--device-type", device, "--base-commit-id", old, "--onto", *more]


def _forecast(project: Path, onto: str, *more: str, code: int = 0) -> dict[str, Any]:
    proc = flagtasks(project, "rebase", "--check", "--onto", onto, "--json", *more, timeout=60)
    assert proc.returncode == code, proc
    return json.loads(proc.stdout)


def _row(document: dict[str, Any], device: str) -> dict[str, Any]:
    rows = [row for row in document["devices"] if row["device"] == device]
    assert len(rows) == 1, document
    return rows[0]


def _folder(project: Path, device: str, sha: str) -> Path:
    return project / "hardware" / device / sha[:8]


def _meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def _said_clean(case: Case) -> str:
    if not case.commits:
        return "every commit applies as it is"
    merged = ", ".join(f"{n} {SUBJECTS[n - 1]!r}" for n in case.commits)
    return f"the three-way merge was needed for commit(s) {merged}"


def _conflict_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("  commit ")]


def _table_rows(stdout: str) -> list[list[str]]:
    """DEVICE, BASE and RESULT of each row of the --check table."""
    return [line.split()[:3] for line in stdout.splitlines()[2:] if not line.startswith("hetero")]


def _store_changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


# --------------------------------------------------------------------------- clean


@pytest.mark.parametrize(
    "case",
    [c if c in ("near", "rename") else pytest.param(c, marks=pytest.mark.slow) for c in CLEAN],
)
def test_a_clean_rebase_stores_what_git_am_three_way_gives(
    world: World, busy: Path, case: str
) -> None:
    """The forecast, the rebase and its verified adaptation on REV8; the old folder, the rest
    of the store and the user's checkout (branch, index, files, stash) stay as they were; the
    tree unpatch builds from it is the one git builds by hand."""
    expected, onto = CASES[case], world.revs[case]
    hardware = busy / "hardware"
    old_folder, new_folder = _folder(busy, DEV, world.old), _folder(busy, DEV, onto)
    store_before, before = files_state(hardware), snapshot(busy)

    row = _row(_forecast(busy, f"up/{case}", "--device-type", DEV), DEV)
    assert (row["base"], row["result"], row["files"]) == (world.old, expected.result, [])
    assert [(c["number"], c["subject"]) for c in row["commits"]] == [
        (n, SUBJECTS[n - 1]) for n in expected.commits
    ]
    assert files_state(hardware) == store_before, "--check wrote to hardware/"

    proc = flagtasks_ok(busy, *_rebase(f"up/{case}"))
    assert f"{DEV} {world.old8} -> {onto[:8]}: 3 commit(s), clean" in proc.stdout, proc.stdout
    assert _said_clean(expected) in proc.stdout, proc.stdout
    assert f"{new_folder / (onto[:8] + '.patch')}: tree matches" in proc.stdout, proc.stdout

    assert snapshot_diff(before, snapshot(busy)) == []
    after = files_state(hardware)
    assert all(p.startswith(f"{DEV}/{onto[:8]}") for p in _store_changes(store_before, after))
    assert sorted(p.name for p in new_folder.iterdir()) == [f"{onto[:8]}.patch", "meta.json"]
    meta, old_meta = _meta(new_folder), _meta(old_folder)
    assert (meta["base"], meta["mode"], meta["encrypted"]) == (onto, old_meta["mode"], False)
    patch = (new_folder / f"{onto[:8]}.patch").read_bytes()
    if expected.rename:
        assert b"diff --git a/a_renamed.py b/a_renamed.py" in patch, patch.decode()
        assert b"a/a.py" not in patch, patch.decode()

    flagtasks_ok(busy, "unpatch", "--device-type", DEV, "--commit-id", onto[:8], "--dir", "build")
    tree, reference = build_tree(busy, DEV), _by_hand(world, case).clone
    assert tree_of(tree, "HEAD") == tree_of(reference, "HEAD")
    assert worktree_mismatches(tree, reference, "HEAD") == []
    assert git(tree, "log", "--format=%s", "-3").splitlines() == list(reversed(SUBJECTS))
    assert rev(tree, "HEAD~3") == onto


def test_rebasing_twice_gives_the_same_bytes(world: World, project: Path) -> None:
    folder = _folder(project, DEV, world.revs["near"])
    flagtasks_ok(project, *_rebase("up/near"))
    first = files_state(folder)
    proc = flagtasks_ok(project, *_rebase("up/near"))
    assert "tree matches" in proc.stdout, proc.stdout
    assert files_state(folder) == first


def test_a_rebase_never_replaces_another_adaptation_on_the_new_base(
    world: World, project: Path
) -> None:
    """The vendor's own adaptation already on REV is work: a rebase onto it is refused."""
    folder = _folder(project, DEV, world.revs["near"])
    flagtasks_ok(project, *_rebase("up/near"))
    meta = _meta(folder)
    meta["current"] = "0" * 40  # another adaptation there, as far as the store says
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    before = files_state(folder)
    flagtasks_fails(project, 2, *_rebase("up/near"), says=["already has another adaptation"])
    assert files_state(folder) == before


def test_rebasing_one_device_of_a_combo_leaves_hetero_txt_as_it_is(
    world: World, project: Path
) -> None:
    hetero = project / "hardware" / "hetero.txt"
    text = hetero.read_bytes()
    assert f"{world.old8}: {DEV} {HET}".encode() in text, text
    for device in (HET, DEV):
        proc = flagtasks_ok(project, *_rebase("up/plain", device=device))
        assert "tree matches" in proc.stdout, proc.stdout
        assert (_folder(project, device, world.revs["plain"]) / "meta.json").is_file()
        assert hetero.read_bytes() == text, device


def test_a_squashed_adaptation_rebases_squashed(world: World, project: Path) -> None:
    """The mode is the old adaptation's: one squashed commit stays one squashed commit."""
    dev, onto = "S_Q100", world.revs["near"]
    flagtasks_ok(project, "patch", "--device-type", dev, "--base-commit-id", "v1.0",
                 "--current-commit-id", VENDOR, "--mode", "squash")  # fmt: skip
    assert _meta(_folder(project, dev, world.old))["mode"] == "squash"
    proc = flagtasks_ok(project, *_rebase("up/near", device=dev))
    assert f"{dev} {world.old8} -> {onto[:8]}: 1 commit(s), clean" in proc.stdout, proc.stdout
    assert "the three-way merge was needed for commit(s) 1 " in proc.stdout, proc.stdout
    meta = _meta(_folder(project, dev, onto))
    assert (meta["base"], meta["mode"], meta["commits"]) == (onto, "squash", 1)
    flagtasks_ok(
        project, "unpatch", "--device-type", dev, "--commit-id", onto[:8], "--dir", "build"
    )
    reference = _by_hand(world, "near").clone
    assert tree_of(build_tree(project, dev), "HEAD") == tree_of(reference, "HEAD")


# --------------------------------------------------------------------------- encrypted


def test_an_encrypted_adaptation_rebases_encrypted_and_stays_put(
    world: World, project: Path
) -> None:
    """Same key: the new folder is encrypted like the old one, no plaintext in hardware/, the
    second rebase leaves the encrypted file as it is, and the key builds git's tree."""
    onto = world.revs["near"]
    old_folder, folder = _folder(project, ENC, world.old), _folder(project, ENC, onto)
    old = files_state(old_folder)
    key = ("--key-path", str(world.keys))
    proc = flagtasks_ok(project, *_rebase("up/near", *key, device=ENC))
    assert _said_clean(CASES["near"]) in proc.stdout, proc.stdout
    assert "tree matches" in proc.stdout, proc.stdout
    sealed = folder / f"{onto[:8]}.patch.encrypted"
    assert sorted(p.name for p in folder.iterdir()) == [sealed.name, "meta.json"]
    meta, old_meta = _meta(folder), _meta(old_folder)
    assert (meta["base"], meta["encrypted"], meta["mode"]) == (onto, True, old_meta["mode"])
    assert files_state(old_folder) == old
    for path in (project / "hardware" / ENC).rglob("*"):
        assert not path.is_file() or SECRET not in path.read_bytes(), path

    data, stat = sealed.read_bytes(), sealed.stat()
    meta_bytes = (folder / "meta.json").read_bytes()
    flagtasks_ok(project, *_rebase("up/near", *key, device=ENC))
    again = sealed.stat()
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), "rewritten"
    assert (sealed.read_bytes(), (folder / "meta.json").read_bytes()) == (data, meta_bytes)

    flagtasks_ok(project, "unpatch", "--device-type", ENC, "--commit-id", onto[:8], *key,
                 "--dir", "build")  # fmt: skip
    reference = _by_hand(world, "near").clone
    assert tree_of(build_tree(project, ENC), "HEAD") == tree_of(reference, "HEAD")


# --------------------------------------------------------------------------- conflicts


@pytest.mark.parametrize("case", CONFLICTS)
def test_a_conflict_writes_nothing_and_names_each_commit_and_file(
    world: World, busy: Path, case: str
) -> None:
    expected, onto = CASES[case], world.revs[case]
    store_before, before = files_state(busy / "hardware"), snapshot(busy)
    row = _row(_forecast(busy, f"up/{case}", "--device-type", DEV, code=1), DEV)
    named = [line.split("': ", 1)[1] for line in expected.lines]
    files = sorted({part.split(" (")[0] for where in named for part in where.split("; ")})
    assert (row["result"], row["files"]) == ("conflict", files), row
    assert [c["number"] for c in row["commits"]] == list(expected.commits), row

    proc = flagtasks(busy, *_rebase(f"up/{case}"))
    assert proc.returncode == 1, proc
    assert _conflict_lines(proc.stdout) == list(expected.lines), proc.stdout
    assert f"{len(expected.commits)} conflict" in proc.stdout, proc.stdout
    assert not _folder(busy, DEV, onto).exists()
    assert files_state(busy / "hardware") == store_before
    assert snapshot_diff(before, snapshot(busy)) == []
    assert len(git(busy, "worktree", "list").splitlines()) == 1


def test_worktree_stops_at_the_first_conflict_and_its_steps_finish_the_rebase(
    world: World, project: Path
) -> None:
    onto = world.revs["conflict"]
    rev8, branch = onto[:8], f"flagtasks/rebase/{DEV}/{onto[:8]}"
    worktree = project.parent / "resolve"
    head, status = rev(project, "HEAD"), git(project, "status", "--porcelain")
    proc = flagtasks(project, *_rebase("up/conflict", "--worktree", str(worktree)))
    assert proc.returncode == 1, proc
    assert _conflict_lines(proc.stdout) == list(CASES["conflict"].lines), proc.stdout
    assert not _folder(project, DEV, onto).exists()
    assert "git am --continue" in proc.stdout, proc.stdout
    step = (
        f"flagtasks patch --device-type {DEV} --base-commit-id {rev8} --current-commit-id {branch}"
    )
    assert step in proc.stdout, proc.stdout
    assert "UU b.py" in git(worktree, "status", "--porcelain").splitlines()
    assert len(list((project / ".git" / "worktrees").glob("*/rebase-apply"))) == 1
    assert rev(worktree, "HEAD~1") == onto  # commit 1 applied, stopped at commit 2
    assert git(worktree, "log", "-1", "--format=%s") == SUBJECTS[0]
    assert git(worktree, "symbolic-ref", "--short", "HEAD") == branch
    assert (rev(project, "HEAD"), git(project, "status", "--porcelain")) == (head, status)

    for name in ("b", "c"):  # resolve as the vendor would: both sides' line 10
        write(worktree, {f"{name}.py": _text(name, {10: f"{name} line 10, both"})})
        git(worktree, "add", f"{name}.py")
        git_raw(worktree, "am", "--continue", check=False)  # c.py conflicts next: a stop
    assert git(worktree, "status", "--porcelain") == ""
    assert not list((project / ".git" / "worktrees").glob("*/rebase-apply"))
    assert git(worktree, "log", "--format=%s", f"{onto}..HEAD").splitlines() == list(
        reversed(SUBJECTS)
    )

    done = flagtasks_ok(project, *shlex.split(step)[1:])
    assert "tree matches" in done.stdout, done.stdout
    meta = _meta(_folder(project, DEV, onto))
    assert (meta["base"], meta["tree"]) == (onto, tree_of(project, branch))
    flagtasks_ok(project, "unpatch", "--device-type", DEV, "--commit-id", rev8, "--dir", "build")
    assert tree_of(build_tree(project, DEV), "HEAD") == tree_of(project, branch)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (_rebase("up/plain", device="Z_Q999"), "unknown device Z_Q999"),
        (_rebase("up/plain", old="up/near"), "no adaptation"),
        (_rebase("no-such-rev"), "no-such-rev"),
        (_rebase("v1.0"), "nothing to do"),
        (_rebase("main"), "nothing to do"),
        (_rebase("up/conflict", "--worktree", "{full}"), "not an empty folder"),
        (_rebase("up/conflict", "--worktree", "{file}"), "not an empty folder"),
        (_rebase("up/conflict", "--worktree", "hardware/wt"), "is inside"),
        (_rebase("up/conflict", "--worktree", ".git/wt"), "is inside"),
    ],
    ids=[
        "unknown-device",
        "old-without-adaptation",
        "unknown-rev",
        "rev-is-old",
        "rev-is-old-by-another-name",
        "worktree-not-empty",
        "worktree-is-a-file",
        "worktree-in-the-store",
        "worktree-in-git",
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    project: Path, args: list[str], says: str
) -> None:
    full, file = project.parent / "full", project.parent / "file"
    full.mkdir()
    (full / "keep.txt").write_text("mine\n")
    file.write_text("a file\n")
    args = [a.format(full=full, file=file) for a in args]
    frozen = Frozen(project)
    proc = flagtasks_fails(project, 2, *args, says=[says])
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    frozen.assert_unchanged()
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    assert file.read_text() == "a file\n"
    assert "flagtasks/rebase" not in git(project, "branch", "--list", "--all")


# --------------------------------------------------------------------------- --check


def test_check_lists_every_device_and_combo_writes_nothing_and_takes_no_lock(
    world: World, project: Path
) -> None:
    """Held lock, a conflict for A_X100 and E_K300 (its key in [keys]), B_Y100 clean: exit 1,
    one row each on its base, the combo does not move; nothing in the checkout changes."""
    (project / "config.toml").write_text(f'[keys]\n{ENC} = "{world.keys}"\n')
    settle_index(project)
    frozen, before = Frozen(project), snapshot(project)
    with holding_lock(project):  # a --check that waited for it would time out
        document = _forecast(project, "up/conflict", code=1)
        table = flagtasks(project, "rebase", "--check", "--onto", "up/conflict", timeout=60)
    assert set(document) == {"schema", "onto", "devices", "combos"}, document
    assert (document["schema"], document["onto"]) == (1, world.revs["conflict"])
    assert [row["device"] for row in document["devices"]] == [DEV, HET, ENC]
    for row in document["devices"]:
        assert {"device", "base", "result", "commits", "files"} <= set(row), row
        assert row["base"] == world.old, row
    conflict = {"result": "conflict", "files": ["b.py", "c.py"]}
    assert {k: _row(document, DEV)[k] for k in conflict} == conflict
    assert _row(document, ENC) == {**_row(document, DEV), "device": ENC}
    assert (_row(document, HET)["result"], _row(document, HET)["files"]) == ("clean", [])
    assert document["combos"] == [{"base8": world.old8, "devices": [DEV, HET], "moves": False}]
    assert table.returncode == 1, table
    assert [DEV, world.old8, "conflict"] in _table_rows(table.stdout), table.stdout
    frozen.assert_unchanged()
    assert snapshot_diff(before, snapshot(project)) == []

    moves = _forecast(project, "up/near")
    assert [row["result"] for row in moves["devices"]] == ["three-way", "clean", "three-way"]
    assert moves["combos"] == [{"base8": world.old8, "devices": [DEV, HET], "moves": True}]


def test_check_says_no_key_for_an_encrypted_device_without_keys(world: World) -> None:
    """No [keys] in config.toml: the encrypted device's row is no-key, which is no conflict."""
    assert not (world.repo / "config.toml").exists()
    frozen = Frozen(world.repo)
    row = _row(_forecast(world.repo, "up/plain"), ENC)
    assert (row["base"], row["result"], row["commits"], row["files"]) == (
        world.old,
        "no-key",
        [],
        [],
    )
    table = flagtasks_ok(world.repo, "rebase", "--check", "--onto", "up/plain")
    assert [ENC, world.old8, "no-key"] in _table_rows(table.stdout), table.stdout
    frozen.assert_unchanged()


def test_check_takes_the_use_base_else_the_newest(world: World, project: Path) -> None:
    flagtasks_ok(project, *_rebase("up/plain"))  # A_X100 now on v1.0 and on up/plain
    row = _row(_forecast(project, "up/near", "--device-type", DEV), DEV)
    assert (row["base"], row["result"]) == (world.revs["plain"], "three-way")
    (project / "config.toml").write_text(f'[use]\n{DEV} = "{world.old8}"\n')
    row = _row(_forecast(project, "up/near", "--device-type", DEV), DEV)
    assert (row["base"], row["result"]) == (world.old, "three-way")


def _objects(repo: Path) -> int:
    out = git(repo, "cat-file", "--batch-all-objects", "--batch-check")
    return len(out.splitlines())


def test_an_encrypted_adaptations_worktree_keeps_its_plaintext_out_of_the_checkout(
    world: World, project: Path
) -> None:
    """The replay of an encrypted adaptation is left in a repository of its own: no worktree
    of the checkout, no object of it in the checkout's .git."""
    folder = project.parent / "enc-rebase"
    before = _objects(project)
    key = ("--key-path", str(world.keys))
    proc = flagtasks_fails(
        project, 1, *_rebase("up/conflict", *key, "--worktree", str(folder), device=ENC),
        says=["does not rebase cleanly"],
    )  # fmt: skip
    assert "git fetch" in proc.stdout and "repository of its own" in proc.stdout, proc.stdout
    assert (folder / ".git").is_dir()
    assert "UU b.py" in git(folder, "status", "--porcelain").splitlines()
    assert not (project / ".git" / "worktrees").exists()
    assert _objects(project) == before
    assert oct(folder.joinpath("b.py").stat().st_mode & 0o777) == "0o600"


def test_check_exits_1_when_a_device_cannot_be_forecast(world: World, project: Path) -> None:
    (_folder(project, HET, world.old) / "meta.json").write_text("{bad")
    document = _forecast(project, world.revs["plain"], code=1)
    assert _row(document, HET)["result"] == "error", document
    assert _row(document, DEV)["result"] == "clean", document
