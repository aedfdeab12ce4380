"""The pip package: sdist and wheel contents, metadata, and a version frozen into the sdist.

One module-scoped build (``python -m build``: the sdist, then the wheel from the sdist) of a
fresh clone of this working tree, with release tags and a build date chosen by the test.
Building and installing take tens of seconds, so those tests are marked slow. The checks of
files as they are in the checkout (LICENSE, README links, the dodo.py template) are fast.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

from flagtasks.commands.init import DODO

slow = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
REPO_URL = "https://github.com/FlagOpen/flagtasks"
RUNTIME = {"doit", "cryptography", "tomli"}  # git runs through subprocess: no `sh`
CLASSIFIERS = {
    "Environment :: Console",
    "Intended Audience :: Developers",
    "Operating System :: POSIX",
    "Operating System :: POSIX :: Linux",
    "Operating System :: MacOS",
    *(f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)),
    "Topic :: Software Development :: Build Tools",
    "Topic :: Software Development :: Version Control :: Git",
}
URLS = ("Homepage", "Documentation", "Source", "Issues")
BUILD_DATE = "2026-01-20"  # tags below: v26.1.0 and v26.1.1, HEAD one commit later
EXPECTED = "26.1.2.dev3"
LATER = "2031-07-01"  # any other date: a recomputed version would differ


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip()


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "FLAGTASKS_"))}
    env.update(GIT_AUTHOR_DATE="1700000000 +0000", GIT_COMMITTER_DATE="1700000000 +0000")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This working tree (tracked and new files) as a repository with two releases, cloned."""
    origin = tmp_path_factory.mktemp("origin") / "flagtasks"
    listed = run("git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (origin / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, origin / name)
    env = environ()
    run("git", "init", "-q", origin, env=env)
    run("git", "-C", origin, "add", "-A", env=env)
    run("git", "-C", origin, "commit", "-q", "-m", "flagtasks", env=env)
    run("git", "-C", origin, "tag", "v26.1.0", env=env)
    run("git", "-C", origin, "commit", "-q", "--allow-empty", "-m", "fix", env=env)
    run("git", "-C", origin, "tag", "-a", "-m", "release", "v26.1.1", env=env)
    run("git", "-C", origin, "commit", "-q", "--allow-empty", "-m", "more", env=env)
    clone = origin.parent / "clone"
    run("git", "clone", "-q", origin, clone, env=env)
    # What a working checkout has lying around: device trees, a stale setuptools build.
    for junk in ("build/A_X100/FlagScale/train.py", "build/lib/flagtasks/stale.py"):
        (clone / junk).parent.mkdir(parents=True, exist_ok=True)
        (clone / junk).write_text("junk = True\n")
    return clone


@pytest.fixture(scope="module")
def dists(project: Path) -> dict[str, Path]:
    pytest.importorskip("build", reason="python -m build is in the test extras")
    out = project.parent / "dist"
    env = environ(FLAGTASKS_BUILD_DATE=BUILD_DATE)
    run(sys.executable, "-m", "build", "--outdir", out, project, env=env)
    found = {"sdist": list(out.glob("*.tar.gz")), "wheel": list(out.glob("*.whl"))}
    assert all(len(files) == 1 for files in found.values()), found
    return {kind: files[0] for kind, files in found.items()}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", where)
    return where / ("Scripts" if os.name == "nt" else "bin")


@slow
def test_names_carry_the_computed_version(dists):
    assert dists["sdist"].name == f"flagtasks-{EXPECTED}.tar.gz"
    assert dists["wheel"].name == f"flagtasks-{EXPECTED}-py3-none-any.whl"


@slow
def test_sdist_holds_the_frozen_version_and_the_backend(dists):
    top = f"flagtasks-{EXPECTED}"
    with tarfile.open(dists["sdist"]) as tar:
        names = set(tar.getnames())
        frozen = tar.extractfile(f"{top}/VERSION").read().decode()
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    assert frozen == f"{EXPECTED}\n"
    assert f"Version: {EXPECTED}\n" in pkg_info
    needed = ["pyproject.toml", "README.md", "flagtasks/__init__.py", "flagtasks/cli.py"]
    needed += ["backend/flagtasks_backend.py", "backend/flagtasks_calver.py"]
    assert {f"{top}/{name}" for name in needed} <= names
    for name in names:
        part = name.split("/")[1:2]
        assert part not in (["tests"], ["hardware"], ["build"], ["examples"], [".github"]), name


@slow
def test_wheel_holds_the_package_only(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"flagtasks-{EXPECTED}.dist-info/METADATA").decode()
    assert "flagtasks/cli.py" in names
    assert f"Version: {EXPECTED}\n" in metadata
    allowed = ("flagtasks/", f"flagtasks-{EXPECTED}.dist-info/")
    assert [n for n in names if not n.startswith(allowed)] == []
    assert not [n for n in names if "stale.py" in n or "tests" in n.split("/")]
    assert "Requires-Dist: doit" in metadata
    assert "pytest" not in metadata.split("Provides-Extra: test")[0]


@slow
def test_the_sdist_installs_with_its_frozen_version_on_any_date(dists, venv):
    """Installing from the sdist years later, with an override set, still gives EXPECTED."""
    env = environ(FLAGTASKS_BUILD_DATE=LATER, FLAGTASKS_VERSION="31.7.0")
    run(venv / "python", "-m", "pip", "install", "-q", dists["sdist"], env=env)
    assert run(venv / "flagtasks", "--version") == f"flagtasks {EXPECTED}"


def install(venv: Path, what: Path, env: dict[str, str]) -> None:
    """Install `what` over whatever is there (its dependencies once, not again)."""
    pip = (venv / "python", "-m", "pip", "install", "-q")
    run(*pip, what, env=env)
    run(*pip, "--force-reinstall", "--no-deps", what, env=env)


@slow
def test_the_wheel_installs(dists, venv):
    install(venv, dists["wheel"], environ())
    assert run(venv / "flagtasks", "--version") == f"flagtasks {EXPECTED}"


@slow
def test_pip_install_from_a_fresh_clone(project, venv):
    install(venv, project, environ(FLAGTASKS_BUILD_DATE=BUILD_DATE))
    assert run(venv / "flagtasks", "--version") == f"flagtasks {EXPECTED}"
    assert not (project / "VERSION").exists()  # nothing frozen into the checkout itself
    install(venv, project, environ(FLAGTASKS_BUILD_DATE="2026-02-03"))
    assert run(venv / "flagtasks", "--version") == "flagtasks 26.2.0.dev3"


# ---- license and metadata, in both distributions


def metadata_of(text: str) -> Message:
    return Parser().parsestr(text, headersonly=True)


def requirement_names(meta: Message) -> tuple[set[str], set[str]]:
    """(runtime, extras) requirement names, normalised, from Requires-Dist."""
    runtime, extras = set(), set()
    for line in meta.get_all("Requires-Dist") or []:
        name = re.match(r"[A-Za-z0-9._-]+", line).group(0).lower().replace("_", "-")
        (extras if "extra ==" in line else runtime).add(name)
    return runtime, extras


def check_metadata(meta: Message) -> None:
    runtime, extras = requirement_names(meta)
    assert runtime == RUNTIME
    assert "sh" not in runtime | extras
    assert {"zizmor", "mypy"} <= extras
    assert meta["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    assert set(meta.get_all("Classifier") or []) >= CLASSIFIERS
    assert any(c.startswith("Development Status :: ") for c in meta.get_all("Classifier"))
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(URLS) <= set(urls), urls
    assert all(urls[label].startswith(REPO_URL) for label in URLS), urls


@slow
def test_license_and_metadata_in_the_sdist(dists):
    top = f"flagtasks-{EXPECTED}"
    with tarfile.open(dists["sdist"]) as tar:
        license_text = tar.extractfile(f"{top}/LICENSE").read()
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    assert license_text == (ROOT / "LICENSE").read_bytes()
    check_metadata(metadata_of(pkg_info))


@slow
def test_license_and_metadata_in_the_wheel(dists):
    info = f"flagtasks-{EXPECTED}.dist-info"
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"{info}/METADATA").decode()
        licenses = [n for n in names if n.startswith(f"{info}/licenses/")]
        assert licenses == [f"{info}/licenses/LICENSE"], names
        license_text = wheel.read(licenses[0])
    assert license_text == (ROOT / "LICENSE").read_bytes()
    check_metadata(metadata_of(metadata))


def test_license_is_the_apache_2_text():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert "\r" not in text


# ---- README: it is also the package index page, where relative links break

LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")  # [text](target) and ![alt](target)
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?\s*$", re.MULTILINE)  # [ref]: target
HTML = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)""", re.IGNORECASE)


def readme_links() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [m.group(1) for pattern in (LINK, REFERENCE, HTML) for m in pattern.finditer(text)]


def test_readme_links_are_absolute():
    links = readme_links()
    assert links, "no links found: the pattern is broken"
    relative = [link for link in links if not re.match(r"(https?|mailto):", link)]
    assert relative == [], f"relative links in README.md do not work on PyPI: {relative}"


def test_readme_links_into_the_repository_name_existing_files():
    prefix = f"{REPO_URL}/blob/main/"
    ours = [link for link in readme_links() if link.startswith(prefix)]
    assert ours
    missing = [link for link in ours if not (ROOT / link[len(prefix) :].split("#")[0]).is_file()]
    assert missing == []


def test_readme_names_no_sh_dependency_and_the_pipx_install():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    requirements = text.split("## Requirements", 1)[1]
    assert "`sh`" not in requirements
    assert "pipx install --include-deps flagtasks" in text
    assert "SPEC.md" not in text


# ---- dodo.py in a Python that lacks flagtasks: one line and exit 2, no traceback


def run_dodo_without_flagtasks(folder: Path) -> subprocess.CompletedProcess[str]:
    """`folder/dodo.py` run by this Python with no site-packages (-S) and no PYTHONPATH or
    current folder on sys.path (-I): flagtasks cannot be imported, as in a fresh venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import runpy; runpy.run_path('dodo.py')"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("which", ["init template", "this repository"])
def test_dodo_without_flagtasks_says_what_to_install(tmp_path: Path, which: str):
    text = DODO if which == "init template" else (ROOT / "dodo.py").read_text(encoding="utf-8")
    (tmp_path / "dodo.py").write_text(text, encoding="utf-8")
    done = run_dodo_without_flagtasks(tmp_path)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dodo.py: flagtasks is not installed")
    assert sys.executable in lines[0]
    assert "pip install" in lines[0]
    if which == "init template":
        assert "pipx install --include-deps flagtasks" in lines[0]
    assert done.stdout == ""


def test_dodo_does_not_hide_a_missing_dependency_of_flagtasks(tmp_path: Path):
    """flagtasks present but broken (a dependency missing): the real error, not the hint."""
    package = tmp_path / "flagtasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "dodo.py").write_text(DODO, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import runpy; runpy.run_path('dodo.py')"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "no_such_dependency_xyz" in done.stderr
    assert "is not installed" not in done.stderr


def test_the_dodo_template_exports_the_tasks(tmp_path: Path):
    import runpy

    (tmp_path / "dodo.py").write_text(DODO, encoding="utf-8")
    namespace = runpy.run_path(str(tmp_path / "dodo.py"))
    assert {"task_format_patch", "task_encrypt", "task_verify", "task_unpatch"} <= set(namespace)
    assert "DOIT_CONFIG" in namespace
