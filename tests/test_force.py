"""`doit unpatch:<DEV> --force` rebuilds even an up-to-date tree; plain runs stay no-ops."""

from __future__ import annotations

import shutil
from pathlib import Path

from fixtures import SAMPLE_STORE, clone_sample, doit_ok, flagtasks_ok


def test_force_rebuilds_an_up_to_date_tree(tmp_path: Path) -> None:
    checkout = clone_sample(tmp_path / "FlagScale")
    flagtasks_ok(checkout, "init")
    shutil.copytree(SAMPLE_STORE, checkout / "hardware")
    tree = checkout / "build" / "A_X100" / "FlagScale"
    assert ".  unpatch:A_X100" in doit_ok(checkout, "unpatch:A_X100").stdout
    first = (tree / ".git").stat().st_ino
    assert "-- unpatch:A_X100" in doit_ok(checkout, "unpatch:A_X100").stdout
    assert ".  unpatch:A_X100" in doit_ok(checkout, "unpatch:A_X100", "--force").stdout
    assert (tree / ".git").stat().st_ino != first
    assert "-- unpatch:A_X100" in doit_ok(checkout, "unpatch:A_X100").stdout
