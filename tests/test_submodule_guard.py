"""A store written by another tool whose patch moves a submodule without carrying the commits
inside it says so when built (flagtasks' own stores carry them: test_submodules.py)."""

from __future__ import annotations

from pathlib import Path

from fixtures import flagtasks, git, rev
from repos import commit, init_repo

DEV = "A_X100"
FILE_PROTOCOL = ("-c", "protocol.file.allow=always")


def _project(tmp_path: Path) -> tuple[Path, str]:
    """An upstream with third_party/sub at its first commit (tag v1.0), and a vendor branch
    that changes a file and moves the submodule to a vendor commit inside it."""
    sub = tmp_path / "sub"
    init_repo(sub)
    commit(sub, "sub: first", {"core.py": "X = 1\n"})
    project = tmp_path / "FlagScale"
    init_repo(project)
    commit(project, "upstream", {"README.md": "upstream\n"})
    git(project, *FILE_PROTOCOL, "submodule", "add", "-q", str(sub), "third_party/sub")
    git(project, "commit", "-q", "-m", "add the backend as a submodule")
    git(project, "tag", "v1.0")
    git(project, "checkout", "-q", "-b", "vendor")
    inner = project / "third_party" / "sub"
    commit(inner, "sub: vendor change", {"core.py": "X = 2  # vendor\n"})
    commit(project, "vendor: adapt and move the backend", {"README.md": "adapted\n"})
    assert git(project, "diff", "--name-only", "v1.0", "vendor").split() == [
        "README.md",
        "third_party/sub",
    ]
    git(project, "checkout", "-q", "main")
    git(project, "submodule", "update", "-q")
    return project, rev(project, "v1.0")[:8]


def test_a_stored_patch_that_moves_a_submodule_says_so(tmp_path: Path) -> None:
    project, base8 = _project(tmp_path)
    folder = project / "hardware" / DEV / base8
    folder.mkdir(parents=True)
    patch = git(project, "format-patch", "--stdout", "--binary", "v1.0..vendor")
    (folder / f"{base8}.patch").write_text(patch + "\n")
    built = flagtasks(
        project, "unpatch", "--device-type", DEV, "--commit-id", base8, "--dir", "build"
    )
    assert built.returncode == 0, built
    assert "moves 1 submodule(s) (e.g. third_party/sub)" in built.stdout + built.stderr, built
