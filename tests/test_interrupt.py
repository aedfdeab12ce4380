"""Interruption: a run killed at any point of unpatch, format_patch or encrypt leaves the old
state or the new one, never a half tree or half patch that a later run takes as up to date,
and the next normal run repairs what is stale (then a further run executes nothing).

Kills land at growing delays and at the moments the tool's own files show each phase: the
half-built tree appears, the base is checked out in it, `git am` is running in it, the old
tree is being deleted after the swap; the staged plaintext or a temporary store file
appears. SIGINT and
SIGKILL go to the whole process group (Ctrl-C in a terminal, a CI job timeout); SIGTERM
goes to doit alone (`kill PID`), so its git children run on as orphans.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures import (
    DOIT,
    check_output,
    copy_of,
    describe,
    doit,
    doit_ok,
    executed,
    flagtasks,
    git,
    run_env,
)
from repos import (
    VENDOR,
    base8,
    commit,
    init_repo,
    make_project,
    sha256,
    tree_of,
    worktree_mismatches,
    write_config,
)

from flagtasks import crypto

DEV = "A_X100"
DIRS, FILES, COMMITS = 8, 20, 4
VERSIONS = ("vendor/big~2", "vendor/big")
"""Two adaptations of one base; each iteration switches to the other one."""


# --------------------------------------------------------------------------- projects


def build_upstream(repo: Path) -> None:
    """160 files and a vendor branch that touches many of them, so that building, applying
    and swapping take long enough for kills to land inside each step."""
    init_repo(repo)
    files = {
        f"pkg{d:02d}/mod{i:02d}.py": "".join(f"line {k} of {d}/{i}\n" for k in range(40))
        for d in range(DIRS)
        for i in range(FILES)
    }
    commit(repo, "Upstream base", {**files, "README.md": "# Big upstream\n"})
    git(repo, "tag", "v1.0")
    git(repo, "checkout", "-q", "-b", "vendor/big")
    for c in range(COMMITS):
        changes: dict[str, str | None] = {}
        for d in range(DIRS):
            name = f"pkg{d:02d}/mod{(c * 7 + d) % FILES:02d}.py"
            text = (repo / name).read_text()
            changes[name] = text.replace(f"line {c * 5} of", f"line {c * 5} (vendor {c}) of")
        changes[f"vendor/file{c}.txt"] = f"vendor file {c}\n"
        commit(repo, f"[{DEV}] vendor change {c}", changes, author=VENDOR)
    git(repo, "checkout", "-q", "main")


@dataclass
class Version:
    current: str
    tree: str
    patch: bytes
    meta: bytes


@dataclass
class Template:
    """A vendor project with both versions generated, and what each version stored."""

    path: Path
    base8: str
    versions: list[Version]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    path = tmp_path_factory.mktemp("interrupt") / "FlagScale"
    build_upstream(path)
    make_project(path, {DEV: {"base": "v1.0", "current": VERSIONS[0]}})
    b8 = base8(path, "v1.0")
    folder = path / "hardware" / DEV / b8
    versions = []
    for current in VERSIONS:
        write_config(path, {DEV: {"base": "v1.0", "current": current}})
        doit_ok(path, f"format_patch:{DEV}")
        versions.append(
            Version(
                current=current,
                tree=tree_of(path, current),
                patch=(folder / f"{b8}.patch").read_bytes(),
                meta=(folder / "meta.json").read_bytes(),
            )
        )
    assert versions[0].patch != versions[1].patch
    shutil.rmtree(path / ".flagtasks")
    return Template(path, b8, versions)


# --------------------------------------------------------------------------- killing


@dataclass(frozen=True)
class Kill:
    """When and how to stop a run: `after` seconds, or as soon as `when` (a glob under the
    project) matches; to the whole process group or to doit alone."""

    sig: signal.Signals
    after: float | None = None
    when: str | None = None
    group: bool = True
    must_fire: bool = False

    def __str__(self) -> str:
        at = f"{self.after:.3f}s" if self.when is None else self.when
        return f"{self.sig.name} at {at}"


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the group, e.g. git orphaned by SIGTERM."""
    proc = Path("/proc")
    if not proc.is_dir():  # macOS: no /proc, ask the kernel
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def run_and_kill(
    project: Path, args: list[str], kill: Kill, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Start doit in its own session, stop it as `kill` says, wait for its whole group.
    Its temp files go to a folder beside the project (a SIGKILL leaves them behind)."""
    temp = project.parent / "tmp"
    temp.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [DOIT, *args],
        cwd=project,
        env=run_env({"TMPDIR": str(temp), **(env or {})}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    start = time.monotonic()
    fired = False
    while proc.poll() is None and time.monotonic() - start < 60:
        due = (
            time.monotonic() - start >= kill.after
            if kill.when is None
            else next(iter(project.glob(kill.when)), None) is not None
        )
        if due:
            try:
                if kill.group:
                    os.killpg(proc.pid, kill.sig)
                else:
                    os.kill(proc.pid, kill.sig)
            except ProcessLookupError:
                pass
            fired = True
            break
        time.sleep(0.001)
    out, err = proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fired or not kill.must_fire, f"{kill}: the run never reached that point"
    return check_output(
        subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
        allow_traceback="a signal may stop Python anywhere, KeyboardInterrupt's traceback too",
    )


def kills(
    phases: list[str],
    delays: list[float],
    signals: list[tuple[signal.Signals, bool]],
    must_fire: bool = False,
) -> list[Kill]:
    """Every phase and delay under every (signal, to the group?) pair."""
    return [Kill(sig, after=d, group=group) for sig, group in signals for d in delays] + [
        Kill(sig, when=w, group=group, must_fire=must_fire)
        for sig, group in signals
        for w in phases
    ]


SIGNALS = [(signal.SIGKILL, True), (signal.SIGINT, True), (signal.SIGTERM, False)]


# --------------------------------------------------------------------------- unpatch


BUILD_PHASES = [
    f"build/{DEV}/.FlagScale.new-*",  # the new repository is being made
    f"build/{DEV}/.FlagScale.new-*/README.md",  # the base is checked out in it
    f"build/{DEV}/.FlagScale.new-*/.git/rebase-apply",  # `git am` is applying the patch
    "build/.flagtasks-trash/*",  # swapped in; the old tree is being moved to the trash
]
"""Every fresh rebuild (`--force`) passes each of these long enough for a 1 ms poll to see it."""

UPDATE_PHASES = [
    f"build/{DEV}/FlagScale/.git/flagtasks/adaptation.patch",  # the new patch is written
    f"build/{DEV}/FlagScale/.git/rebase-apply",  # moved to the base; `git am` is applying
]
"""An update in place (a changed patch, no --force) passes each of these."""


def install(project: Path, template: Template, version: Version) -> None:
    """Put one version of the adaptation in the user's store (as a `git pull` would)."""
    folder = project / "hardware" / DEV / template.base8
    (folder / f"{template.base8}.patch").write_bytes(version.patch)
    (folder / "meta.json").write_bytes(version.meta)


def tree_after_kill(dest: Path, allowed: set[str]) -> str | None:
    """The build tree is absent, a complete repository of one of the allowed trees, or an
    update in place cut short, which its marker says is not up to date."""
    if not dest.exists():
        return None
    marker = dest / ".git" / "flagtasks-build.json"
    if marker.is_file() and json.loads(marker.read_text()).get("updating"):
        return "updating"
    assert (dest / ".git" / "HEAD").is_file(), f"{dest} is a half tree: no .git/HEAD"
    head_tree = git(dest, "rev-parse", "HEAD^{tree}")
    assert head_tree in allowed, f"{dest} holds tree {head_tree}, neither the old nor the new"
    status = git(dest, "status", "--porcelain", "--untracked-files=all")
    assert status == "", f"{dest} is a half tree:\n{status}"
    return head_tree


def unpatch_sweep(
    template: Template, tmp_path: Path, plan: list[Kill], force: bool = False
) -> None:
    project = copy_of(template.path, tmp_path)
    write_config(project, {})  # user side: the store only, no [vendor] section
    install(project, template, template.versions[0])
    doit_ok(project, f"unpatch:{DEV}")
    dest = project / "build" / DEV / "FlagScale"
    assert git(dest, "rev-parse", "HEAD^{tree}") == template.versions[0].tree
    allowed = {v.tree for v in template.versions}
    for number, kill in enumerate(plan, start=1):
        new = template.versions[number % 2]
        install(project, template, new)
        args = [f"unpatch:{DEV}", *(["--force"] if force else [])]
        killed = run_and_kill(project, args, kill)
        where = f"after {kill} ({number}/{len(plan)}):\n{describe(killed)}"
        try:
            tree_after_kill(dest, allowed)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{where}") from None
        repair = doit_ok(project, f"unpatch:{DEV}")
        assert git(dest, "rev-parse", "HEAD^{tree}") == new.tree, where + describe(repair)
        assert worktree_mismatches(dest, dest, "HEAD") == [], where
        assert git(dest, "status", "--porcelain", "--untracked-files=all") == "", where
        leftovers = sorted(p.name for p in dest.parent.iterdir() if p.name != "FlagScale")
        assert leftovers == [], f"{where}\nleft beside the tree: {leftovers}"
        again = doit_ok(project, f"unpatch:{DEV}")
        assert executed(again) == [], where + describe(again)


def _unpatch_plan(sig: signal.Signals, group: bool, phases: list[str]) -> list[Kill]:
    return kills(phases, [i * 0.1 for i in range(15)], [(sig, group)], must_fire=True)


def test_killed_unpatch_leaves_old_or_new_tree(template: Template, tmp_path: Path) -> None:
    """The quick sweep of a fresh rebuild: SIGKILL once the base is checked out in the new
    tree and while the old one is deleted, SIGINT and SIGTERM while `git am` runs."""
    mid_am = BUILD_PHASES[2]
    plan = [
        *kills([BUILD_PHASES[1], BUILD_PHASES[3]], [], [SIGNALS[0]], must_fire=True),
        Kill(signal.SIGINT, when=mid_am, must_fire=True),
        Kill(signal.SIGTERM, when=mid_am, group=False, must_fire=True),
    ]
    unpatch_sweep(template, tmp_path, plan, force=True)


def test_killed_update_in_place_is_repaired(template: Template, tmp_path: Path) -> None:
    """The quick sweep of an update in place: every signal at each phase, and SIGKILL at
    growing delays; the next run gives the exact tree, the one after does nothing."""
    plan = [
        *kills(UPDATE_PHASES, [], SIGNALS, must_fire=True),
        *kills([], [0.05 * i for i in range(1, 9)], [SIGNALS[0]]),
    ]
    unpatch_sweep(template, tmp_path, plan)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "group"), SIGNALS, ids=lambda v: getattr(v, "name", str(v)))
def test_killed_unpatch_at_many_points(
    template: Template, tmp_path: Path, sig: signal.Signals, group: bool
) -> None:
    unpatch_sweep(template, tmp_path, _unpatch_plan(sig, group, BUILD_PHASES), force=True)
    unpatch_sweep(template, tmp_path / "update", _unpatch_plan(sig, group, UPDATE_PHASES))


def test_killed_forced_rebuild_keeps_the_users_work(template: Template, tmp_path: Path) -> None:
    """A forced rebuild killed at the swap: the user's edits are at the tree or kept aside."""
    project = copy_of(template.path, tmp_path)
    write_config(project, {})
    install(project, template, template.versions[0])
    doit_ok(project, f"unpatch:{DEV}")
    dest = project / "build" / DEV / "FlagScale"
    phases = [BUILD_PHASES[2], f"build/{DEV}/FlagScale.kept-*"]
    for number, when in enumerate(phases, start=1):
        (dest / "my_notes.txt").write_text(f"precious {number}\n")
        install(project, template, template.versions[number % 2])
        kill = Kill(signal.SIGKILL, when=when, must_fire=True)
        run_and_kill(project, [f"unpatch:{DEV}", "--force"], kill)
        holders = [
            p
            for p in dest.parent.iterdir()
            if (p / "my_notes.txt").is_file()
            and (p / "my_notes.txt").read_text() == f"precious {number}\n"
        ]
        assert holders, f"after {kill} the user's file is gone: {sorted(dest.parent.iterdir())}"
        doit_ok(project, f"unpatch:{DEV}", "--force")
        assert git(dest, "rev-parse", "HEAD^{tree}") == template.versions[number % 2].tree


# --------------------------------------------------------------------------- format_patch


def store_files(project: Path, b8: str) -> dict[str, bytes]:
    """The base folder's files; temp files a SIGKILL left mid-write are another test's."""
    folder = project / "hardware" / DEV / b8
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix != ".tmp"}


def format_sweep(template: Template, tmp_path: Path, plan: list[Kill]) -> None:
    project = copy_of(template.path, tmp_path)
    b8 = template.base8
    name = f"{b8}.patch"
    write_config(project, {DEV: {"base": "v1.0", "current": VERSIONS[0]}})
    doit_ok(project, f"format_patch:{DEV}")
    for number, kill in enumerate(plan, start=1):
        old, new = template.versions[(number + 1) % 2], template.versions[number % 2]
        write_config(project, {DEV: {"base": "v1.0", "current": new.current}})
        killed = run_and_kill(project, [f"format_patch:{DEV}"], kill)
        where = f"after {kill} ({number}/{len(plan)}):\n{describe(killed)}"
        files = store_files(project, b8)
        patch, meta = files.get(name), files.get("meta.json")
        assert patch in (old.patch, new.patch), f"half or missing patch {where}"
        assert meta in (old.meta, new.meta), f"half or missing meta.json {where}"
        if json.loads(meta)["patch_sha256"] != sha256(patch):
            # the one mixed state: new patch, old metadata; verify must catch it
            assert (patch, meta) == (new.patch, old.meta), where
        repair = doit_ok(project, f"format_patch:{DEV}")
        assert store_files(project, b8) == {name: new.patch, "meta.json": new.meta}, (
            where + describe(repair)
        )
        again = doit_ok(project, f"format_patch:{DEV}")
        assert executed(again) == [], where + describe(again)


STORE_PHASES = [f"hardware/{DEV}/*/.*.tmp", ".flagtasks/doit-state.sqlite3-journal"]
"""Best effort: a temp file or doit's journal lives for a millisecond or so."""


def _format_plan(dense: bool) -> list[Kill]:
    if dense:
        return kills(STORE_PHASES, [i * 0.05 for i in range(16)], SIGNALS)
    return [
        *kills(STORE_PHASES[:1], [0.4], SIGNALS[:1]),
        Kill(signal.SIGINT, after=0.45),
        Kill(signal.SIGTERM, when=STORE_PHASES[1], group=False),
    ]


def test_killed_format_patch_leaves_old_or_new_patch(template: Template, tmp_path: Path) -> None:
    format_sweep(template, tmp_path, _format_plan(dense=False))


@pytest.mark.slow
def test_killed_format_patch_at_many_points(template: Template, tmp_path: Path) -> None:
    format_sweep(template, tmp_path, _format_plan(dense=True))


def test_mixed_patch_and_metadata_is_reported_then_repaired(
    template: Template, tmp_path: Path
) -> None:
    """A stop between the patch's rename and the metadata's: new patch, old meta.json."""
    project = copy_of(template.path, tmp_path)
    b8 = template.base8
    old, new = template.versions
    write_config(project, {DEV: {"base": "v1.0", "current": old.current}})
    doit_ok(project, f"format_patch:{DEV}")
    folder = project / "hardware" / DEV / b8
    (folder / f"{b8}.patch").write_bytes(new.patch)  # what a kill after the first rename leaves
    user = tmp_path / "user"
    shutil.copytree(project, user, symlinks=True, ignore=shutil.ignore_patterns(".flagtasks"))
    write_config(user, {})
    verify = doit(user, f"verify:{DEV}")
    assert verify.returncode == 1, describe(verify)
    assert "meta.json" in verify.stderr and "Traceback" not in verify.stderr, describe(verify)
    write_config(project, {DEV: {"base": "v1.0", "current": new.current}})
    doit_ok(project, f"format_patch:{DEV}")
    assert store_files(project, b8) == {f"{b8}.patch": new.patch, "meta.json": new.meta}
    doit_ok(project, f"verify:{DEV}")


def test_half_written_temp_file_is_not_left_in_the_store(
    template: Template, tmp_path: Path
) -> None:
    """SIGKILL between mkstemp and rename leaves `.<name>.XXXX.tmp` beside the patch: the next
    run removes it or `verify` reports it, and `patch --commit` never commits it."""
    project = copy_of(template.path, tmp_path)
    b8 = template.base8
    old, new = template.versions
    write_config(project, {DEV: {"base": "v1.0", "current": old.current}})
    doit_ok(project, f"format_patch:{DEV}")
    stray = project / "hardware" / DEV / b8 / f".{b8}.patch.k1ll3d.tmp"
    problems = []
    stray.write_bytes(new.patch[: len(new.patch) // 2])  # what the kill left
    run = doit(project)
    # exit 2, not 1: plain `doit` fails the `verify` group as an error once verify:store failed
    if not ((run.returncode in (1, 2) and stray.name in run.stderr) or not stray.exists()):
        problems.append(f"{stray.name} is left in the store and `doit` is happy:\n{describe(run)}")
    stray.write_bytes(new.patch[: len(new.patch) // 2])
    args = ["--base-commit-id", "v1.0", "--current-commit-id", old.current, "--commit"]
    patch = flagtasks(project, "patch", "--device-type", DEV, *args)
    committed = git(project, "show", "--name-only", "--format=", "HEAD").splitlines()
    if patch.returncode == 0 and [p for p in committed if p.endswith(".tmp")]:
        problems.append(f"`patch --commit` committed the temp file: {committed}")
    assert not problems, "\n\n".join(problems)


# --------------------------------------------------------------------------- encrypt


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vendor-keys") / "a_x100"
    assert crypto.ensure_keypair(path)
    return path


def decrypted(blob: bytes, key: Path) -> bytes:
    return crypto.decrypt(blob, crypto.load_private_key(key))


def exposed_files(tmp: Path) -> list[str]:
    """Files below `tmp` that others could read: not inside an owner-only folder and not
    owner-only themselves."""
    exposed = []
    for dirpath, dirs, names in os.walk(tmp):
        for name in list(dirs):
            if Path(dirpath, name).lstat().st_mode & 0o077 == 0:
                dirs.remove(name)  # an owner-only folder hides what is inside
        for name in names:
            mode = Path(dirpath, name).lstat().st_mode & 0o777
            if mode & 0o077:
                exposed.append(f"{Path(dirpath, name)} ({oct(mode)})")
    return exposed


def encrypt_sweep(template: Template, tmp_path: Path, key: Path, plan: list[Kill]) -> None:
    project = copy_of(template.path, tmp_path)
    b8 = template.base8
    folder = project / "hardware" / DEV / b8
    for stale in folder.iterdir():
        stale.unlink()
    cfg = {"base": "v1.0", "current": VERSIONS[0], "key": str(key)}
    write_config(project, {DEV: cfg})
    doit_ok(project, f"encrypt:{DEV}")
    enc = folder / f"{b8}.patch.encrypted"
    stage = project / ".flagtasks" / "stage"
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    plaintexts = {v.patch for v in template.versions}
    for number, kill in enumerate(plan, start=1):
        new = template.versions[number % 2]
        write_config(project, {DEV: {**cfg, "current": new.current}})
        killed = run_and_kill(project, [f"encrypt:{DEV}"], kill, {"TMPDIR": str(temp)})
        where = f"after {kill} ({number}/{len(plan)}):\n{describe(killed)}"
        names = sorted(p.name for p in folder.iterdir() if p.suffix != ".tmp")
        assert names == [f"{b8}.patch.encrypted", "meta.json"], f"store holds {names} {where}"
        plain = decrypted(enc.read_bytes(), key)
        assert plain in plaintexts, f"the encrypted patch holds a half patch {where}"
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["encrypted"] is True, where
        if meta["patch_sha256"] != sha256(plain):
            assert sha256(new.patch) == sha256(plain), where
        assert exposed_files(temp) == [], f"plaintext left world-readable {where}"
        assert (project / ".flagtasks").stat().st_mode & 0o077 == 0, where
        for staged in stage.rglob("*") if stage.exists() else []:
            assert staged.is_dir() or staged.stat().st_mode & 0o077 == 0, f"{staged} {where}"
        repair = doit_ok(project, f"encrypt:{DEV}")
        assert decrypted(enc.read_bytes(), key) == new.patch, where + describe(repair)
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["patch_sha256"] == sha256(new.patch), where
        assert meta["current"] == git(project, "rev-parse", new.current), where
        assert not list(stage.rglob("*.patch")), f"staged plaintext left behind {where}"
        assert sorted(store_files(project, b8)) == names, where
        again = doit_ok(project, f"encrypt:{DEV}")
        assert executed(again) == [], where + describe(again)


ENCRYPT_PHASES = [".flagtasks/stage/*/*.patch.sealed", f"hardware/{DEV}/*/.*.tmp"]


def _encrypt_plan(dense: bool) -> list[Kill]:
    if dense:
        return kills(ENCRYPT_PHASES, [i * 0.06 for i in range(16)], SIGNALS)
    return [
        Kill(signal.SIGKILL, when=ENCRYPT_PHASES[0], must_fire=True),
        Kill(signal.SIGINT, after=0.5),
    ]


def test_killed_encrypt_leaves_old_or_new_ciphertext(
    template: Template, tmp_path: Path, key_dir: Path
) -> None:
    encrypt_sweep(template, tmp_path, key_dir, _encrypt_plan(dense=False))


@pytest.mark.slow
def test_killed_encrypt_at_many_points(template: Template, tmp_path: Path, key_dir: Path) -> None:
    encrypt_sweep(template, tmp_path, key_dir, _encrypt_plan(dense=True))
