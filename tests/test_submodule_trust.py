"""Submodule adaptations as hostile input and as the user's data: metadata from a pull request
cannot pick another commit or folder, the store's submodule patches obey the store's rules,
a user's work inside a built submodule is never thrown away, and the in-place switch of a
submodule is put back on every failure."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fixtures import (
    FLAGTASKS,
    doit_ok,
    executed,
    flagtasks,
    flagtasks_fails,
    flagtasks_ok,
    git,
    rev,
    run_env,
)
from repos import DODO, EXCLUDES, commit, init_repo, write_config

DEV = "A_X100"
SUB = "third_party/sub"
FILE_PROTOCOL = ("-c", "protocol.file.allow=always")


def _world(tmp_path: Path) -> tuple[Path, Path, str]:
    """A vendor checkout whose branch commits inside third_party/sub, its stored adaptation,
    and a user's clone (submodule from the original repository) with that store copied in."""
    origin = init_repo(tmp_path / "origin-sub")
    commit(origin, "sub: first", {"core.py": "X = 1\n", "keep.txt": "keep\n"})
    vendor = init_repo(tmp_path / "FlagScale")
    commit(vendor, "upstream", {"README.md": "upstream\n"})
    git(vendor, *FILE_PROTOCOL, "submodule", "add", "-q", str(origin), SUB)
    git(vendor, "commit", "-q", "-m", "add the backend")
    git(vendor, "tag", "v1.0")
    git(vendor, "checkout", "-q", "-b", "vendor")
    commit(vendor / SUB, "sub: vendor change", {"core.py": "X = 2\n", "new.py": "N = 1\n"})
    commit(vendor, "vendor: adapt", {"README.md": "adapted\n"})
    git(vendor, "checkout", "-q", "main")
    git(vendor, "submodule", "update", "-q")
    base8 = rev(vendor, "v1.0")[:8]
    flagtasks_ok(
        vendor, "patch", "--device-type", DEV, "--base-commit-id", "v1.0",
        "--current-commit-id", "vendor",
    )  # fmt: skip
    user = tmp_path / "user" / "FlagScale"
    user.parent.mkdir()
    git(user.parent, "clone", "-q", "--branch", "main", str(vendor), str(user))
    (user / ".git" / "info" / "exclude").write_text("".join(f"{e}\n" for e in EXCLUDES))
    git(user, "config", f"submodule.{SUB}.url", str(origin))
    git(user, *FILE_PROTOCOL, "submodule", "update", "-q", "--init")
    shutil.copytree(vendor / "hardware", user / "hardware")
    git(user, "add", "hardware")
    git(user, "commit", "-q", "-m", "store")
    return vendor, user, base8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    return _world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def user(world: tuple[Path, Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A private copy of the user's checkout (its submodule copy included)."""
    _, source, base8 = world
    copy = tmp_path / "FlagScale"
    shutil.copytree(source, copy, symlinks=True)
    return copy, base8


def _unpatch(project: Path, base8: str, *more: str) -> list[str]:
    return ["unpatch", "--device-type", DEV, "--commit-id", base8, *more]


def _meta(project: Path, base8: str) -> Path:
    return project / "hardware" / DEV / base8 / "meta.json"


def _edit_meta(project: Path, base8: str, **fields: object) -> None:
    path = _meta(project, base8)
    data = json.loads(path.read_text())
    data["submodules"][0].update(fields)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("path", "../../outside", "submodule entry"),
        ("path", "third_party/sub/.git", "submodule entry"),
        ("path", "README.md", "is not at"),
        ("base", "0" * 40, "is not at"),
        ("tree", "not-a-tree", "submodule entry"),
    ],
)
def test_metadata_cannot_pick_another_folder_or_commit(
    user: tuple[Path, str], field: str, value: str, says: str
) -> None:
    project, base8 = user
    _edit_meta(project, base8, **{field: value})
    flagtasks_fails(project, 1, "verify", "--device-type", DEV, says=[says])
    flagtasks_fails(project, 1, *_unpatch(project, base8, "--dir", "build"), says=[says])
    assert not (project / "build" / DEV).exists()
    assert not (project.parent / "outside").exists()


def test_metadata_base_of_another_real_commit_is_refused(user: tuple[Path, str]) -> None:
    """A commit the user's copy does have, but not the one the base pins: refused."""
    project, base8 = user
    inner = project / SUB
    commit(inner, "sub: something else", {"core.py": "X = 9\n"})
    other = rev(inner, "HEAD")
    git(inner, "checkout", "-q", "HEAD~1")
    _edit_meta(project, base8, base=other)
    flagtasks_fails(project, 1, "verify", "--device-type", DEV, says=["is not at", SUB])
    flagtasks_fails(project, 1, *_unpatch(project, base8), says=["is not at"])
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"


def test_a_linked_submodule_patch_is_refused_not_followed(user: tuple[Path, str]) -> None:
    project, base8 = user
    folder = project / "hardware" / DEV / base8
    patch = folder / f"{base8}.third_party%2Fsub.patch"
    secret = project.parent / "secret.txt"
    secret.write_text("not for the store\n")
    patch.unlink()
    patch.symlink_to(secret)
    proc = flagtasks(project, "verify")
    assert proc.returncode == 1, proc
    assert "symbolic link" in proc.stderr and "not for the store" not in proc.stdout + proc.stderr
    flagtasks_fails(project, 1, *_unpatch(project, base8, "--dir", "build"), says=["link"])


def test_store_rules_cover_submodule_patches(user: tuple[Path, str]) -> None:
    project, base8 = user
    folder = project / "hardware" / DEV / base8
    stray = folder / f"{base8}.third_party%2Fghost.patch"
    stray.write_bytes((folder / f"{base8}.third_party%2Fsub.patch").read_bytes())
    beside = folder / f"{base8}.third_party%2Fsub.patch.encrypted"
    beside.write_bytes(b"FTENC1 not really\n")
    proc = flagtasks(project, "verify")
    assert proc.returncode == 1, proc
    assert f"{stray}: not part of the adaptation" in proc.stderr, proc.stderr
    assert f"{beside}: encrypted, but the adaptation's patch is not" in proc.stderr, proc.stderr


def _built(project: Path) -> Path:
    return project / "build" / DEV / "FlagScale"


def _make_work(inner: Path, work: str) -> None:
    if work == "ignored":
        (inner / ".git" / "info").mkdir(exist_ok=True)
        (inner / ".git" / "info" / "exclude").write_text("*.ckpt\n")
        (inner / "model.ckpt").write_text("weights\n")
    elif work == "edit":
        (inner / "core.py").write_text("X = 3  # mine\n")
    elif work == "commit":
        commit(inner, "my own", {"mine.py": "M = 1\n"})
    elif work == "stash":
        (inner / "core.py").write_text("X = 4  # stashed\n")
        git(inner, "stash", "-q")


@pytest.mark.parametrize(
    ("work", "says"),
    [
        ("ignored", "ignored file(s) in submodule third_party/sub"),
        pytest.param("edit", "uncommitted", marks=pytest.mark.slow),
        pytest.param("commit", "third_party/sub", marks=pytest.mark.slow),
        ("branch", "commits on mine in submodule third_party/sub"),
        pytest.param("stash", "a stash in submodule third_party/sub", marks=pytest.mark.slow),
    ],
)
def test_work_inside_a_built_submodule_stops_a_rebuild(
    user: tuple[Path, str], work: str, says: str
) -> None:
    project, base8 = user
    flagtasks_ok(project, *_unpatch(project, base8, "--dir", "build"))
    inner = _built(project) / SUB
    if work == "branch":
        git(inner, "checkout", "-q", "-b", "mine")
        commit(inner, "on a branch", {"mine.py": "M = 1\n"})
        git(inner, "checkout", "-q", f"flagtasks/{DEV}/{base8}")
    else:
        _make_work(inner, work)
    before = {p.name: p.read_bytes() for p in inner.iterdir() if p.is_file()}
    refs = git(inner, "for-each-ref")
    _force_stale(project, base8)
    flagtasks_fails(project, 1, *_unpatch(project, base8, "--dir", "build"), says=[says])
    assert {p.name: p.read_bytes() for p in inner.iterdir() if p.is_file()} == before
    assert git(inner, "for-each-ref") == refs
    flagtasks_ok(project, *_unpatch(project, base8, "--dir", "build", "--force"))
    kept = [p for p in (project / "build" / DEV).iterdir() if ".kept-" in p.name]
    assert len(kept) == 1
    assert {p.name: p.read_bytes() for p in (kept[0] / SUB).iterdir() if p.is_file()} == before


def _force_stale(project: Path, base8: str) -> None:
    """Make the device's tree stale without changing the adaptation: its marker forgets it."""
    marker = _built(project) / ".git" / "flagtasks-build.json"
    data = json.loads(marker.read_text())
    data["digest"] = "stale"
    marker.write_text(json.dumps(data))


def test_gitmodules_ignore_all_does_not_hide_work(user: tuple[Path, str]) -> None:
    """`.gitmodules` is the pull request's: `ignore = all` there must not hide edits."""
    project, base8 = user
    flagtasks_ok(project, *_unpatch(project, base8, "--dir", "build"))
    tree = _built(project)
    git(tree, "config", "-f", ".gitmodules", f"submodule.{SUB}.ignore", "all")
    git(tree, "commit", "-q", "-am", "ignore the backend")  # the user's own commit: work too
    git(tree, "reset", "-q", "--hard", "HEAD~1")
    git(tree, "config", f"submodule.{SUB}.ignore", "all")
    (tree / SUB / "core.py").write_text("X = 5  # mine\n")
    _force_stale(project, base8)
    flagtasks_fails(project, 1, *_unpatch(project, base8, "--dir", "build"), says=["uncommitted"])
    assert (tree / SUB / "core.py").read_text() == "X = 5  # mine\n"


def test_rebuild_gives_the_same_submodule_commits(user: tuple[Path, str]) -> None:
    project, base8 = user
    flagtasks_ok(project, *_unpatch(project, base8, "--dir", "build"))
    first = rev(_built(project) / SUB, "HEAD"), rev(_built(project), "HEAD")
    flagtasks_ok(project, *_unpatch(project, base8, "--dir", "build", "--force"))
    assert (rev(_built(project) / SUB, "HEAD"), rev(_built(project), "HEAD")) == first
    flagtasks_ok(project, *_unpatch(project, base8))  # in place: the same commits again
    assert rev(project / SUB, "HEAD") == first[0] and rev(project, "HEAD") == first[1]


def test_in_place_refuses_a_dirty_submodule_and_changes_nothing(user: tuple[Path, str]) -> None:
    project, base8 = user
    (project / SUB / "keep.txt").write_text("my edit\n")
    head, sub_head = rev(project, "HEAD"), rev(project / SUB, "HEAD")
    proc = flagtasks(project, *_unpatch(project, base8))
    assert proc.returncode == 1, proc
    assert "uncommitted" in proc.stderr
    assert (rev(project, "HEAD"), rev(project / SUB, "HEAD")) == (head, sub_head)
    assert (project / SUB / "keep.txt").read_text() == "my edit\n"
    assert "flagtasks/" not in git(project / SUB, "branch", "--list")


def test_in_place_failure_in_the_upstream_patch_puts_the_submodule_back(
    user: tuple[Path, str],
) -> None:
    """The submodule is switched first; when the upstream's patch then fails, both go back."""
    project, base8 = user
    (project / "README.md").write_text("a conflicting upstream edit\n")
    git(project, "commit", "-q", "-am", "edit README on main")  # base is v1.0: still applies
    folder = project / "hardware" / DEV / base8
    patch = folder / f"{base8}.patch"
    data = patch.read_bytes().replace(b"-upstream\n", b"-something else\n")
    patch.write_bytes(data)
    meta = json.loads((folder / "meta.json").read_text())
    meta["patch_sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))
    sub_head = rev(project / SUB, "HEAD")
    proc = flagtasks(project, *_unpatch(project, base8))
    assert proc.returncode == 1, proc
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert rev(project / SUB, "HEAD") == sub_head
    assert git(project / SUB, "status", "--porcelain") == ""
    assert "flagtasks/" not in git(project / SUB, "branch", "--list")
    assert "flagtasks/" not in git(project, "branch", "--list")


@pytest.mark.slow
def test_killed_in_place_unpatch_puts_back_or_finishes_the_submodule(
    user: tuple[Path, str],
) -> None:
    """SIGKILL at growing delays during an in-place switch that moves a submodule too: the
    next run puts both checkouts back (or keeps the finished switch) and ends where a clean
    run does, with no lock, no am session and no branch left behind."""
    project, base8 = user
    flagtasks_ok(project, *_unpatch(project, base8, "--dir", "build"))
    wanted = rev(_built(project), "HEAD"), rev(_built(project) / SUB, "HEAD")
    shutil.rmtree(project / "build")
    branch = f"flagtasks/{DEV}/{base8}"
    main, sub_main = rev(project, "HEAD"), rev(project / SUB, "HEAD")
    command = _unpatch(project, base8)
    outcomes = set()
    for step in range(8):
        proc = subprocess.Popen(
            [FLAGTASKS, *command], cwd=project, env=run_env(), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.05 + 0.06 * step)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        again = flagtasks(project, *command)
        assert again.returncode in (0, 2), (step, again)
        said = again.stdout + again.stderr
        outcomes.add(
            ("finished" if again.returncode == 2 else "redone")
            + (" (submodule put back)" if f"submodule {SUB} is back" in said else "")
        )
        assert (rev(project, "HEAD"), rev(project / SUB, "HEAD")) == wanted, (step, again)
        for repo in (project, project / SUB):
            assert git(repo, "symbolic-ref", "--short", "HEAD") == branch, (step, again)
            assert git(repo, "status", "--porcelain", "--untracked-files=no") == "", step
            assert not (
                Path(git(repo, "rev-parse", "--absolute-git-dir")) / "rebase-apply"
            ).exists()
        git(project / SUB, "checkout", "-q", "--detach", sub_main)
        git(project / SUB, "branch", "-q", "-D", branch)
        git(project, "checkout", "-q", "main")
        git(project, "branch", "-q", "-D", branch)
        assert (rev(project, "HEAD"), rev(project / SUB, "HEAD")) == (main, sub_main)
    assert outcomes, outcomes


def test_commands_inside_a_built_submodule_name_the_build_tree(user: tuple[Path, str]) -> None:
    project, base8 = user
    flagtasks_ok(project, *_unpatch(project, base8, "--dir", "build"))
    flagtasks_fails(_built(project) / SUB, 2, "status", says=["is a build tree made by flagtasks"])


def test_a_failed_first_build_leaves_no_device_folder(user: tuple[Path, str]) -> None:
    project, base8 = user
    folder = project / "hardware" / DEV / base8
    patch = folder / f"{base8}.third_party%2Fsub.patch"
    patch.write_bytes(patch.read_bytes().replace(b"+X = 2", b"+X = 3"))
    flagtasks_fails(project, 1, *_unpatch(project, base8, "--dir", "build"), says=[patch.name])
    assert not (project / "build" / DEV).exists()


def test_flagscales_own_backend_folders_are_left_alone(user: tuple[Path, str]) -> None:
    """FlagScale's newer store keeps hardware/<DEV>/<backend>/diff.patch folders: verify says
    it leaves them alone; any other folder is still not a base folder."""
    project, base8 = user
    for where in (f"{DEV}/Megatron-LM", "Cambricon_MLU/vllm"):
        (project / "hardware" / where).mkdir(parents=True)
        (project / "hardware" / where / "diff.patch").write_text("diff --git a/x b/x\n")
        (project / "hardware" / where / "diff.yaml").write_text("commit: abc\n")
    proc = flagtasks_ok(project, "verify")
    assert "2 folder(s) in device folders are not flagtasks adaptations" in proc.stdout, proc
    (project / "hardware" / DEV / "vllm2").mkdir()
    (project / "hardware" / DEV / "vllm2" / "diff.patch").write_text("x\n")
    flagtasks_fails(project, 1, "verify", says=["vllm2: not a base folder"])


def test_a_no_op_runs_no_git_in_the_tree_and_reencrypting_rebuilds_nothing(
    world: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """An encrypted submodule adaptation: a no-op `doit unpatch` runs only planning's git
    (no checkout, no apply, nothing in the tree), and the vendor re-encrypting for one more
    reader changes the stored files but rebuilds nothing."""
    source, _, base8 = world
    vendor = tmp_path / "vendor" / "FlagScale"
    shutil.copytree(source, vendor, symlinks=True)
    shutil.rmtree(vendor / "hardware")
    keys, reader = tmp_path / "keys", tmp_path / "reader"
    flagtasks_ok(
        vendor, "patch", "--device-type", DEV, "--base-commit-id", "v1.0",
        "--current-commit-id", "vendor", "--key-path", str(keys),
    )  # fmt: skip
    user, _ = _user_of(world, tmp_path, vendor)
    (user / "dodo.py").write_text(DODO)
    write_config(user, {}, extra=f'[keys]\n{DEV} = "{keys}"\n')
    flagtasks_ok(user, *_unpatch(user, base8, "--dir", "build"))
    assert executed(doit_ok(user, "unpatch")) == []

    log = tmp_path / "git.log"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    real = shutil.which("git")
    wrapper.write_text(f'#!/bin/sh\necho "$PWD $*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    path = f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"
    quiet = doit_ok(user, "unpatch", env={"PATH": path})
    assert executed(quiet) == [], quiet
    calls = log.read_text().splitlines() if log.exists() else []
    tree = str(_built(user))
    assert not [c for c in calls if tree in c], calls  # nothing in the tree or its submodule
    assert not [c for c in calls if any(w in c.split() for w in ("am", "apply", "read-tree"))]

    crypto_dir = reader / "k"
    from flagtasks import crypto

    crypto.ensure_keypair(crypto_dir)
    write_config(vendor, {DEV: {"base": "v1.0", "current": "vendor", "key": str(keys)}},
                 extra=f'recipients = ["{crypto_dir / "public_key.pem"}"]\n')  # fmt: skip
    before = {p.name: p.read_bytes() for p in (vendor / "hardware" / DEV / base8).iterdir()}
    (vendor / "dodo.py").write_text(DODO)
    doit_ok(vendor, f"encrypt:{DEV}")
    after = {p.name: p.read_bytes() for p in (vendor / "hardware" / DEV / base8).iterdir()}
    changed = sorted(n for n in after if after[n] != before.get(n))
    assert changed == sorted(n for n in after if n.endswith(".encrypted")), changed
    shutil.rmtree(user / "hardware" / DEV)
    shutil.copytree(vendor / "hardware" / DEV, user / "hardware" / DEV)
    again = doit_ok(user, "unpatch")
    assert executed(again) == [], again


def _user_of(world: tuple[Path, Path, str], tmp_path: Path, vendor: Path) -> tuple[Path, str]:
    """A copy of the user's checkout with `vendor`'s store in place of its own."""
    _, source, base8 = world
    user = tmp_path / "user" / "FlagScale"
    shutil.copytree(source, user, symlinks=True)
    git(user, "rm", "-r", "-q", "hardware")
    shutil.copytree(vendor / "hardware", user / "hardware")
    git(user, "add", "hardware")
    git(user, "commit", "-q", "-m", "the encrypted store")
    return user, base8


def test_a_committed_link_for_the_submodule_folder_reaches_nothing_outside(
    user: tuple[Path, str], tmp_path: Path
) -> None:
    """A pull request commits `third_party` as a link to a repository elsewhere that holds
    the submodule's commits: no command reads or switches it."""
    project, base8 = user
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copytree(project / ".git" / "modules" / SUB, outside / "sub.git")
    git(outside, "clone", "-q", str(outside / "sub.git"), str(outside / "sub"))
    (outside / "sub" / "owner.txt").write_text("the owner's file\n")
    git(project, "rm", "-q", "-r", "--cached", SUB)
    shutil.rmtree(project / ".git" / "modules")  # the user never initialised it
    shutil.rmtree(project / "third_party")
    (project / "third_party").symlink_to(outside)
    git(project, "add", "third_party")
    git(project, "commit", "-q", "-m", "PR: third_party is a link")
    before = git(outside / "sub", "rev-parse", "HEAD"), git(outside / "sub", "branch")
    flagtasks_fails(project, 1, "verify", "--device-type", DEV, says=["submodule update --init"])
    flagtasks_fails(project, 1, *_unpatch(project, base8, "--dir", "build"), says=[SUB])
    proc = flagtasks(project, *_unpatch(project, base8))
    assert proc.returncode in (1, 2), proc
    assert (git(outside / "sub", "rev-parse", "HEAD"), git(outside / "sub", "branch")) == before
    assert (outside / "sub" / "owner.txt").read_text() == "the owner's file\n"
    assert not (project / "build" / DEV).exists()


def test_a_gitmodules_name_never_leads_out_of_the_git_folder(
    user: tuple[Path, str], tmp_path: Path
) -> None:
    """`.gitmodules` names are the pull request's: one like `/abs/path` or `../../x` is not
    where a copy of the submodule is looked for."""
    from flagtasks import submodules

    project, _ = user
    elsewhere = tmp_path / "elsewhere.git"
    git(tmp_path, "clone", "-q", "--bare", str(project / SUB), str(elsewhere))
    sha = rev(project / SUB, "HEAD")
    for name in (str(elsewhere), f"../../{elsewhere.name}", "x/../../../elsewhere.git"):
        assert submodules.copy_of(project, "third_party/none", name, (sha,)) is None, name
    assert submodules.copy_of(project, SUB, SUB, (sha,)) is not None


def test_a_linked_worktree_of_a_built_submodule_is_work(user: tuple[Path, str]) -> None:
    project, base8 = user
    flagtasks_ok(project, *_unpatch(project, base8, "--dir", "build"))
    linked = project.parent / "sub-worktree"
    git(_built(project) / SUB, "worktree", "add", "-q", "--detach", str(linked), "HEAD~1")
    (linked / "notes.txt").write_text("mine\n")
    _force_stale(project, base8)
    flagtasks_fails(
        project, 1, *_unpatch(project, base8, "--dir", "build"), says=["linked worktrees"]
    )
    assert git(linked, "status", "--porcelain") == "?? notes.txt"


def test_metadata_naming_another_submodule_commit_fails_verify_and_the_build(
    user: tuple[Path, str],
) -> None:
    project, base8 = user
    _edit_meta(project, base8, current="1" * 40)
    flagtasks_fails(project, 1, "verify", "--device-type", DEV, says=["does not leave submodule"])
    flagtasks_fails(project, 1, *_unpatch(project, base8, "--dir", "build"), says=["tree"])
    assert not (project / "build" / DEV).exists()


def test_a_submodule_adaptation_rebases_onto_the_commit_the_new_base_pins(
    world: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """Upstream moves on and bumps the backend: the forecast says clean, the rebase carries
    the submodule's patch onto the new pin (and the upstream's onto the new base), and a user
    builds it to the vendor's change on top of the new backend."""
    source, _, base8 = world
    vendor = tmp_path / "FlagScale"
    shutil.copytree(source, vendor, symlinks=True)
    origin = Path(git(vendor / SUB, "config", "remote.origin.url"))
    commit(origin, "sub: upstream moves on", {"extra.py": "E = 1\n"})
    git(vendor / SUB, "fetch", "-q", "origin")
    git(vendor / SUB, "checkout", "-q", "origin/main")
    commit(vendor, "upstream: news, and the newer backend", {"NEWS": "v2\n"})
    git(vendor, "tag", "v2.0")
    pin = rev(vendor, f"v2.0:{SUB}")
    forecast = json.loads(
        flagtasks_ok(vendor, "rebase", "--check", "--onto", "v2.0", "--json").stdout
    )
    assert [r["result"] for r in forecast["devices"]] == ["clean"], forecast
    proc = flagtasks_ok(
        vendor, "rebase", "--device-type", DEV, "--base-commit-id", base8, "--onto", "v2.0"
    )
    assert f"submodule {SUB}: 1 commit(s), clean" in proc.stdout, proc.stdout
    new8 = rev(vendor, "v2.0")[:8]
    meta = json.loads((vendor / "hardware" / DEV / new8 / "meta.json").read_text())
    (sub,) = meta["submodules"]
    assert (meta["base"][:8], sub["path"], sub["base"]) == (new8, SUB, pin)
    flagtasks_ok(vendor, "verify", "--device-type", DEV)
    flagtasks_ok(vendor, "unpatch", "--device-type", DEV, "--commit-id", new8, "--dir", "b")
    inner = vendor / "b" / DEV / "FlagScale" / SUB
    assert (inner / "extra.py").read_text() == "E = 1\n"  # the new backend
    assert (inner / "core.py").read_text() == "X = 2\n"  # the vendor's change on it
    assert git(inner, "log", "-1", "--format=%s") == "sub: vendor change"
    assert git(vendor / "b" / DEV / "FlagScale", "status", "--porcelain") == ""
