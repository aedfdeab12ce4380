"""The repository is input: what a pull request commits cannot steer what flagtasks checks.

Each test builds the sample store (conftest `stored`), then commits what an attacker would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fixtures import NAME, V10_8, A, doit, flagtasks, flagtasks_fails, git, rev
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
