"""flagtasks on a checkout laid out like FlagScale's own (issue 11; SPEC.md "The patch store",
"Command line", "Build trees").

The module builds, once, a small upstream named FlagScale (files under flagscale/ and
megatron/) whose store was written the way FlagScale's seed tool wrote it, at commit a37a67140:
`hardware/` holds the project's own README.md, README_CN.md, LICENSE and LICENSE_CN
(stand-ins from tests/data/flagscale_store/) beside the device folders cambricon_MLU/,
kunlunxin_R300p/ and metax_C500/; each base folder holds only `<BASE8>.patch`, made with
exactly `git format-patch <base8>...<current8> --stdout` (abbreviated index lines, a git
version signature, the final blank line stripped), and no metadata file; the hetero combos are
in `tools/patch/hetero.txt`, one seed-style line (`<BASE8>:  DEV1 DEV2`) appended twice. All of
it is committed in the checkout itself, with no config.toml (the defaults apply) and no
build or state rules in `.git/info/exclude`. Each test works on its own copy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures import (
    describe,
    doit_ok,
    executed,
    flagtasks,
    flagtasks_fails,
    flagtasks_ok,
    git,
    git_raw,
    rev,
    up_to_date,
)
from repos import VENDOR, Frozen, commit, files_state, tree_of, worktree_mismatches, write

DATA = Path(__file__).resolve().parent / "data" / "flagscale_store"
OWN_FILES = ("README.md", "README_CN.md", "LICENSE", "LICENSE_CN")
"""FlagScale's own files directly in hardware/ (stand-ins in tests/data/flagscale_store/)."""

NAME = "FlagScale"
MLU, XPU, MACA = "cambricon_MLU", "kunlunxin_R300p", "metax_C500"
DEVICES = sorted([MLU, XPU, MACA])
LEGACY_HETERO = "tools/patch/hetero.txt"

UPSTREAM_FILES = {
    ".gitignore": "__pycache__/\n*.pyc\noutputs/\n",
    "README.md": "# FlagScale\n\nA stand-in upstream for flagtasks' tests.\n",
    "flagscale/__init__.py": '__version__ = "0.6.0"\n',
    "flagscale/train.py": "LAUNCHER = 'torchrun'\n\n\ndef main():\n    return LAUNCHER\n",
    "flagscale/runner/config.yaml": "system:\n  tensor_parallel: 1\n  pipeline_parallel: 1\n",
    "megatron/core/model.py": "class Model:\n    layers = 24\n",
    "megatron/core/parallel.py": "WORLD = 1\n\n\ndef init():\n    return WORLD\n",
}


@dataclass(frozen=True)
class Seed:
    """The pristine checkout and what the tests need to know of its history."""

    repo: Path
    base1: str  # the older base (full SHA)
    base2: str  # the newer one: base1 plus UPSTREAM_BETWEEN upstream commits
    branches: dict[tuple[str, str], str]  # (device, base8) -> vendor branch

    @property
    def b1(self) -> str:
        return self.base1[:8]

    @property
    def b2(self) -> str:
        return self.base2[:8]


PARALLEL = UPSTREAM_FILES["megatron/core/parallel.py"]
CONFIG_YAML = UPSTREAM_FILES["flagscale/runner/config.yaml"]
ADAPT: dict[str, list[dict[str, str]]] = {
    MLU: [
        {"flagscale/backends/mlu.py": "DEVICE = 'mlu'\n"},
        {"megatron/core/parallel.py": PARALLEL.replace("WORLD = 1", "WORLD = 8  # MLU370")},
    ],
    XPU: [
        {"flagscale/backends/xpu.py": "DEVICE = 'xpu'\n", "megatron/core/xpu_ops.py": "OPS = []\n"}
    ],
    MACA: [
        {"flagscale/backends/maca.py": "DEVICE = 'maca'\n"},
        {
            "flagscale/runner/config.yaml": CONFIG_YAML.replace(
                "tensor_parallel: 1", "tensor_parallel: 2"
            )
        },
    ],
}
"""Each vendor's commits (one dict of files per commit), the same on either base."""

UPSTREAM_BETWEEN = 2
"""Upstream commits in base1..base2."""

STORED = ((MLU, "base1"), (MLU, "base2"), (XPU, "base2"), (MACA, "base2"))
"""The adaptations of the seed's store; XPU also has a vendor branch on base1, not stored."""

HETERO_DEVICES = (MLU, MACA)
"""The legacy combo on base2."""


def vendor_branch(repo: Path, branch: str, start: str, commits: list[dict[str, str]]) -> str:
    git(repo, "checkout", "-q", "-b", branch, start)
    for number, files in enumerate(commits, start=1):
        commit(repo, f"{branch}: adaptation step {number}", files, author=VENDOR)
    git(repo, "checkout", "-q", "main")
    return branch


def seed_patch(repo: Path, base: str, current: str) -> bytes:
    """What FlagScale's seed tool stored: `git format-patch <base8>...<current8> --stdout`,
    the final blank line after the signature stripped."""
    out = git_raw(repo, "format-patch", f"{base[:8]}...{rev(repo, current)[:8]}", "--stdout")
    assert out.endswith(b"\n\n"), out[-40:]
    data = out[:-1]
    # what makes it the seed's and not flagtasks' own format
    assert re.search(rb"\n-- \n\d+\.\d+[^\n]*\n\Z", data), data[-40:]
    assert re.search(rb"^index [0-9a-f]{7,12}\.\.[0-9a-f]{7,12}( |$)", data, re.M)
    return data


def build_seed(repo: Path) -> Seed:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "core.autocrlf", "false")
    git(repo, "config", "user.name", "Test Vendor")
    git(repo, "config", "user.email", "vendor@example.invalid")
    commit(repo, "Initial FlagScale layout", UPSTREAM_FILES)
    base1 = commit(repo, "flagscale: add the inference runner", {"flagscale/infer.py": "X = 1\n"})
    commit(
        repo,
        "megatron: deeper model",
        {"megatron/core/model.py": "class Model:\n    layers = 48\n"},
    )
    base2 = commit(
        repo,
        "flagscale: expose the launcher",
        {"flagscale/launcher.py": "from flagscale.train import main\n"},
    )
    bases = {"base1": base1, "base2": base2}
    branches = {}
    for device, which in (*STORED, (XPU, "base1")):
        branch = vendor_branch(repo, f"vendor/{device}/on-{which}", bases[which], ADAPT[device])
        branches[(device, bases[which][:8])] = branch
    hardware = repo / "hardware"
    hardware.mkdir()
    for name in OWN_FILES:
        shutil.copyfile(DATA / name, hardware / name)
    for device, which in STORED:
        base = bases[which]
        folder = hardware / device / base[:8]
        folder.mkdir(parents=True)
        patch = seed_patch(repo, base, branches[(device, base[:8])])
        (folder / f"{base[:8]}.patch").write_bytes(patch)
    line = f"{base2[:8]}:  {' '.join(HETERO_DEVICES)}\n"
    write(repo, {LEGACY_HETERO: line + line})  # the seed appended, the same line twice
    git(repo, "add", "hardware", LEGACY_HETERO)
    commit(repo, "Add hardware adaptations")
    assert exclude_rules(repo) == set()  # nothing ignores build/ or .flagtasks/ yet
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    return Seed(repo, base1, base2, branches)


def exclude_rules(repo: Path) -> set[str]:
    """The rules of .git/info/exclude that ignore build/ or .flagtasks/, slashes dropped."""
    path = repo / ".git" / "info" / "exclude"
    lines = path.read_text().splitlines() if path.exists() else []
    return {line.strip().strip("/") for line in lines} & {"build", ".flagtasks"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    """The pristine seed-style checkout, built once; never run flagtasks in it."""
    return build_seed(tmp_path_factory.mktemp("seed") / NAME)


@pytest.fixture
def fs(seed: Seed, tmp_path: Path) -> Seed:
    """A private copy of the seed-style checkout, at <tmp>/FlagScale."""
    dest = tmp_path / NAME
    shutil.copytree(seed.repo, dest, symlinks=True)
    return Seed(dest, seed.base1, seed.base2, seed.branches)


# --------------------------------------------------------------------------- helpers


def tree(repo: Path, device: str, out: str = "build") -> Path:
    return repo / out / device / NAME


def assert_built(repo: Path, device: str, branch: str, out: str = "build") -> None:
    """The build tree of `device` is a git repository holding exactly `branch`'s tree."""
    where = tree(repo, device, out)
    assert (where / ".git").exists(), f"{where} is not a git repository"
    assert tree_of(where, "HEAD") == tree_of(repo, branch)
    assert worktree_mismatches(where, repo, branch) == []


def table_devices(stdout: str) -> set[str]:
    """The DEVICE column of `flagtasks status` (the rows end at the first blank line)."""
    lines = stdout.splitlines()
    assert lines and lines[0].split()[0].lower() == "device", stdout
    rows = []
    for line in lines[1:]:
        if not line.strip():
            break
        rows.append(line.split()[0])
    return set(rows)


def status_rows(repo: Path, cwd: Path | None = None) -> dict[tuple[str, str], dict]:
    data = json.loads(flagtasks_ok(cwd or repo, "status", "--json").stdout)
    return {(row["device"], row["base8"]): row for row in data["adaptations"]}


def combos(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """The combos of a hetero.txt: (BASE8, devices) per non-comment line."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            base8, _, devices = line.partition(":")
            out.append((base8.strip(), tuple(devices.split())))
    return out


def said(proc: subprocess.CompletedProcess[str], repo: Path) -> str:
    """All a run printed, with the checkout's path replaced: pytest names temp folders after
    the test, and a word of a test's name must not pass for what the tool said."""
    return (proc.stdout + proc.stderr).replace(str(repo), "<repo>")


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    proc = subprocess.run(
        ["git", "-C", str(repo), "merge-base", "--is-ancestor", older, newer],
        capture_output=True,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


# --------------------------------------------------------------------------- 1. adopting


def test_the_seed_store_is_what_the_seed_tool_wrote(seed: Seed) -> None:
    """The fixture itself: the layout of FlagScale's hardware/ at a37a67140."""
    hardware = seed.repo / "hardware"
    assert sorted(p.name for p in hardware.iterdir()) == sorted([*OWN_FILES, *DEVICES])
    for device, which in STORED:
        base8 = (seed.base1 if which == "base1" else seed.base2)[:8]
        assert [p.name for p in (hardware / device / base8).iterdir()] == [f"{base8}.patch"]
    assert sorted(p.name for p in (hardware / MLU).iterdir()) == sorted([seed.b1, seed.b2])
    assert not (hardware / "hetero.txt").exists()
    legacy = (seed.repo / LEGACY_HETERO).read_text()
    assert legacy == f"{seed.b2}:  {MLU} {MACA}\n" * 2
    assert not (seed.repo / "config.toml").exists() and not (seed.repo / "dodo.py").exists()
    assert git(seed.repo, "ls-files", "hardware", LEGACY_HETERO).splitlines() == sorted(
        [
            *(f"hardware/{name}" for name in OWN_FILES),
            *(
                f"hardware/{d}/{b[:8]}/{b[:8]}.patch"
                for d, w in STORED
                for b in [seed.base1 if w == "base1" else seed.base2]
            ),
            LEGACY_HETERO,
        ]
    )


def test_init_verify_and_doit_leave_tracked_files_alone(fs: Seed) -> None:
    repo = fs.repo
    hardware_before = files_state(repo / "hardware")
    gitignore = (repo / ".gitignore").read_bytes()

    flagtasks_ok(repo, "init")
    flagtasks_ok(repo, "verify")
    run = doit_ok(repo)

    for device in DEVICES:
        assert f"unpatch:{device}" in executed(run), describe(run)
        assert_built(repo, device, fs.branches[(device, fs.b2)])  # the newest base, by default
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert (repo / ".gitignore").read_bytes() == gitignore
    assert exclude_rules(repo) == {"build", ".flagtasks"}
    # build/ and .flagtasks/ are ignored: only what init wrote shows up as untracked
    untracked = git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(untracked) == ["?? config.toml", "?? dodo.py"]
    assert files_state(repo / "hardware") == hardware_before  # the project's files untouched

    listed = doit_ok(repo, "list")
    for task in ("format_patch", "verify", "unpatch"):
        assert task in listed.stdout


def test_own_files_in_hardware_are_no_store_problem(fs: Seed) -> None:
    repo = fs.repo
    flagtasks_ok(repo, "init")
    proc = doit_ok(repo, "verify:store")
    printed = said(proc, repo)
    for name in OWN_FILES:
        assert name not in printed, describe(proc)
    assert "problem" not in printed.lower(), describe(proc)

    status = flagtasks_ok(repo, "status")
    assert table_devices(status.stdout) == set(DEVICES)
    assert {device for device, _ in status_rows(repo)} == set(DEVICES)
    matrix = flagtasks_ok(repo, "matrix")
    assert json.loads(matrix.stdout) == {"device": DEVICES}
    assert len(matrix.stdout.strip().splitlines()) == 1


# --------------------------------------------------------------------------- 2. legacy hetero


@pytest.mark.parametrize("where", [LEGACY_HETERO, "flagscale/" + LEGACY_HETERO])
def test_unpatch_a_combo_listed_only_in_a_legacy_hetero_txt(fs: Seed, where: str) -> None:
    """Where the seed put it (its text also names flagscale/tools/patch/)."""
    repo = fs.repo
    if where != LEGACY_HETERO:
        (repo / where).parent.mkdir(parents=True)
        git(repo, "mv", LEGACY_HETERO, where)
        commit(repo, "Move hetero.txt")
    flagtasks_ok(repo, "unpatch", "--device-type", MLU, MACA, "--commit-id", fs.b2,
                 "--dir", "build")  # fmt: skip
    assert_built(repo, MLU, fs.branches[(MLU, fs.b2)])
    assert_built(repo, MACA, fs.branches[(MACA, fs.b2)])
    assert not tree(repo, XPU).exists()
    assert not (repo / "hardware" / "hetero.txt").exists()  # reading moves nothing


def test_verify_says_how_to_move_the_legacy_hetero_txt(fs: Seed) -> None:
    repo = fs.repo
    proc = flagtasks_ok(repo, "verify")  # the same seed line twice is no error
    hints = [line for line in said(proc, repo).splitlines() if "git mv" in line]
    assert len(hints) == 1, describe(proc)
    assert "hardware/hetero.txt" in hints[0] and LEGACY_HETERO in hints[0], hints[0]
    assert (repo / LEGACY_HETERO).read_text() == f"{fs.b2}:  {MLU} {MACA}\n" * 2


def test_a_different_second_line_for_a_base_is_still_an_error(fs: Seed) -> None:
    """The repeated seed line is forgiven because it says the same thing twice; two different
    combos for one base are not (one line per base)."""
    with (repo := fs.repo).joinpath(LEGACY_HETERO).open("a") as legacy:
        legacy.write(f"{fs.b2}:  {MLU} {XPU}\n")
    proc = flagtasks(repo, "verify")
    assert proc.returncode == 1, describe(proc)
    assert f"{LEGACY_HETERO}:3" in said(proc, repo), describe(proc)  # names the line


def test_status_counts_a_repeated_seed_line_once(fs: Seed) -> None:
    rows = status_rows(fs.repo)
    for device in HETERO_DEVICES:
        assert rows[(device, fs.b2)]["hetero"] == [list(HETERO_DEVICES)], rows[(device, fs.b2)]
    assert rows[(XPU, fs.b2)]["hetero"] == [] and rows[(MLU, fs.b1)]["hetero"] == []
    table = flagtasks_ok(fs.repo, "status").stdout
    maca = next(line for line in table.splitlines() if line.startswith(MACA))
    assert maca.count(MLU) == 1, table


def test_hetero_patch_writes_hardware_hetero_txt_keeping_legacy_combos(fs: Seed) -> None:
    repo = fs.repo
    legacy = (repo / LEGACY_HETERO).read_bytes()
    own = {name: (repo / "hardware" / name).read_bytes() for name in OWN_FILES}
    flagtasks_ok(repo, "patch", "--device-type", MLU, XPU, "--base-commit-id", fs.b1,
                 "--current-commit-id", fs.branches[(XPU, fs.b1)])  # fmt: skip
    written = (repo / "hardware" / "hetero.txt").read_text()
    assert sorted(combos(written)) == sorted([(fs.b2, (MLU, MACA)), (fs.b1, (MLU, XPU))]), written
    assert (repo / "hardware" / XPU / fs.b1 / f"{fs.b1}.patch").is_file()
    assert (repo / LEGACY_HETERO).read_bytes() == legacy
    assert {name: (repo / "hardware" / name).read_bytes() for name in OWN_FILES} == own
    flagtasks_ok(repo, "verify")
    # both combos build from the new file
    flagtasks_ok(repo, "unpatch", "--device-type", MLU, XPU, "--commit-id", fs.b1,
                 "--dir", "new")  # fmt: skip
    assert_built(repo, XPU, fs.branches[(XPU, fs.b1)], "new")
    flagtasks_ok(repo, "unpatch", "--device-type", MLU, MACA, "--commit-id", fs.b2,
                 "--dir", "old")  # fmt: skip
    assert_built(repo, MACA, fs.branches[(MACA, fs.b2)], "old")


# --------------------------------------------------------------------------- 3. in place


def test_in_place_unpatch_right_after_init(fs: Seed) -> None:
    repo = fs.repo
    flagtasks_ok(repo, "init")
    proc = flagtasks_ok(repo, "unpatch", "--device-type", MACA, "--commit-id", fs.b2)
    branch = git(repo, "symbolic-ref", "--short", "HEAD")
    assert branch == f"flagtasks/{MACA}/{fs.b2}", describe(proc)
    assert tree_of(repo, "HEAD") == tree_of(repo, fs.branches[(MACA, fs.b2)])
    assert is_ancestor(repo, fs.base2, "HEAD")
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert (repo / "dodo.py").is_file() and (repo / "config.toml").is_file()


# --------------------------------------------------------------------------- 4. vendor side


def test_patch_refuses_a_base_that_is_not_an_ancestor(fs: Seed) -> None:
    repo = fs.repo
    frozen = Frozen(repo)
    proc = flagtasks_fails(repo, 2, "patch", "--device-type", MLU, "--base-commit-id", fs.b2,
                           "--current-commit-id", fs.branches[(MLU, fs.b1)])  # fmt: skip
    stderr = proc.stderr.replace(str(repo), "<repo>")
    assert f"revert {UPSTREAM_BETWEEN} upstream commit" in stderr, describe(proc)
    assert "rebase" in stderr and fs.b2 in stderr, describe(proc)
    frozen.assert_unchanged()  # hardware/ included


def test_patch_says_uncommitted_edits_are_not_part_of_current(fs: Seed) -> None:
    repo = fs.repo
    branch = fs.branches[(MACA, fs.b2)]
    git(repo, "checkout", "-q", branch)
    write(repo, {"flagscale/train.py": "LAUNCHER = 'edited, not committed'\n"})
    proc = flagtasks_ok(repo, "patch", "--device-type", MACA, "--base-commit-id", fs.b2)
    notes = [line for line in said(proc, repo).splitlines() if "not part of" in line]
    assert len(notes) == 1, describe(proc)
    assert "uncommitted" in notes[0] and "flagscale/train.py" in notes[0], notes[0]
    meta = json.loads((repo / "hardware" / MACA / fs.b2 / "meta.json").read_text())
    assert meta["tree"] == tree_of(repo, branch)  # the edit is not in the adaptation
    assert (repo / "flagscale/train.py").read_text() == "LAUNCHER = 'edited, not committed'\n"
    assert git(repo, "symbolic-ref", "--short", "HEAD") == branch


def test_auto_mode_over_a_merge_falls_back_to_squash_saying_why(fs: Seed) -> None:
    """Vendor and upstream side both change the launcher line; the vendor's merge resolves it
    to a third value, which no series of the range's commits reproduces."""
    repo = fs.repo
    line = "LAUNCHER = {!r}\n\n\ndef main():\n    return LAUNCHER\n"
    git(repo, "checkout", "-q", "-b", "side", fs.base2)
    commit(repo, "side: launch with deepspeed", {"flagscale/train.py": line.format("deepspeed")})
    git(repo, "checkout", "-q", "-b", "vendor/merge", fs.base2)
    commit(repo, "vendor: launch with cnrun", {"flagscale/train.py": line.format("cnrun")},
           author=VENDOR)  # fmt: skip
    git_raw(repo, "merge", "-q", "--no-edit", "side", check=False)  # conflicts, on purpose
    assert (repo / ".git" / "MERGE_HEAD").exists()
    write(repo, {"flagscale/train.py": line.format("cnrun-deepspeed")})
    commit(repo, "Merge branch 'side' into vendor/merge", author=VENDOR)
    commit(repo, "vendor: tip after the merge", {"flagscale/backends/maca.py": "M = 1\n"},
           author=VENDOR)  # fmt: skip
    git(repo, "checkout", "-q", "main")

    proc = flagtasks_ok(repo, "patch", "--device-type", MACA, "--base-commit-id", fs.b2,
                        "--current-commit-id", "vendor/merge", "--mode", "auto")  # fmt: skip
    lines = [line for line in said(proc, repo).splitlines() if "squash" in line]
    assert any("merge" in line.lower() for line in lines), describe(proc)
    meta = json.loads((repo / "hardware" / MACA / fs.b2 / "meta.json").read_text())
    assert meta["mode"] == "squash"
    assert meta["tree"] == tree_of(repo, "vendor/merge")
    flagtasks_ok(repo, "unpatch", "--device-type", MACA, "--commit-id", fs.b2, "--dir", "build")
    assert_built(repo, MACA, "vendor/merge")


# --------------------------------------------------------------------------- 5. from elsewhere


def test_commands_from_a_subfolder_answer_for_the_checkout(fs: Seed) -> None:
    repo = fs.repo
    sub = repo / "flagscale"
    before = files_state(sub)

    verify = flagtasks_ok(sub, "verify")
    assert "git mv" in said(verify, repo), describe(verify)
    again = flagtasks_ok(repo, "verify")  # the same dependency state: nothing to re-check
    assert sorted(t for t in up_to_date(again) if t != "verify") == sorted(
        f"verify:{d}" for d in DEVICES
    ), describe(again)

    for args in (["status"], ["status", "--json"], ["matrix"]):
        from_root = flagtasks_ok(repo, *args)
        from_sub = flagtasks_ok(sub, *args)
        assert from_sub.stdout == from_root.stdout, (describe(from_root), describe(from_sub))
    assert {row["verified"] for row in status_rows(repo, sub).values()} == {True}
    assert table_devices(flagtasks_ok(sub, "status").stdout) == set(DEVICES)

    assert not (sub / ".flagtasks").exists()
    assert files_state(sub) == before


def test_status_inside_a_build_tree_is_refused(fs: Seed) -> None:
    repo = fs.repo
    flagtasks_ok(repo, "unpatch", "--device-type", MLU, "--commit-id", fs.b2, "--dir", "build")
    inner = tree(repo, MLU) / "flagscale"
    assert inner.is_dir()
    before = files_state(tree(repo, MLU))
    proc = flagtasks_fails(inner, 2, "status")
    assert "build tree" in said(proc, repo), describe(proc)
    assert files_state(tree(repo, MLU)) == before


# --------------------------------------------------------------------------- 6. moving


def test_moving_the_checkout_keeps_build_trees_working(fs: Seed, tmp_path: Path) -> None:
    repo = fs.repo
    flagtasks_ok(repo, "init")
    first = doit_ok(repo, "unpatch")
    assert sorted(executed(first)) == sorted(f"unpatch:{d}" for d in DEVICES), describe(first)

    moved = tmp_path / "elsewhere" / "deeper" / NAME
    moved.parent.mkdir(parents=True)
    shutil.move(str(repo), str(moved))
    assert not repo.exists()

    for device in DEVICES:
        where = tree(moved, device)
        assert git(where, "status", "--porcelain") == ""
        subjects = git(where, "log", "--format=%s", f"{fs.base2}..HEAD").splitlines()
        assert subjects and all(s.startswith(f"vendor/{device}/") for s in subjects), subjects
        assert tree_of(where, "HEAD") == tree_of(moved, fs.branches[(device, fs.b2)])

    again = doit_ok(moved, "unpatch")
    assert executed(again) == [], describe(again)
    assert sorted(up_to_date(again)) == sorted(f"unpatch:{d}" for d in DEVICES)

    clean = doit_ok(moved, "clean")
    printed = said(clean, moved).lower()
    assert "fatal" not in printed and "error" not in printed, describe(clean)
    for device in DEVICES:
        assert not tree(moved, device).exists(), describe(clean)


# --------------------------------------------------------------------------- 7. picked base


def test_the_picked_older_base_stays_picked(fs: Seed) -> None:
    repo = fs.repo
    flagtasks_ok(repo, "init")
    flagtasks_ok(repo, "unpatch", "--device-type", MLU, "--commit-id", fs.b1, "--dir", "build")
    where = tree(repo, MLU)
    head = rev(where, "HEAD")

    proc = doit_ok(repo, f"unpatch:{MLU}")
    assert executed(proc) == [] and up_to_date(proc) == [f"unpatch:{MLU}"], describe(proc)
    assert rev(where, "HEAD") == head
    assert tree_of(where, "HEAD") == tree_of(repo, fs.branches[(MLU, fs.b1)])
    assert is_ancestor(where, fs.base1, "HEAD")
    assert not is_ancestor(where, fs.base2, "HEAD")
    assert rev(where, "refs/tags/flagtasks/base") == fs.base1

    rows = status_rows(repo)
    assert rows[(MLU, fs.b1)]["selected"] is True
    assert rows[(MLU, fs.b1)]["build"] == "built"
    assert rows[(MLU, fs.b2)]["selected"] is False

    flagtasks_fails(repo, 2, "unpatch", "--device-type", MLU, "--commit-id", "deadbeef",
                    "--dir", "build", says=["deadbeef"])  # fmt: skip
    rows = status_rows(repo)
    assert rows[(MLU, fs.b1)]["selected"] is True
    assert rows[(MLU, fs.b1)]["build"] == "built"
    assert rev(where, "HEAD") == head
    assert up_to_date(doit_ok(repo, f"unpatch:{MLU}")) == [f"unpatch:{MLU}"]


def test_without_a_pick_the_newest_base_is_built(fs: Seed) -> None:
    """The control for the test above: what `doit unpatch` builds when nobody picked."""
    repo = fs.repo
    flagtasks_ok(repo, "init")
    proc = doit_ok(repo, f"unpatch:{MLU}")
    assert executed(proc) == [f"unpatch:{MLU}"], describe(proc)
    assert rev(tree(repo, MLU), "refs/tags/flagtasks/base") == fs.base2
    assert status_rows(repo)[(MLU, fs.b2)]["build"] == "built"


# --------------------------------------------------------------------------- 8. unknown device


def test_unknown_device_lists_the_known_ones_and_hints_the_case(fs: Seed) -> None:
    repo = fs.repo
    proc = flagtasks_fails(repo, 2, "unpatch", "--device-type", "CAMBRICON_mlu",
                           "--commit-id", fs.b2, "--dir", "build")  # fmt: skip
    for device in DEVICES:
        assert device in proc.stderr, describe(proc)  # exact case
    # the hint singles out the device that differs only in case
    assert proc.stderr.count(MLU) > proc.stderr.count(XPU), describe(proc)
    assert not (repo / "build").exists()
