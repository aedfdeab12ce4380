"""`flagtasks matrix` lists exactly the devices with a stored adaptation, for CI fan-out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fixtures import SAMPLE_STORE, clone_sample, flagtasks_ok


def matrix(cwd: Path) -> dict:
    return json.loads(flagtasks_ok(cwd, "matrix").stdout)


def test_matrix_follows_the_store(tmp_path: Path) -> None:
    checkout = clone_sample(tmp_path / "FlagScale")
    assert matrix(checkout) == {"device": []}
    shutil.copytree(SAMPLE_STORE, checkout / "hardware")
    assert matrix(checkout) == {"device": ["A_X100", "B_Y100", "C_Z200"]}
    (checkout / "hardware" / "Junk").mkdir()
    shutil.rmtree(checkout / "hardware" / "B_Y100")
    assert matrix(checkout) == {"device": ["A_X100", "C_Z200"]}
