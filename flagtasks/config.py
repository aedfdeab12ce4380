"""Read and validate config.toml into plain data, so nothing downstream re-checks user input.

Every problem is one `UsageError` naming the file, the key and the fix. Without a
config.toml the defaults of the contract apply (repo ".", store "hardware", build "build").
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import files, git
from .errors import GitError, UsageError
from .names import check_device, check_rev

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_NAME = "config.toml"
BUILD_MARKER = "flagtasks-build.json"
"""The file in a build tree's .git that says flagtasks made it (see build.py)."""
STATE_DIR = ".flagtasks"
"""The checkout's private folder: doit's dependency state, the run lock, staged patches."""
MODES = ("series", "squash", "auto")


@dataclass(frozen=True)
class Vendor:
    """One `[vendor.<DEV>]` section: what this checkout exports for a device."""

    device: str
    base: str
    current: str = "HEAD"
    mode: str = "auto"
    key: Path | None = None
    recipients: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Config:
    """The whole project configuration, with every path absolute."""

    root: Path
    repo: Path
    name: str
    hardware: Path
    build: Path
    vendors: dict[str, Vendor] = field(default_factory=dict)
    use: dict[str, str] = field(default_factory=dict)
    keys: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None

    @property
    def state_dir(self) -> Path:
        """Private folder for doit state, lock and staged plaintext (owner-only)."""
        return self.root / STATE_DIR


_SECTIONS = {"upstream", "vendor", "use", "keys"}
_UPSTREAM_KEYS = {"repo", "name", "hardware", "build"}
_VENDOR_KEYS = {"base", "current", "key", "mode", "recipients"}


def find_root(start: Path) -> Path:
    """The checkout a command runs in, found from any folder inside it as git does: the
    nearest folder up to the work tree's top that holds our config.toml, else that top.

    A submodule's checkout counts as part of its superproject's; a build tree flagtasks
    made is refused, since answering from it would be answering for the wrong folder.
    """
    start = start.resolve()
    top = git.work_tree_top(start)
    if top is None:
        if (start / CONFIG_NAME).is_file():
            return start
        raise UsageError(
            f"{start} is not inside a git checkout: run flagtasks in an upstream checkout"
        )
    top = top.resolve()
    while True:  # a submodule built inside a tree belongs to that tree
        if (top / ".git" / BUILD_MARKER).is_file():
            raise UsageError(
                f"{top} is a build tree made by flagtasks: run flagtasks from the checkout "
                "that built it"
            )
        outer = git.superproject(top)
        if outer is None:
            break
        top = outer.resolve()
    for folder in (start, *start.parents):
        if _is_ours(folder / CONFIG_NAME):
            return folder
        if folder == top:
            break
    return top


STATE_DB = "doit-state.sqlite3"


@functools.cache
def trusted_state(root: Path) -> Path:
    """The state folder decides what is up to date and what gets encrypted: trusted only
    when it is a real folder that git does not track (a pull request can commit files),
    and its dependency file, when there, is a database (doit would show a traceback)."""
    state = root / STATE_DIR
    if state.is_symlink():
        raise UsageError(f"{state} is a symbolic link: remove it (flagtasks makes the folder)")
    try:
        tracked = git.tracked_under(root, STATE_DIR)
    except (GitError, OSError):
        tracked = []  # not in a work tree: nothing can be tracked
    if tracked:
        raise UsageError(
            f"{state} is tracked by git ({tracked[0]}): flagtasks' state must not come "
            f"from the repository; git rm -r --cached {STATE_DIR} and commit"
        )
    db = state / STATE_DB
    try:
        with db.open("rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        return state
    except OSError:
        head = b""
    if head and head != b"SQLite format 3\x00":
        raise UsageError(
            f"{db} is not a doit state database: delete it (the next run redoes what is stale)"
        )
    return state


def _is_ours(path: Path) -> bool:
    """A config.toml of flagtasks (other tools use the name too): only our tables in it."""
    try:
        data = tomllib.loads(files.read_text(path))
    except (OSError, ValueError, RecursionError, UsageError):
        return path.is_file()  # ours or not, `load` names the file and what is wrong
    return bool(data) and set(data) <= _SECTIONS


def load(root: Path) -> Config:
    """Load `root/config.toml`, or the defaults when there is none."""
    root = root.resolve()
    path = root / CONFIG_NAME
    if not path.exists() and not path.is_symlink():
        return _build(root, {}, None)
    try:
        data = tomllib.loads(files.read_text(path))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply to be a configuration; fix it") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror}); fix or remove it") from None
    return _build(root, data, path)


def _build(root: Path, data: dict[str, Any], source: Path | None) -> Config:
    where = str(source or root / CONFIG_NAME)
    _no_unknown(where, "", data, _SECTIONS)
    upstream = _table(where, "upstream", data.get("upstream", {}))
    _no_unknown(where, "upstream.", upstream, _UPSTREAM_KEYS)
    repo = _inside(where, root, "upstream.repo", _string(where, "upstream.repo", upstream, "."))
    hardware_value = _string(where, "upstream.hardware", upstream, "hardware")
    no_links(root, Path(hardware_value), f"{where}: upstream.hardware")
    hardware = _inside(where, root, "upstream.hardware", hardware_value)
    build_value = _string(where, "upstream.build", upstream, "build")
    default_name = repo.name[:-4] if repo.name.endswith(".git") else repo.name
    name = _string(where, "upstream.name", upstream, default_name)
    if not _plain_name(name):
        raise UsageError(
            f"{where}: upstream.name {name[:60]!r} must be a plain folder name "
            "(no '/', no control characters, not starting with '.'), e.g. FlagScale"
        )
    build = build_folder(root, hardware, Path(build_value), f"{where}: upstream.build")
    _inside(where, root, "upstream.build", build_value)

    vendors = {}
    for dev, section in _table(where, "vendor", data.get("vendor", {})).items():
        vendors[dev] = _vendor(where, root, dev, section)
    use = {}
    for dev, base in _table(where, "use", data.get("use", {})).items():
        _device(where, f"use.{dev}", dev)
        if not isinstance(base, str):
            raise UsageError(
                f"{where}: use.{dev} must be a string (a base commit, e.g. 'aaaa1111')"
            )
        use[dev] = check_rev(base, f"{where}: use.{dev}")
    keys = {}
    for dev, key in _table(where, "keys", data.get("keys", {})).items():
        _device(where, f"keys.{dev}", dev)
        if not isinstance(key, str):
            raise UsageError(f"{where}: keys.{dev} must be a string (a key folder path)")
        keys[dev] = _key_path(where, root, f"keys.{dev}", key)
    return Config(
        root=root,
        repo=repo,
        name=name,
        hardware=hardware,
        build=build,
        vendors=vendors,
        use=use,
        keys=keys,
        source=source,
    )


def _vendor(where: str, root: Path, dev: str, section: Any) -> Vendor:
    _device(where, f"vendor.{dev}", dev)
    section = _table(where, f"vendor.{dev}", section)
    _no_unknown(where, f"vendor.{dev}.", section, _VENDOR_KEYS)
    if "base" not in section:
        raise UsageError(
            f'{where}: vendor.{dev}.base is missing; add base = "<tag, branch or SHA>"'
        )
    base = check_rev(
        _string(where, f"vendor.{dev}.base", section, ""), f"{where}: vendor.{dev}.base"
    )
    current = check_rev(
        _string(where, f"vendor.{dev}.current", section, "HEAD"), f"{where}: vendor.{dev}.current"
    )
    mode = _string(where, f"vendor.{dev}.mode", section, "auto")
    if mode not in MODES:
        raise UsageError(f"{where}: vendor.{dev}.mode {mode!r} must be one of: {', '.join(MODES)}")
    key = section.get("key")
    if key is not None and not isinstance(key, str):
        raise UsageError(f"{where}: vendor.{dev}.key must be a string (a key folder path)")
    recipients = section.get("recipients", [])
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise UsageError(f"{where}: vendor.{dev}.recipients must be a list of public key paths")
    return Vendor(
        device=dev,
        base=base,
        current=current,
        mode=mode,
        key=_key_path(where, root, f"vendor.{dev}.key", key) if key else None,
        recipients=tuple((root / r).resolve() for r in recipients),
    )


def _plain_name(name: str) -> bool:
    return (
        0 < len(name) <= 200
        and name.isprintable()
        and not any(c in name for c in "/\\")
        and not name.startswith(".")
    )


_SYSTEM = (Path("/proc"), Path("/sys"), Path("/dev"))


def no_links(root: Path, value: Path, what: str) -> None:
    """A project folder inside the checkout is never reached through a symbolic link: a
    pull request can commit one pointing anywhere (outside, or into .git)."""
    lexical = Path(os.path.normpath(root / value))
    if not lexical.is_relative_to(root):
        return
    for part in (lexical, *lexical.parents):
        if part == root:
            return
        if part.is_symlink():
            raise UsageError(
                f"{what} {str(value)[:200]}: {part} is a symbolic link in the checkout; "
                "replace it with a real folder"
            )


def build_folder(root: Path, hardware: Path, build: Path, what: str) -> Path:
    """Check a folder for build trees (`[upstream] build` or `--dir`): never inside a
    `.git` folder, the store, the state folder or the system's pseudo-filesystems, and a
    folder when it exists; symbolic links below it are refused when building."""
    shown = str(build)[:200]
    no_links(root, build, what)
    resolved = (root / build).resolve()
    if ".git" in resolved.parts or any(p == resolved or p in resolved.parents for p in _SYSTEM):
        raise UsageError(f"{what} {shown} is inside .git or a system folder; use e.g. build")
    for inside, name in ((hardware, "the store"), (root / STATE_DIR, "the state folder")):
        if resolved == inside or inside in resolved.parents:
            raise UsageError(f"{what} {shown} is inside {name} {inside}; use e.g. build")
    if resolved.exists() and not resolved.is_dir():
        raise UsageError(f"{what} {shown} is not a folder; give a folder for the build trees")
    return resolved


def _device(where: str, key: str, dev: str) -> None:
    try:
        check_device(dev)
    except UsageError as exc:
        raise UsageError(f"{where}: [{key}]: {exc.message}") from None


def _table(where: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {key} must be a table ([{key}]), not {type(value).__name__}")
    return value


def _string(where: str, key: str, table: dict[str, Any], default: str) -> str:
    value = table.get(key.rsplit(".", 1)[-1], default)
    if not isinstance(value, str):
        raise UsageError(f"{where}: {key} must be a string, not {type(value).__name__}")
    return value


def _no_unknown(where: str, prefix: str, table: dict[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise UsageError(
                f"{where}: unknown key {prefix}{key}; known keys: {', '.join(sorted(known))}"
            )


def _inside(where: str, root: Path, key: str, value: str) -> Path:
    """Resolve a project path and refuse one that escapes the folder holding config.toml."""
    path = (root / value).resolve()
    if path != root and root not in path.parents:
        raise UsageError(f"{where}: {key} = {value!r} escapes {root}; use a path inside it")
    return path


def _key_path(where: str, root: Path, key: str, value: str) -> Path:
    """Key folders are outside the repository by design; relative ones are taken from root."""
    path = Path(value).expanduser()
    path = path.resolve() if path.is_absolute() else (root / path).resolve()
    if path == root or root in path.parents:
        raise UsageError(
            f"{where}: {key} = {value!r} is inside the repository; keep keys outside it "
            "(e.g. ~/.flagtasks/keys/<DEV>)"
        )
    return path
