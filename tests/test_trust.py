"""The repository is input: what a pull request commits cannot steer what flagtasks checks.

Each test builds the sample store (conftest `stored`), then commits what an attacker would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fixtures import (
    FLAGTASKS,
    NAME,
    V10_8,
    V11_8,
    A,
    C,
    check_output,
    copy_of,
    doit,
    flagtasks,
    flagtasks_fails,
    git,
    rev,
    run_env,
    run_parallel,
)
from repos import DODO


def _meta(project: Path, device: str, base8: str) -> Path:
    return project / "hardware" / device / base8 / "meta.json"


def test_metadata_base_is_data_not_a_rev_expression(stored: Path) -> None:
    meta_file = _meta(stored, A, V10_8)
    meta = json.loads(meta_file.read_text())
    real = meta["base"]
    crafted = V10_8 + "~1" + "~0" * 15
    assert len(crafted) == 40 and git(stored, "rev-parse", "--verify", "-q", crafted + "^{commit}")
    meta["base"] = crafted
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    checked = flagtasks(stored, "verify", "--device-type", A)
    assert checked.returncode == 1, checked
    assert "meta.json" in checked.stderr and "40 hex" in checked.stderr, checked.stderr

    built = doit(stored, f"unpatch:{A}")
    tree = stored / "build" / A / NAME
    if built.returncode == 0:  # built on the folder's base, never the crafted expression
        assert rev(tree, "refs/tags/flagtasks/base") == real
        assert rev(tree, "refs/tags/flagtasks/base").startswith(V10_8)


def test_tracked_state_folder_is_refused(stored: Path) -> None:
    (stored / "dodo.py").write_text(DODO)
    state = stored / ".flagtasks"
    state.mkdir(exist_ok=True)
    (state / "doit-state.sqlite3").write_bytes(b"committed by a pull request")
    git(stored, "add", "-f", ".flagtasks/doit-state.sqlite3")
    git(stored, "commit", "-q", "-m", "state from a PR")
    for run in (flagtasks(stored, "verify"), flagtasks(stored, "status"), doit(stored, "verify")):
        assert run.returncode == 2, run
        assert ".flagtasks" in run.stderr and "tracked" in run.stderr, run.stderr
        assert run.stderr.startswith("error: "), run.stderr


def test_state_folder_symlink_is_refused_and_nothing_lands_outside(
    stored: Path, tmp_path: Path
) -> None:
    (stored / "dodo.py").write_text(DODO)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(stored / ".flagtasks", ignore_errors=True)
    (stored / ".flagtasks").symlink_to(outside)
    flagtasks_fails(stored, 2, "verify", says=["symbolic link"])
    for args in (["verify"], ["unpatch"], ["list"]):
        run = doit(stored, *args)
        assert run.returncode == 2, run
        assert "symbolic link" in run.stderr, run.stderr
    assert list(outside.iterdir()) == []


def test_non_string_tree_in_metadata_is_that_adaptations_error(stored: Path) -> None:
    meta_file = _meta(stored, A, V10_8)
    meta = json.loads(meta_file.read_text())
    meta["tree"] = 12345
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    run = flagtasks(stored, "verify")
    assert run.returncode == 1, run
    assert f"verify:{A}: " in run.stderr and "tree" in run.stderr, run.stderr
    assert "internal error" not in run.stderr, run.stderr
    others = [line for line in run.stderr.splitlines() if "verify:" in line and A not in line]
    assert others == [], run.stderr  # the other devices still pass


# --------------------------------------------------------------------------- symbolic links

TOKEN = "s3cr3t-token-from-outside-the-checkout"


def _outside(tmp_path: Path) -> Path:
    """A folder outside the checkout holding one file, as an attacker's target."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "credentials").write_text(f"{TOKEN}\n")
    (outside / ".keep.tmp").write_text("a temp-looking file flagtasks must not sweep\n")
    return outside


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _commit_link(project: Path, rel: str, target: Path) -> None:
    link = project / rel
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=target.is_dir())
    git(project, "add", "-f", rel)
    git(project, "commit", "-q", "-m", f"link {rel}")


def test_tracked_build_device_link_is_refused(stored: Path, tmp_path: Path) -> None:
    (stored / "dodo.py").write_text(DODO)
    outside = _outside(tmp_path)
    before = _listing(outside)
    _commit_link(stored, f"build/{A}", outside)
    by_cli = flagtasks_fails(
        stored, 2, "unpatch", "--device-type", A, "--commit-id", V10_8, "--dir", "build",
        says=["symbolic link"],
    )  # fmt: skip
    assert TOKEN not in by_cli.stdout + by_cli.stderr
    by_doit = doit(stored, f"unpatch:{A}")
    assert by_doit.returncode == 2 and "symbolic link" in by_doit.stderr, by_doit
    assert _listing(outside) == before and not (outside / NAME).exists()


def test_tracked_build_folder_link_is_refused(stored: Path, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    _commit_link(stored, "build", outside)
    flagtasks_fails(
        stored, 2, "unpatch", "--device-type", A, "--commit-id", V10_8, "--dir", "build",
        says=["symbolic link"],
    )  # fmt: skip
    assert not (outside / A).exists()


def test_tracked_trash_link_is_never_emptied(stored: Path, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    (outside / "project-a").mkdir()
    (outside / "project-a" / "work.py").write_text("precious\n")
    before = _listing(outside)
    _commit_link(stored, "build/.flagtasks-trash", outside)
    run = flagtasks(stored, "unpatch", "--device-type", A, "--commit-id", V10_8, "--dir", "build")
    assert run.returncode == 2 and "symbolic link" in run.stderr, run
    assert _listing(outside) == before


@pytest.mark.parametrize("level", ["device", "base"])
def test_vendor_patch_never_writes_through_a_store_link(
    stored: Path, tmp_path: Path, level: str
) -> None:
    outside = _outside(tmp_path)
    if level == "base":
        (outside / V10_8).mkdir()
        (outside / V10_8 / ".old.tmp").write_text("not flagtasks' temp file\n")
        _commit_link(stored, f"hardware/{A}/{V10_8}", outside / V10_8)
    else:
        (outside / V10_8).mkdir()
        _commit_link(stored, f"hardware/{A}", outside)
    before = _listing(outside)
    run = flagtasks(
        stored, "patch", "--device-type", A, "--base-commit-id", "v1.0",
        "--current-commit-id", f"vendor/{A}",
    )  # fmt: skip
    assert run.returncode == 2, run
    assert "symbolic link" in run.stderr, run.stderr
    assert _listing(outside) == before


def test_stored_patch_link_is_that_adaptations_error(stored: Path, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    patch = stored / "hardware" / A / V10_8 / f"{V10_8}.patch"
    patch.unlink()
    patch.symlink_to(outside / "credentials")
    run = flagtasks(stored, "verify")
    assert run.returncode == 1, run
    assert TOKEN not in run.stdout + run.stderr
    assert "symbolic link" in run.stderr, run.stderr
    failing = set(re.findall(r"verify:(\w+): ", run.stderr))
    assert A in failing and C not in failing, run.stderr
    built = flagtasks(stored, "unpatch", "--device-type", C, "--commit-id", V11_8, "--dir", "build")
    assert built.returncode == 0, built


def test_tracked_hardware_link_is_refused(stored: Path, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    shutil.copytree(stored / "hardware", outside / "hardware")
    before = _listing(outside)
    shutil.rmtree(stored / "hardware")
    _commit_link(stored, "hardware", outside / "hardware")
    for args in (["verify"], ["status"]):
        flagtasks_fails(stored, 2, *args, says=["symbolic link"])
    assert _listing(outside) == before


# --------------------------------------------------------------------------- config and --dir


@pytest.mark.parametrize(
    "build", [".git", ".git/hooks", "hardware", f"hardware/{A}", ".flagtasks", "/proc/self"]
)
def test_build_folder_never_inside_git_store_or_state(stored: Path, build: str) -> None:
    (stored / "config.toml").write_text(f'[upstream]\nbuild = "{build}"\n')
    run = flagtasks(stored, "status")
    assert run.returncode == 2, run
    assert "upstream.build" in run.stderr and len(run.stderr.splitlines()) == 1, run.stderr
    (stored / "config.toml").unlink()
    flagtasks_fails(
        stored, 2, "unpatch", "--device-type", A, "--commit-id", V10_8, "--dir", build,
        says=["--dir"],
    )  # fmt: skip
    assert not (stored / ".git" / "hooks" / A).exists()
    assert not (stored / "hardware" / A / NAME).exists()


def test_dir_that_is_a_file_is_refused(stored: Path) -> None:
    (stored / "afile").write_text("not a folder\n")
    flagtasks_fails(
        stored, 2, "unpatch", "--device-type", A, "--commit-id", V10_8, "--dir", "afile",
        says=["not a folder"],
    )  # fmt: skip
    assert (stored / "afile").read_text() == "not a folder\n"


@pytest.mark.parametrize(
    "text",
    [
        '[upstream]\nname = "Flag\\nScale"\n',
        '[upstream]\nname = "Flag\\u0000Scale"\n',
        '[upstream]\nname = "../escape"\n',
        "x = " + "[" * 50_000 + "]" * 50_000 + "\n",
        "[upstream]\nname = 'a'\n" + "# padding\n" * 200_000,
    ],
    ids=["newline", "nul", "slash", "nested", "huge"],
)
def test_malformed_config_is_one_line_exit_2(stored: Path, text: str) -> None:
    (stored / "config.toml").write_text(text)
    for args in (["status"], ["verify"]):
        run = flagtasks(stored, *args)
        assert run.returncode == 2, run
        assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("error: "), run
        assert "config.toml" in run.stderr, run.stderr


# --------------------------------------------------------------------------- in-place unpatch


def test_in_place_never_overwrites_an_ignored_file_the_base_tracks(stored: Path) -> None:
    """git checkout overwrites ignored files; a file ignored on HEAD but tracked in the base
    (an untracked config, a local copy) stops the switch before anything changes."""
    victim = git(stored, "ls-tree", "-r", "--name-only", "v1.0").splitlines()[0]
    git(stored, "rm", "-q", "--cached", victim)
    (stored / ".gitignore").write_text(f"/{victim}\n")
    git(stored, "add", ".gitignore")
    git(stored, "commit", "-q", "-m", "untrack and ignore a file the base tracks")
    (stored / victim).write_text("the user's own copy\n")
    head = rev(stored, "HEAD")
    flagtasks_fails(stored, 1, "unpatch", "--device-type", A, "--commit-id", V10_8, says=[victim])
    assert (stored / victim).read_text() == "the user's own copy\n"
    assert rev(stored, "HEAD") == head and git(stored, "branch", "--list", "flagtasks/*") == ""


def _rebase_apply_modes(project: Path) -> list[str]:
    folder = project / ".git" / "rebase-apply"
    if not folder.is_dir():
        return []
    return [
        f"{p.relative_to(folder)} {oct(p.stat().st_mode & 0o777)}"
        for p in folder.rglob("*")
        if p.is_file() and p.stat().st_mode & 0o077
    ]


def test_killed_in_place_unpatch_of_an_encrypted_patch(stored: Path, tmp_path: Path) -> None:
    """SIGKILL at growing delays: the plaintext git am keeps is owner-only, and the next run
    puts the checkout back (hardware/ is tracked and the base hides it) and finishes."""
    keys = tmp_path / "keys" / A
    flagtasks(
        stored, "patch", "--device-type", A, "--base-commit-id", "v1.0",
        "--current-commit-id", f"vendor/{A}", "--key-path", str(keys),
    )  # fmt: skip
    assert (stored / "hardware" / A / V10_8 / f"{V10_8}.patch.encrypted").is_file()
    git(stored, "add", "hardware")
    git(stored, "commit", "-q", "-m", "the store, tracked as in FlagScale")
    main, branch = rev(stored, "HEAD"), f"flagtasks/{A}/{V10_8}"
    wanted = rev(stored, f"vendor/{A}^{{tree}}")
    command = ["unpatch", "--device-type", A, "--commit-id", V10_8, "--key-path", str(keys)]
    outcomes = set()
    for step in range(8):
        proc = subprocess.Popen(
            [FLAGTASKS, *command], cwd=stored, env=run_env(), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.05 + 0.09 * step)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _rebase_apply_modes(stored) == [], step
        again = flagtasks(stored, *command)
        where = git(stored, "symbolic-ref", "--short", "HEAD")
        said = "undone" if "was undone" in again.stdout else "clean"
        outcomes.add(f"{'finished' if again.returncode == 2 else 'redone'} {said}")
        assert again.returncode in (0, 2), again
        if again.returncode == 2:  # the killed run had finished: its branch is checked out
            assert "in-place unpatch made" in again.stderr, again.stderr
        assert where == branch and rev(stored, "HEAD^{tree}") == wanted, (step, again)
        assert not (stored / ".git" / "rebase-apply").exists()
        assert git(stored, "status", "--porcelain", "--untracked-files=no") == ""
        git(stored, "checkout", "-q", "main")
        git(stored, "branch", "-q", "-D", branch)
        assert rev(stored, "HEAD") == main
    assert outcomes, outcomes


# --------------------------------------------------------------------------- a shared --dir


def test_two_checkouts_building_into_one_dir_at_once(stored: Path, tmp_path: Path) -> None:
    other = copy_of(stored, tmp_path / "other")
    shared = tmp_path / "shared"
    command = ["unpatch", "--device-type", A, "--commit-id", V10_8, "--dir", str(shared)]
    for round_ in range(4):
        runs = run_parallel({"one": (stored, command), "two": (other, command)}, workers=2)
        for name, run in runs.items():
            check_output(run)
            assert run.returncode == 0, (round_, name, run)
    tree = shared / A / NAME
    assert git(tree, "status", "--porcelain") == ""
    git(tree, "fsck", "--no-progress", "--connectivity-only")
    assert sorted(p.name for p in (shared / A).iterdir()) == [NAME]
    again = flagtasks(other, *command, "--force")
    assert again.returncode == 0, again


# --------------------------------------------------------------------------- the same bytes


def test_an_encoded_patch_is_refused_by_verify_and_unpatch_alike(stored: Path) -> None:
    """git am decodes a quoted-printable body and git apply does not: the two would judge
    different bytes, so both refuse it, with the same words."""
    folder = stored / "hardware" / A / V10_8
    patch = folder / f"{V10_8}.patch"
    data = patch.read_bytes()
    head, sep, body = data.partition(b"\n\n")
    encoded = head + b"\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable" + sep
    patch.write_bytes(encoded + body.replace(b"= ", b"=3D ", 1))
    meta = json.loads((folder / "meta.json").read_text())
    meta["patch_sha256"] = hashlib.sha256(patch.read_bytes()).hexdigest()
    meta.pop("tree", None)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    checked = flagtasks_fails(stored, 1, "verify", "--device-type", A, says=["quoted-printable"])
    built = flagtasks_fails(
        stored, 1, "unpatch", "--device-type", A, "--commit-id", V10_8, "--dir", "build",
        says=["quoted-printable"],
    )  # fmt: skip
    said = [line.split(": ", 2)[-1] for line in (checked.stderr, built.stderr)]
    assert said[0].splitlines()[0] == said[1].splitlines()[0], said
    assert not (stored / "build" / A / NAME).exists()


@pytest.mark.slow
def test_a_40000_patch_series_is_checked(stored: Path) -> None:
    """One `git apply` per batch: a series longer than the argument list still verifies."""
    parts = []
    for number in range(1, 40_001):
        parts.append(
            f"From {'0' * 40} Mon Sep 17 00:00:00 2001\n"
            f"From: Vendor <v@example.invalid>\nDate: Thu, 1 Jan 2026 00:00:00 +0000\n"
            f"Subject: [PATCH {number}/40000] add f{number}\n\n---\n"
            f"diff --git a/many/f{number} b/many/f{number}\nnew file mode 100644\n"
            f"index 0000000..{'1' * 7}\n--- /dev/null\n+++ b/many/f{number}\n@@ -0,0 +1 @@\n"
            f"+{number}\n--\n2.40.0\n\n"
        )
    folder = stored / "hardware" / C / V11_8
    (folder / f"{V11_8}.patch").write_text("".join(parts))
    (folder / "meta.json").unlink()
    run = flagtasks(stored, "verify", "--device-type", C, timeout=600)
    assert run.returncode == 0, run
    assert "applies cleanly" in run.stdout, run.stdout


def test_in_place_switch_ignores_gitlinks_and_empty_folders(tmp_path: Path) -> None:
    """Found on FlagScale: an old base pins megatron/.../local_recipes as a submodule and a
    checkout keeps its empty folder; neither is something a switch would overwrite."""
    from flagtasks import git as git_mod
    from flagtasks import switch as build_mod

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "first")
    first = rev(repo, "HEAD")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{first},sub")
    (repo / "new.txt").write_text("new\n")
    git(repo, "add", "new.txt")
    git(repo, "commit", "-q", "-m", "base: a gitlink and a file")
    base = rev(repo, "HEAD")
    git(repo, "checkout", "-q", first)
    (repo / "sub").mkdir()
    added = git_mod.added_between(repo, "HEAD", base)
    assert added == ["new.txt"], added
    assert not build_mod._holds_data(repo / "sub")
    (repo / "sub" / "data.bin").write_bytes(b"x")
    assert build_mod._holds_data(repo / "sub")


def test_in_place_unpatch_writes_files_with_the_users_modes(stored: Path) -> None:
    """git am runs under umask 077 (its copy of the patch is owner-only); the files it
    writes into the user's checkout still get the modes the user's umask gives."""
    flagtasks(stored, "unpatch", "--device-type", A, "--commit-id", V10_8)
    written = git(stored, "diff", "--name-only", "--diff-filter=AM", f"{V10_8}..HEAD").split()
    assert written
    mask = os.umask(0)
    os.umask(mask)
    for path in written:
        mode = (stored / path).stat().st_mode & 0o777
        executable = bool(mode & 0o100)
        assert mode == (0o777 if executable else 0o666) & ~mask, (path, oct(mode))


def test_in_place_refuses_an_ignored_file_where_a_folder_must_go(stored: Path) -> None:
    """Found in review: git checkout removes an ignored file standing where the base has a
    folder; the switch stops first."""
    folder = git(stored, "ls-tree", "-d", "--name-only", "v1.0").splitlines()[0]
    git(stored, "rm", "-r", "-q", "--cached", folder)
    shutil.rmtree(stored / folder)
    (stored / ".gitignore").write_text(f"/{folder}\n")
    git(stored, "add", ".gitignore")
    git(stored, "commit", "-q", "-m", "drop a folder the base has")
    (stored / folder).write_text("my notes, ignored\n")
    flagtasks_fails(stored, 1, "unpatch", "--device-type", A, "--commit-id", V10_8)
    assert (stored / folder).read_text() == "my notes, ignored\n"


def test_in_place_refuses_during_the_users_own_git_am(stored: Path) -> None:
    """Found in review: the undo's `git am --abort` ended the user's own am session."""
    (stored / ".git" / "rebase-apply").mkdir()
    (stored / ".git" / "rebase-apply" / "next").write_text("2\n")
    flagtasks_fails(
        stored, 1, "unpatch", "--device-type", A, "--commit-id", V10_8, says=["rebase-apply"]
    )
    assert (stored / ".git" / "rebase-apply" / "next").read_text() == "2\n"


def test_in_place_keeps_the_branch_when_a_tag_has_its_name(stored: Path) -> None:
    """Found in review: with a tag `main`, a failed switch went back to `heads/main`, a
    detached HEAD, instead of the branch."""
    git(stored, "tag", "main")
    (stored / "flagscale" / "backends").mkdir(parents=True, exist_ok=True)
    (stored / "flagscale" / "backends" / "a_x100.py").write_text("mine\n")
    flagtasks_fails(stored, 1, "unpatch", "--device-type", A, "--commit-id", V10_8)
    assert git(stored, "symbolic-ref", "HEAD") == "refs/heads/main"
