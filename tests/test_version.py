"""The calendar version scheme (backend/flagtasks_calver.py): YY.MM.N, frozen into the sdist.

The scheme is pure functions of (tags, date), checked without a clock; the precedence
(frozen file > FLAGTASKS_VERSION > release tag at HEAD > next development version) is
checked on real git repositories in temporary folders.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest
from fixtures import ROOT, git
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version


def _load_calver():
    spec = importlib.util.spec_from_file_location(
        "flagtasks_calver", ROOT / "backend" / "flagtasks_calver.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("flagtasks_calver", module)
    spec.loader.exec_module(module)
    return module


calver = _load_calver()
NOV = dt.date(2026, 11, 22)


# ---- the scheme, without a clock ----


@pytest.mark.parametrize(
    ("tag", "parsed"),
    [
        ("v26.11.0", (26, 11, 0)),
        ("v26.1.7", (26, 1, 7)),
        ("v27.01.2", (27, 1, 2)),
        ("v26.12.10", (26, 12, 10)),
        ("v26.13.0", None),
        ("v26.0.1", None),
        ("v2026.1.0", None),
        ("26.1.0", None),
        ("v26.1.0rc1", None),
        ("v1.0", None),
        ("release-26.1.0", None),
    ],
)
def test_parse_tag(tag, parsed):
    assert calver.parse_tag(tag) == parsed


def test_first_release_of_a_month_is_zero():
    assert calver.next_release([], NOV) == "26.11.0"
    assert calver.next_release(["v1.0", "v1.1", "nightly"], NOV) == "26.11.0"


def test_n_counts_releases_within_the_month():
    assert calver.next_release(["v26.11.0"], NOV) == "26.11.1"
    assert calver.next_release(["v26.11.0", "v26.11.1", "v26.10.5"], NOV) == "26.11.2"
    assert calver.next_release(["v26.11.3", "v26.11.0"], NOV) == "26.11.4"  # gaps are kept


def test_month_rollover_restarts_n():
    tags = ["v26.10.0", "v26.10.1", "v26.11.0", "v26.11.1", "v26.11.2"]
    assert calver.next_release(tags, dt.date(2026, 11, 30)) == "26.11.3"
    assert calver.next_release(tags, dt.date(2026, 12, 1)) == "26.12.0"


def test_year_rollover_and_no_leading_zero():
    tags = ["v26.12.0", "v26.12.1"]
    assert calver.next_release(tags, dt.date(2027, 1, 1)) == "27.1.0"
    assert calver.next_release([*tags, "v27.01.0"], dt.date(2027, 1, 9)) == "27.1.1"


def test_a_tag_from_a_later_month_is_refused():
    with pytest.raises(calver.VersionError, match="later than the build date"):
        calver.next_release(["v26.12.0"], NOV)


def test_dev_version_sorts_between_releases():
    dev = calver.dev_version(["v26.11.0", "v26.11.1"], NOV, 143)
    assert dev == "26.11.2.dev143"
    assert Version("26.11.1") < Version(dev) < Version("26.11.2")


def test_released_at_takes_the_highest_release_tag():
    assert calver.released_at(["v26.11.0", "v26.11.1", "latest"]) == "26.11.1"
    assert calver.released_at(["latest"]) is None


@pytest.mark.parametrize("good", ["26.11.0", "26.1.12", "27.3.0.dev5", " 26.11.0\n"])
def test_check_version_accepts_the_scheme(good):
    assert calver.check_version(good, "x") == good.strip()


@pytest.mark.parametrize("bad", ["26.01.0", "26.13.0", "1.0", "26.11", "26.11.0rc1", "v26.11.0"])
def test_check_version_refuses_anything_else(bad):
    with pytest.raises(calver.VersionError, match="not a flagtasks version"):
        calver.check_version(bad, "x")


@given(
    date=st.dates(min_value=dt.date(2011, 1, 1), max_value=dt.date(2099, 12, 31)),
    earlier=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20)), max_size=8),
)
def test_next_release_is_canonical_and_newer_than_every_tag(date, earlier):
    """Whatever was released before `date`, the next release is a canonical PEP 440 version
    above all of them, in `date`'s month."""
    month = dt.date(date.year, date.month, 1)
    tags = []
    for back, n in earlier:
        then = month
        for _ in range(back):
            then = (then - dt.timedelta(days=1)).replace(day=1)
        tags.append(f"v{then.year % 100:02d}.{then.month}.{n}")
    version = calver.next_release(tags, date)
    assert str(Version(version)) == version
    assert version.startswith(f"{date.year % 100:02d}.{date.month}.")
    assert all(Version(version) > Version(t[1:]) for t in tags)


# ---- the environment and git ----


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with three commits; the first is released as v26.11.0, the second v26.11.1."""
    root = tmp_path / "flagtasks"
    root.mkdir()
    git(root, "init", "-q")
    for number in range(3):
        (root / "file.txt").write_text(f"{number}\n")
        git(root, "add", "file.txt")
        git(root, "commit", "-q", "-m", f"commit {number}")
        if number == 0:
            git(root, "tag", "v26.11.0")
        if number == 1:
            git(root, "tag", "-a", "-m", "release", "v26.11.1")
    return root


def test_between_releases_a_build_is_the_next_dev_version(repo):
    env = {calver.ENV_DATE: "2026-11-22"}
    assert calver.resolve(repo, env) == "26.11.2.dev3"
    assert calver.resolve(repo, {calver.ENV_DATE: "2026-12-01"}) == "26.12.0.dev3"


def test_a_release_tag_at_head_is_the_version_on_any_date(repo):
    git(repo, "tag", "v26.11.2")
    assert calver.resolve(repo, {calver.ENV_DATE: "2026-11-22"}) == "26.11.2"
    assert calver.resolve(repo, {calver.ENV_DATE: "2027-05-01"}) == "26.11.2"


def test_annotated_release_tags_count_too(repo):
    git(repo, "checkout", "-q", "v26.11.1")
    assert calver.resolve(repo, {calver.ENV_DATE: "2026-11-22"}) == "26.11.1"


def test_the_override_beats_git_and_is_checked(repo):
    assert calver.resolve(repo, {calver.ENV_VERSION: "26.11.7"}) == "26.11.7"
    with pytest.raises(calver.VersionError, match="FLAGTASKS_VERSION"):
        calver.resolve(repo, {calver.ENV_VERSION: "7.0"})


def test_a_frozen_version_is_reused_verbatim(repo):
    """An unpacked sdist: its VERSION wins over the override, git and the date."""
    (repo / calver.FROZEN_FILE).write_text("26.11.2.dev3\n")
    for env in (
        {},
        {calver.ENV_DATE: "2031-01-01"},
        {calver.ENV_VERSION: "31.1.0", calver.ENV_DATE: "2031-01-01"},
    ):
        assert calver.resolve(repo, env) == "26.11.2.dev3"
    (repo / calver.FROZEN_FILE).write_text("garbage\n")
    with pytest.raises(calver.VersionError, match="VERSION"):
        calver.resolve(repo, {})


def test_no_git_and_no_frozen_file_is_a_clear_error(tmp_path):
    with pytest.raises(calver.VersionError, match="neither a git checkout nor an sdist"):
        calver.resolve(tmp_path, {})


def test_a_folder_inside_another_repository_is_not_a_checkout(repo):
    """An sdist unpacked inside some other repository must not take that repository's tags."""
    inner = repo / "unpacked"
    inner.mkdir()
    assert not calver.is_checkout(inner)
    with pytest.raises(calver.VersionError, match="neither a git checkout"):
        calver.resolve(inner, {})


def test_the_build_date_can_be_set_and_is_checked():
    assert calver.today({calver.ENV_DATE: "2030-02-03"}) == dt.date(2030, 2, 3)
    with pytest.raises(calver.VersionError, match="YYYY-MM-DD"):
        calver.today({calver.ENV_DATE: "03/02/2030"})


def test_next_release_here(repo, monkeypatch):
    monkeypatch.setenv(calver.ENV_DATE, "2026-11-22")
    assert calver.next_release_here(repo) == "26.11.2"
    git(repo, "tag", "v26.11.2")
    with pytest.raises(calver.VersionError, match="already released"):
        calver.next_release_here(repo)


def test_next_release_refuses_a_shallow_clone(repo, tmp_path):
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(shallow))
    with pytest.raises(calver.VersionError, match="shallow"):
        calver.next_release_here(shallow)


def _sdist(path: Path, top: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in ((f"{top}/PKG-INFO", b"Version: 26.11.0\n"), (f"{top}/a.py", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_freeze_sdist_adds_the_version_file(tmp_path):
    sdist = _sdist(tmp_path / "flagtasks-26.11.0.tar.gz", "flagtasks-26.11.0")
    calver.freeze_sdist(sdist, "26.11.0")
    calver.freeze_sdist(sdist, "26.11.0")  # idempotent: one VERSION, not two
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        frozen = tar.extractfile("flagtasks-26.11.0/VERSION").read()
    assert names.count("flagtasks-26.11.0/VERSION") == 1
    assert "flagtasks-26.11.0/a.py" in names
    assert frozen == b"26.11.0\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_command_line(repo, monkeypatch, capsys):
    monkeypatch.setattr(calver, "ROOT", repo)
    monkeypatch.setenv(calver.ENV_DATE, "2026-11-22")
    monkeypatch.delenv(calver.ENV_VERSION, raising=False)
    assert calver.main([]) == 0
    assert calver.main(["--next-release"]) == 0
    assert capsys.readouterr().out.split() == ["26.11.2.dev3", "26.11.2"]
    assert calver.main(["--bogus"]) == 2
