"""Hetero combos through the command line (SPEC.md: `patch` with several devices, hetero.txt,
`unpatch` with several devices): one line per base, devices in the order given, no duplicates,
comments and blank lines kept, and a refused run leaves hardware/ as it was."""

from __future__ import annotations

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
    flagtasks,
    flagtasks_fails,
    flagtasks_ok,
)
from repos import D, Frozen, files_state, tree_of, worktree_mismatches

E = "E_V500"  # a device with no adaptation anywhere


def hetero(repo: Path) -> str:
    return (repo / "hardware" / "hetero.txt").read_text()


def no_temp_files(repo: Path) -> None:
    leftovers = [p for p in files_state(repo / "hardware") if p.endswith(".tmp")]
    assert leftovers == []


# --------------------------------------------------------------------------- patch


def test_two_devices_write_one_line(store: Path) -> None:
    """The store fixture ran `patch --device-type A_X100 B_Y100 --base-commit-id v1.0`."""
    assert hetero(store) == f"{V10_8}: {A} {B}\n"
    assert (store / "hardware" / B / V10_8 / f"{V10_8}.patch").is_file()
    no_temp_files(store)


COMMENTED = f"""\
# hetero combos: <BASE8>: DEV1 DEV2 ...

{V11_8}: {C}   # C alone for now
{V10_8}: {A} {B}

# end of list
"""


def test_three_devices_update_the_line_in_place(stored: Path) -> None:
    (stored / "hardware" / "hetero.txt").write_text(COMMENTED)
    flagtasks_ok(stored, "patch", "--device-type", A, B, D, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{D}")  # fmt: skip
    expected = COMMENTED.replace(f"{V10_8}: {A} {B}\n", f"{V10_8}: {A} {B} {D}\n")
    assert hetero(stored) == expected
    # the same command again: the same file, no second line for the base
    flagtasks_ok(stored, "patch", "--device-type", A, B, D, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{D}")  # fmt: skip
    assert hetero(stored) == expected
    no_temp_files(stored)


def test_order_given_is_kept(stored: Path) -> None:
    flagtasks_ok(stored, "patch", "--device-type", D, B, A, "--base-commit-id", "v1.0",
                 "--current-commit-id", f"vendor/{A}")  # fmt: skip
    assert hetero(stored) == f"{V10_8}: {D} {B} {A}\n"


def test_new_base_appends_a_line(stored: Path) -> None:
    flagtasks_ok(stored, "patch", "--device-type", C, A, "--base-commit-id", "v1.1",
                 "--current-commit-id", f"vendor/{A}-v1.1")  # fmt: skip
    assert hetero(stored) == f"{V10_8}: {A} {B}\n{V11_8}: {C} {A}\n"
    assert (stored / "hardware" / A / V11_8 / f"{V11_8}.patch").is_file()
    assert (stored / "hardware" / A / V10_8 / f"{V10_8}.patch").is_file()


@pytest.mark.parametrize(
    ("devices", "missing"),
    [([E, D], E), ([A, E, D], E), ([C, A, D], C)],
    ids=["2-first-missing", "3-middle-missing", "3-other-base-only"],
)
def test_missing_device_refused_and_hardware_unchanged(
    stored: Path, devices: list[str], missing: str
) -> None:
    """Every device but the last must already have an adaptation on the base."""
    frozen = Frozen(stored)
    proc = flagtasks_fails(stored, 2, "patch", "--device-type", *devices,
                           "--base-commit-id", "v1.0",
                           "--current-commit-id", f"vendor/{D}")  # fmt: skip
    assert missing in proc.stderr, describe(proc)
    assert V10_8 in proc.stderr
    frozen.assert_unchanged()


def test_malformed_hetero_txt_refused_before_writing(stored: Path) -> None:
    """A refused run changes nothing in hardware/: not even the new device's folder."""
    (stored / "hardware" / "hetero.txt").write_text(f"{V10_8}: {A} {B}\nnot a combo line\n")
    frozen = Frozen(stored)
    proc = flagtasks(stored, "patch", "--device-type", A, E, "--base-commit-id", "v1.0",
                     "--current-commit-id", f"vendor/{D}")  # fmt: skip
    assert proc.returncode == 2, describe(proc)
    assert "hetero.txt:2" in proc.stderr, describe(proc)
    frozen.assert_unchanged()


# --------------------------------------------------------------------------- unpatch


def test_unpatch_combo_builds_every_device(stored: Path) -> None:
    flagtasks_ok(stored, "unpatch", "--device-type", A, B, "--commit-id", "v1.0", "--dir", "build")
    for dev in (A, B):
        tree = stored / "build" / dev / NAME
        assert tree_of(tree, "HEAD") == tree_of(stored, f"vendor/{dev}")
        assert worktree_mismatches(tree, stored, f"vendor/{dev}") == []


def test_unpatch_devices_not_a_combo_lists_the_combos(stored: Path) -> None:
    frozen = Frozen(stored)
    proc = flagtasks_fails(stored, 2, "unpatch", "--device-type", A, D, "--commit-id", "v1.0",
                           "--dir", "build")  # fmt: skip
    assert f"{A} {B}" in proc.stderr, describe(proc)  # the combo that exists on the base
    assert V10_8 in proc.stderr
    frozen.assert_unchanged()
    assert not (stored / "build").exists()


# --------------------------------------------------------------------------- verify


def test_verify_reports_hetero_txt_naming_unknown_adaptation(stored: Path) -> None:
    with (stored / "hardware" / "hetero.txt").open("a") as out:
        out.write(f"{V11_8}: {C} Q_Q1\n")
    proc = flagtasks(stored, "verify")
    assert proc.returncode == 1, describe(proc)
    said = proc.stdout + proc.stderr
    assert "hetero.txt" in said and "Q_Q1" in said, describe(proc)
