"""Session set-up: an isolated HOME with a git identity, and a git new enough for the contract;
and the sample checkouts the command-line tests share (built by repos.py, copied by fixtures.py).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures import GIT_VARS_DROPPED, NAME, copy_of
from repos import add_store, vendor_checkout

GITCONFIG = """\
[user]
\tname = Test User
\temail = test@example.invalid
[init]
\tdefaultBranch = main
[core]
\tautocrlf = false
[advice]
\tdetachedHead = false
[commit]
\tgpgsign = false
[tag]
\tgpgsign = false
"""


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HOME, XDG config and git's system config point away from the developer's own."""
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text(GITCONFIG)
    with pytest.MonkeyPatch.context() as mp:
        for name in GIT_VARS_DROPPED:
            mp.delenv(name, raising=False)
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        mp.setenv("PYTHONDONTWRITEBYTECODE", "1")
        yield home


@pytest.fixture(scope="session", autouse=True)
def git_is_recent_enough() -> None:
    """The contract supports git 2.30 or newer; older gits make every result meaningless."""
    out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+)\.(\d+)", out)
    assert found, f"cannot read the git version from {out!r}"
    version = (int(found.group(1)), int(found.group(2)))
    if version < (2, 30):
        pytest.fail(f"git >= 2.30 is required by the contract, found {out.strip()}")


# --------------------------------------------------------------------------- the sample, shared


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's pristine clone of the sample (repos.vendor_checkout). Never run flagtasks
    in it: `fresh` is a private copy."""
    return vendor_checkout(tmp_path_factory.mktemp("sample") / NAME)


@pytest.fixture(scope="session")
def store(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of `sample` with a patch store (repos.add_store), made once per session. Copy it
    before changing anything: `stored` is a private copy."""
    return add_store(copy_of(sample, tmp_path_factory.mktemp("store")))


@pytest.fixture
def fresh(sample: Path, tmp_path: Path) -> Path:
    """A private copy of the pristine clone."""
    return copy_of(sample, tmp_path)


@pytest.fixture
def stored(store: Path, tmp_path: Path) -> Path:
    """A private copy of the clone with a patch store."""
    return copy_of(store, tmp_path)
