"""The `flagtasks` command line on clones of the sample: patch, --commit, unpatch, verify,
status and init, as SPEC.md's "Command line" describes them."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from fixtures import (
    NAME,
    V10_8,
    V11_8,
    A,
    B,
    C,
    describe,
    doit,
    flagtasks,
    flagtasks_fails,
    flagtasks_ok,
    git,
    rev,
)
from repos import (
    D,
    Frozen,
    changed_paths,
    files_state,
    settle_index,
    subject,
    tree_of,
    worktree_mismatches,
    write,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def meta(repo: Path, dev: str, base8: str, hardware: str = "hardware") -> dict:
    return json.loads((repo / hardware / dev / base8 / "meta.json").read_text())


def patch_count(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.startswith(b"Subject: "))


# --------------------------------------------------------------------------- patch


def test_patch_one_device_without_config_defaults_to_head(fresh: Path) -> None:
    git(fresh, "checkout", "-q", f"vendor/{A}")
    assert not (fresh / "config.toml").exists()
    flagtasks_ok(fresh, "patch", "--device-type", A, "--base-commit-id", "v1.0")
    folder = fresh / "hardware" / A / V10_8
    assert sorted(p.name for p in folder.iterdir()) == [f"{V10_8}.patch", "meta.json"]
    assert sorted(p.name for p in (fresh / "hardware").iterdir()) == [A]  # no hetero.txt
    data = meta(fresh, A, V10_8)
    assert data["base"] == rev(fresh, "v1.0")
    assert data["current"] == rev(fresh, f"vendor/{A}")  # HEAD, the default
    assert data["mode"] in ("series", "squash")


def test_patch_with_config_uses_its_store_and_mode(fresh: Path) -> None:
    (fresh / "config.toml").write_text(
        '[upstream]\nrepo = "."\nname = "FS"\nhardware = "patches"\n\n'
        f'[vendor.{A}]\nbase = "v1.0"\ncurrent = "vendor/{A}"\nmode = "squash"\n'
    )
    flagtasks_ok(fresh, "patch", "--device-type", A, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{A}")  # fmt: skip
    assert not (fresh / "hardware").exists()
    patch = fresh / "patches" / A / V10_8 / f"{V10_8}.patch"
    assert meta(fresh, A, V10_8, "patches")["mode"] == "squash"  # the config's mode
    assert patch_count(patch) == 1
    # --mode overrides the config; regenerating replaces the base's patch
    flagtasks_ok(fresh, "patch", "--device-type", A, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{A}", "--mode", "series")  # fmt: skip
    assert meta(fresh, A, V10_8, "patches")["mode"] == "series"
    assert patch_count(patch) == 4


def test_patch_mode_squash(fresh: Path) -> None:
    flagtasks_ok(fresh, "patch", "--device-type", A, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{A}", "--mode", "squash")  # fmt: skip
    data = meta(fresh, A, V10_8)
    assert data["mode"] == "squash"
    assert data["current"] == rev(fresh, f"vendor/{A}")
    patch = fresh / "hardware" / A / V10_8 / f"{V10_8}.patch"
    assert patch_count(patch) == 1
    # the one commit carries current's message and author
    text = patch.read_bytes()
    assert subject(fresh, f"vendor/{A}").encode() in text
    author = git(fresh, "log", "-1", "--format=%an <%ae>", f"vendor/{A}")
    assert f"From: {author}".encode() in text


def test_patch_mode_series_that_cannot_reproduce_fails_and_writes_nothing(fresh: Path) -> None:
    frozen = Frozen(fresh)
    proc = flagtasks_fails(fresh, 1, "patch", "--device-type", B, "--base-commit-id", "v1.0",
                           "--current-commit-id", f"vendor/{B}", "--mode", "series")  # fmt: skip
    assert "series" in proc.stderr
    frozen.assert_unchanged()


def test_regenerating_a_base_replaces_that_base_only(stored: Path) -> None:
    flagtasks_ok(stored, "patch", "--device-type", A, "--base-commit-id", "v1.1",
                 "--current-commit-id", f"vendor/{A}-v1.1")  # fmt: skip
    hardware = stored / "hardware"
    other_base = files_state(hardware / A / V11_8)
    others = {dev: files_state(hardware / dev) for dev in (B, C, D)}
    hetero = (hardware / "hetero.txt").read_bytes()
    old = files_state(hardware / A / V10_8)

    git(stored, "checkout", "-q", f"vendor/{A}")
    write(stored, {"flagscale/backends/a_x100.py": "X100 = 'regenerated'\n"})
    git(stored, "commit", "-q", "-am", f"[{A}] regenerate")
    flagtasks_ok(stored, "patch", "--device-type", A, "--base-commit-id", "v1.0")

    new = files_state(hardware / A / V10_8)
    assert new != old
    assert meta(stored, A, V10_8)["current"] == rev(stored, "HEAD")
    assert files_state(hardware / A / V11_8) == other_base
    assert {dev: files_state(hardware / dev) for dev in (B, C, D)} == others
    assert (hardware / "hetero.txt").read_bytes() == hetero
    assert sorted(p.name for p in (hardware / A).iterdir()) == sorted([V10_8, V11_8])


# --------------------------------------------------------------------------- --commit


def _user_changes(repo: Path) -> None:
    """Staged, unstaged and untracked work of the user's own."""
    write(repo, {"README.md": "staged readme\n", "docs/staged_new.md": "new and staged\n"})
    git(repo, "add", "README.md", "docs/staged_new.md")
    write(repo, {"flagscale/device.py": "unstaged edit\n", "untracked.txt": "mine\n"})


def _user_lines(status: str) -> list[str]:
    return [
        line
        for line in status.splitlines()
        if not line[3:].startswith(("hardware/", ".flagtasks/"))
    ]


def test_patch_commit_commits_only_the_store_files(fresh: Path) -> None:
    git(fresh, "checkout", "-q", f"vendor/{A}")
    _user_changes(fresh)
    before_head = rev(fresh, "HEAD")
    before_status = git(fresh, "status", "--porcelain=v1", "--untracked-files=all")
    before_staged = git(fresh, "diff", "--cached", "--binary")
    before_unstaged = git(fresh, "diff", "--binary")
    before_files = files_state(fresh, frozenset({".git", ".flagtasks", "hardware"}))

    flagtasks_ok(fresh, "patch", "--device-type", A, "--base-commit-id", "v1.0", "--commit")

    head = rev(fresh, "HEAD")
    assert git(fresh, "rev-parse", "HEAD^") == before_head
    assert git(fresh, "symbolic-ref", "HEAD") == f"refs/heads/vendor/{A}"
    # the subject already starts with [A_X100]: no second prefix
    assert subject(fresh, "HEAD") == subject(fresh, before_head)
    assert subject(fresh, "HEAD").startswith(f"[{A}] ")
    assert not subject(fresh, "HEAD").startswith(f"[{A}] [{A}]")
    assert changed_paths(fresh, head) == [
        f"hardware/{A}/{V10_8}/{V10_8}.patch",
        f"hardware/{A}/{V10_8}/meta.json",
    ]
    # the user's work is all still there, staged status preserved
    assert git(fresh, "diff", "--cached", "--binary") == before_staged
    assert git(fresh, "diff", "--binary") == before_unstaged
    after_status = git(fresh, "status", "--porcelain=v1", "--untracked-files=all")
    assert _user_lines(after_status) == _user_lines(before_status)
    assert "hardware" not in after_status  # committed store files are clean
    assert files_state(fresh, frozenset({".git", ".flagtasks", "hardware"})) == before_files


def test_patch_commit_hetero_adds_prefix_and_hetero_txt(stored: Path) -> None:
    git(stored, "checkout", "-q", f"vendor/{D}")
    plain = subject(stored, "HEAD")
    assert not plain.startswith("[")
    flagtasks_ok(stored, "patch", "--device-type", A, D, "--base-commit-id", "v1.0", "--commit")
    assert subject(stored, "HEAD") == f"[{D}] {plain}"
    assert changed_paths(stored, "HEAD") == [
        f"hardware/{D}/{V10_8}/{V10_8}.patch",
        f"hardware/{D}/{V10_8}/meta.json",
        "hardware/hetero.txt",
    ]
    # other store folders were not committed and are still on disk
    assert git(stored, "ls-files", f"hardware/{A}") == ""
    assert (stored / "hardware" / A / V10_8 / f"{V10_8}.patch").is_file()


# --------------------------------------------------------------------------- unpatch --dir


def built(repo: Path, out: str, dev: str) -> Path:
    return repo / out / dev / NAME


def assert_tree_is(repo: Path, tree_dir: Path, spec: str) -> None:
    assert (tree_dir / ".git").exists(), f"{tree_dir} is not a git repository"
    assert tree_of(tree_dir, "HEAD") == tree_of(repo, spec)
    assert worktree_mismatches(tree_dir, repo, spec) == []


def test_unpatch_dir_commit_id_forms(stored: Path) -> None:
    """Tag, branch, short SHA, full SHA and the BASE8 folder name all name the base."""
    git(stored, "branch", "base-branch", "v1.0")
    full = rev(stored, "v1.0")
    forms = ["base-branch", full[:7], full]  # the tag and BASE8: see the next test
    bad = []
    for form in forms:
        proc = flagtasks(stored, "unpatch", "--device-type", A, "--commit-id", form,
                         "--dir", "out")  # fmt: skip
        if proc.returncode != 0:
            bad.append(describe(proc))
    assert bad == []
    assert_tree_is(stored, built(stored, "out", A), f"vendor/{A}")


def test_unpatch_dir_builds_devices_without_touching_others(stored: Path) -> None:
    """`--dir build` gives build/<DEV>/<NAME>/; each build leaves the other devices' trees."""
    flagtasks_ok(stored, "unpatch", "--device-type", A, "--commit-id", "v1.0", "--dir", "build")
    assert_tree_is(stored, built(stored, "build", A), f"vendor/{A}")
    a_tree = files_state(built(stored, "build", A))
    flagtasks_ok(stored, "unpatch", "--device-type", C, "--commit-id", "v1.1", "--dir", "build")
    assert_tree_is(stored, built(stored, "build", C), f"vendor/{C}")
    assert files_state(built(stored, "build", A)) == a_tree
    flagtasks_ok(stored, "unpatch", "--device-type", D, "--commit-id", V10_8, "--dir", "build")
    assert_tree_is(stored, built(stored, "build", D), f"vendor/{D}")
    assert files_state(built(stored, "build", A)) == a_tree
    assert_tree_is(stored, built(stored, "build", C), f"vendor/{C}")
    assert sorted(p.name for p in (stored / "build").iterdir()) == sorted([A, C, D])


# --------------------------------------------------------------------------- unpatch in place


def test_unpatch_in_place_switches_to_new_branch(stored: Path) -> None:
    write(stored, {"notes.txt": "untracked notes\n"})
    proc = flagtasks_ok(stored, "unpatch", "--device-type", A, "--commit-id", "v1.0")
    assert f"flagtasks/{A}/{V10_8}" in proc.stdout
    assert git(stored, "symbolic-ref", "--short", "HEAD") == f"flagtasks/{A}/{V10_8}"
    assert tree_of(stored, "HEAD") == tree_of(stored, f"vendor/{A}")
    assert git(stored, "status", "--porcelain=v1", "--untracked-files=no") == ""
    assert (stored / "notes.txt").read_text() == "untracked notes\n"
    assert git(stored, "merge-base", "--is-ancestor", "v1.0", "HEAD") == ""


@pytest.mark.parametrize("staged", [False, True], ids=["unstaged", "staged"])
def test_unpatch_in_place_refuses_dirty_tree(stored: Path, staged: bool) -> None:
    write(stored, {"README.md": "my local edit\n", "notes.txt": "untracked\n"})
    if staged:
        git(stored, "add", "README.md")
    settle_index(stored)
    frozen = Frozen(stored)
    proc = flagtasks_fails(stored, 1, "unpatch", "--device-type", A, "--commit-id", "v1.0")
    assert "README.md" in proc.stderr or "uncommitted" in proc.stderr
    frozen.assert_unchanged()


def test_unpatch_in_place_refuses_existing_branch(stored: Path) -> None:
    git(stored, "branch", f"flagtasks/{A}/{V10_8}", "v1.0")
    frozen = Frozen(stored)
    proc = flagtasks_fails(stored, 2, "unpatch", "--device-type", A, "--commit-id", "v1.0")
    assert f"flagtasks/{A}/{V10_8}" in proc.stderr
    frozen.assert_unchanged()


def test_unpatch_in_place_never_overwrites_an_untracked_file(stored: Path) -> None:
    """A_X100 adds flagscale/backends/a_x100.py; an untracked file there stops the switch."""
    write(stored, {"flagscale/backends/a_x100.py": "my own untracked file\n"})
    frozen = Frozen(stored)
    proc = flagtasks(stored, "unpatch", "--device-type", A, "--commit-id", "v1.0")
    assert proc.returncode in (1, 2), describe(proc)
    assert "a_x100.py" in proc.stderr
    frozen.assert_unchanged()
    assert git(stored, "branch", "--list", "flagtasks/*") == ""


# --------------------------------------------------------------------------- verify


def test_verify_passes_on_the_sample(store: Path) -> None:
    flagtasks_ok(store, "verify")


def _corrupt_removed_line(patch: Path) -> None:
    """Edit a hunk: a removed line no longer matches the base, so the patch cannot apply."""
    data = patch.read_bytes()
    assert b"\n-BACKENDS = {}\n" in data
    patch.write_bytes(data.replace(b"\n-BACKENDS = {}\n", b"\n-BACKENDS = {1}\n", 1))


@pytest.mark.parametrize("with_meta", [True, False], ids=["with-meta", "flagscale-store"])
def test_verify_corrupted_patch_fails_naming_it(stored: Path, with_meta: bool) -> None:
    folder = stored / "hardware" / A / V10_8
    _corrupt_removed_line(folder / f"{V10_8}.patch")
    if not with_meta:
        (folder / "meta.json").unlink()
    proc = flagtasks(stored, "verify", *([] if with_meta else ["--device-type", A]))
    assert proc.returncode == 1, describe(proc)
    said = proc.stdout + proc.stderr
    assert f"{V10_8}.patch" in said or "flagscale/backends/__init__.py" in said, said
    assert A in said


def test_verify_patch_edited_with_matching_meta_checksum_fails(stored: Path) -> None:
    """An added line changed and the checksum fixed up: applies cleanly, wrong tree."""
    folder = stored / "hardware" / A / V10_8
    patch = folder / f"{V10_8}.patch"
    data = patch.read_bytes()
    assert b"\n+BACKENDS = " in data
    patch.write_bytes(data.replace(b"\n+BACKENDS = ", b"\n+XBACKENDS = ", 1))
    info = json.loads((folder / "meta.json").read_text())
    info["patch_sha256"] = hashlib.sha256(patch.read_bytes()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    proc = flagtasks(stored, "verify", "--device-type", A)
    assert proc.returncode == 1, describe(proc)
    assert f"{V10_8}.patch" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- status


COLUMNS = ("device", "base", "stored", "verified", "build", "hetero", "submodules")


def test_status_table_and_json(store: Path) -> None:
    table = flagtasks_ok(store, "status").stdout.splitlines()
    header = table[0].lower().split()
    assert header == list(COLUMNS)
    rows = {tuple(line.split()[:2]) for line in table[1:]}
    assert {(A, V10_8), (B, V10_8), (C, V11_8), (D, V10_8)} <= rows

    data = json.loads(flagtasks_ok(store, "status", "--json").stdout)
    assert data["schema"] == 1 and data["adaptations"]
    by_key = {(r["device"], r["base8"]): r for r in data["adaptations"]}
    assert by_key[(B, V10_8)]["hetero"] == [[A, B]]
    row = by_key[(A, V10_8)]
    assert row["encrypted"] is False and row["generated"] is True
    assert row["recipients"] == [] and row["submodules"] == []
    assert isinstance(row["verified"], bool) and isinstance(row["selected"], bool)
    assert len(row["base"]) == 40 and row["base"].startswith(V10_8)
    assert row["build"] in ("built", "stale", "missing")


# --------------------------------------------------------------------------- init


def test_init_then_doit_list(fresh: Path) -> None:
    proc = flagtasks_ok(fresh, "init")
    assert "dodo.py" in proc.stdout
    assert "from flagtasks" in (fresh / "dodo.py").read_text()
    tomllib.loads((fresh / "config.toml").read_text())  # commented, but valid TOML
    assert not (fresh / ".gitignore").exists(), "init must change no tracked file"
    rules = (fresh / ".git" / "info" / "exclude").read_text().splitlines()
    assert "/build/" in rules and "/.flagtasks/" in rules
    assert git(fresh, "status", "--porcelain", "--untracked-files=no") == ""
    listed = doit(fresh, "list")
    assert listed.returncode == 0, describe(listed)
    for task in ("format_patch", "verify", "unpatch"):
        assert task in listed.stdout
    assert "Traceback" not in listed.stderr


def test_init_never_overwrites(fresh: Path) -> None:
    mine = {"dodo.py": "# my own dodo\n", "config.toml": "# my own config\n"}
    for name, text in mine.items():
        (fresh / name).write_text(text)
    (fresh / ".gitignore").write_text("node_modules/\n*.log")  # no final newline
    flagtasks_ok(fresh, "init")
    for name, text in mine.items():
        assert (fresh / name).read_text() == text
    assert (fresh / ".gitignore").read_text() == "node_modules/\n*.log"  # untouched
    exclude = (fresh / ".git" / "info" / "exclude").read_text()
    assert "/build/" in exclude.splitlines() and "/.flagtasks/" in exclude.splitlines()
    flagtasks_ok(fresh, "init")
    assert (fresh / ".git" / "info" / "exclude").read_text() == exclude  # no duplicate rules


# --------------------------------------------------------------------------- version


def test_version_script_and_module(tmp_path: Path) -> None:
    script = flagtasks_ok(tmp_path, "--version").stdout.strip()
    module = flagtasks(tmp_path, "--version", module=True)
    assert module.returncode == 0, describe(module)
    assert module.stdout.strip() == script
    assert re.search(r"\d+\.\d+", script), script
    assert metadata.version("flagtasks") in script
