"""The patch store: `hardware/<DEV>/<BASE8>/` folders, their metadata, and hetero.txt.

Pure file handling, no git. Writes are atomic per file (temp + rename) and ordered so an
interrupted write is caught by the metadata check rather than taken as up to date.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from . import files
from .errors import UsageError
from .names import is_base8, is_device

PATCH = ".patch"
ENCRYPTED = ".patch.encrypted"
META = "meta.json"
HETERO = "hetero.txt"
LEGACY_HETERO = ("tools/patch/hetero.txt", "flagscale/tools/patch/hetero.txt")
"""Where FlagScale's own tool kept hetero.txt, relative to the folder holding hardware/;
read when hardware/hetero.txt does not exist (flagtasks writes hardware/hetero.txt)."""


@dataclass(frozen=True)
class Adaptation:
    """One stored (device, base) pair as found on disk."""

    device: str
    base8: str
    folder: Path
    plain: Path | None
    encrypted: Path | None
    meta: dict | None

    @property
    def stored(self) -> Path:
        """The patch file users apply: the encrypted one when it exists."""
        path = self.encrypted or self.plain
        assert path is not None
        return path

    @property
    def is_encrypted(self) -> bool:
        return self.encrypted is not None


def patch_path(hardware: Path, device: str, base8: str, encrypted: bool) -> Path:
    return hardware / device / base8 / f"{base8}{ENCRYPTED if encrypted else PATCH}"


def meta_path(hardware: Path, device: str, base8: str) -> Path:
    return hardware / device / base8 / META


def sub_patch_name(base8: str, path: str, encrypted: bool) -> str:
    """A submodule's patch beside the upstream's: `<BASE8>.<path, %-quoted>.patch`, so
    `third_party/Megatron-LM` is `<BASE8>.third_party%2FMegatron-LM.patch` (one folder, one
    name per path, and never mistaken for the upstream's own patch)."""
    return f"{base8}.{quote(path, safe='')}{ENCRYPTED if encrypted else PATCH}"


def sub_path_of(base8: str, name: str) -> str | None:
    """The submodule path a file name in a base folder stands for, or None when it is not
    a submodule patch's name."""
    for suffix in (ENCRYPTED, PATCH):
        if name.startswith(f"{base8}.") and name.endswith(suffix):
            middle = name[len(base8) + 1 : -len(suffix)]
            if middle and sub_patch_name(base8, unquote(middle), suffix == ENCRYPTED) == name:
                return unquote(middle)
    return None


def is_sub_path(path: object) -> bool:
    """A submodule path as metadata may give it: relative, plain components, no `.git`
    (a pull request writes metadata; its paths must never lead out of a tree)."""
    if not isinstance(path, str) or not path or len(path) > 4096:
        return False
    parts = path.split("/")
    return all(
        part not in ("", ".", "..")
        and part.lower() != ".git"
        and part.isprintable()
        and "\\" not in part
        for part in parts
    )


def submodules_of(meta: dict | None) -> list[dict]:
    """The submodule records of an adaptation's metadata, each a dict whose path passed
    `is_sub_path` (malformed records are `verify`'s to report)."""
    found = (meta or {}).get("submodules")
    if not isinstance(found, list):
        return []
    return [s for s in found if isinstance(s, dict) and is_sub_path(s.get("path"))]


def is_full_base(value: object, base8: str) -> bool:
    """A metadata object id (a base, a tree) is 40 lowercase hex digits starting with
    `base8` (the folder's BASE8 for a base, "" for a tree)."""
    return (
        isinstance(value, str)
        and len(value) == 40
        and all(c in "0123456789abcdef" for c in value)
        and value.startswith(base8)
    )


def read_meta(path: Path) -> dict | None:
    """The metadata dict, or None when absent (stores written by FlagScale's own tool)."""
    try:
        data = json.loads(files.read_text(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError, UsageError):
        return {"invalid": True}
    return data if isinstance(data, dict) else {"invalid": True}


def meta_bytes(meta: dict) -> bytes:
    """Canonical bytes, so the same metadata never shows up as a change in review."""
    return (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str | None:
    """sha256 of a file's bytes, or None when it does not exist (for staleness checks)."""
    try:
        return files.copy_hashed(path, None)
    except (OSError, UsageError):
        return None


def load_adaptation(hardware: Path, device: str, base8: str) -> Adaptation | None:
    """One adaptation, as `scan` finds it (None when the folder holds no patch)."""
    folder = hardware / device / base8
    if folder.is_symlink() or folder.parent.is_symlink() or not folder.is_dir():
        return None
    return _adaptation_in(folder, device, base8)


def scan(hardware: Path) -> dict[str, dict[str, Adaptation]]:
    """Every well-named adaptation in the store: device -> base8 -> Adaptation. Links are
    never followed (os.scandir, one pass: this runs at every doit start-up)."""
    found: dict[str, dict[str, Adaptation]] = {}
    try:
        devices = sorted(os.scandir(hardware), key=lambda e: e.name)
    except OSError:
        return found
    for dev in devices:
        if not is_device(dev.name) or not dev.is_dir(follow_symlinks=False):
            continue
        try:
            bases = sorted(os.scandir(dev.path), key=lambda e: e.name)
        except OSError:
            continue
        for base in bases:
            if is_base8(base.name) and base.is_dir(follow_symlinks=False):
                one = _adaptation_in(Path(base.path), dev.name, base.name)
                if one:
                    found.setdefault(dev.name, {})[base.name] = one
    return found


def _adaptation_in(folder: Path, device: str, base8: str) -> Adaptation | None:
    names = set(os.listdir(folder))
    plain, encrypted = f"{base8}{PATCH}", f"{base8}{ENCRYPTED}"
    if plain not in names and encrypted not in names:
        return None
    return Adaptation(
        device=device,
        base8=base8,
        folder=folder,
        plain=folder / plain if plain in names else None,
        encrypted=folder / encrypted if encrypted in names else None,
        meta=read_meta(folder / META) if META in names else None,
    )


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Write `data` to `path` via temp + rename; skip (return False) when already equal."""
    try:
        if path.read_bytes() == data:
            return False
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def base_folder(hardware: Path, device: str, base8: str) -> Path:
    """The folder an adaptation is written to, refused when it or its device folder is a
    symbolic link (a pull request can commit one, pointing anywhere)."""
    folder = hardware / device / base8
    for path in (folder.parent, folder):
        if path.is_symlink():
            raise UsageError(f"{path} is a symbolic link: replace it with a real folder")
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path} is not a folder: remove it")
    return folder


def sweep_temp(folder: Path) -> None:
    """Remove temp files an interrupted write left in a base folder (callers hold the lock)."""
    for leftover in folder.glob(".*.tmp") if folder.is_dir() else ():
        leftover.unlink(missing_ok=True)


def stray_files(folder: Path) -> list[Path]:
    """Files in a base folder that are not the patch, the encrypted patch, the metadata or
    a submodule patch the metadata names."""
    base8 = folder.name
    known = {f"{base8}{PATCH}", f"{base8}{ENCRYPTED}", META}
    for record in submodules_of(read_meta(folder / META)):
        known |= {sub_patch_name(base8, record["path"], enc) for enc in (False, True)}
    return sorted(p for p in folder.iterdir() if p.name not in known)


def sub_patch_files(folder: Path) -> list[Path]:
    """The submodule patches in a base folder, by name (whatever the metadata says)."""
    return sorted(p for p in folder.iterdir() if sub_path_of(folder.name, p.name) is not None)


def write_adaptation(
    hardware: Path,
    device: str,
    base8: str,
    patch: bytes,
    meta: dict,
    encrypted: bool,
    subs: dict[str, bytes] | None = None,
) -> None:
    """Store one adaptation: the submodules' patches (`subs`: path -> bytes) and the
    upstream's first, then metadata, then drop the other kind and submodule patches of an
    earlier generation.

    Only this base's folder changes. A stop between steps leaves metadata that does not
    match the patches, which `verify` reports and the next run repairs.
    """
    folder = base_folder(hardware, device, base8)
    sweep_temp(folder)
    subs = subs or {}
    keep = {sub_patch_name(base8, path, encrypted) for path in subs}
    for path, data in subs.items():
        atomic_write(folder / sub_patch_name(base8, path, encrypted), data)
    atomic_write(patch_path(hardware, device, base8, encrypted), patch)
    atomic_write(meta_path(hardware, device, base8), meta_bytes(meta))
    other = patch_path(hardware, device, base8, not encrypted)
    with contextlib.suppress(FileNotFoundError):
        other.unlink()
    for old in sub_patch_files(folder):
        if old.name not in keep:
            old.unlink(missing_ok=True)


# ---- hetero.txt ----


@dataclass(frozen=True)
class Combo:
    base8: str
    devices: tuple[str, ...]
    line: int


def parse_hetero(text: str, where: str = HETERO) -> list[Combo]:
    """Combos in file order; a malformed line is a UsageError naming it."""
    combos = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        base8, sep, rest = line.partition(":")
        devices = tuple(rest.split())
        base8 = base8.strip()
        if not sep or not is_base8(base8) or not devices or not all(map(is_device, devices)):
            raise UsageError(
                f"{where}:{number}: expected '<BASE8>: DEV1 DEV2 ...', got {raw.strip()[:80]!r}; "
                "fix or remove the line"
            )
        if len(set(devices)) != len(devices):
            raise UsageError(f"{where}:{number}: a device is listed twice; remove the duplicate")
        combos.append(Combo(base8, devices, number))
    return combos


def hetero_file(hardware: Path) -> Path | None:
    """The hetero.txt in force: hardware/hetero.txt, else a legacy one, else None."""
    for path in (hardware / HETERO, *(hardware.parent / rel for rel in LEGACY_HETERO)):
        if path.exists() or path.is_symlink():
            return path
    return None


def read_hetero_any(hardware: Path) -> list[Combo]:
    """The combos in force: hardware/hetero.txt, else the legacy file of FlagScale's tool."""
    path = hetero_file(hardware)
    return parse_hetero(_hetero_text(path), str(path)) if path else []


def _hetero_text(path: Path) -> str:
    """A hetero.txt's text ('' when absent); a link, a non-file or non-UTF-8 is bad input."""
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link: replace it with the file itself")
    try:
        return files.read_text(path)
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; fix or remove the file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror}); fix or remove it") from None


def with_combo(text: str, base8: str, devices: tuple[str, ...]) -> str:
    """hetero.txt text with the line for `base8` set to `devices`, comments kept.

    One line per base: an existing line for the base is replaced in place (later
    duplicates for the same base are dropped); otherwise the line is appended.
    """
    new_line = f"{base8}: {' '.join(devices)}"
    out, placed = [], False
    for raw in text.splitlines():
        code, hash_, comment = raw.partition("#")
        code = code.strip()
        if code.partition(":")[0].strip() == base8 and ":" in code:
            if not placed:
                out.append(f"{new_line}  #{comment}" if hash_ else new_line)
                placed = True
            continue
        out.append(raw)
    if not placed:
        out.append(new_line)
    return "\n".join(out) + "\n"


def write_combo(hardware: Path, base8: str, devices: tuple[str, ...]) -> bool:
    """Set the combo line for `base8` in hardware/hetero.txt, atomically. A legacy file of
    FlagScale's tool seeds it, so its combos carry over (repeated lines once)."""
    path = hardware / HETERO
    source = hetero_file(hardware) or path
    text = _hetero_text(source)
    parse_hetero(text, str(source))
    if source != path:
        text = "".join(f"{line}\n" for line in dict.fromkeys(text.splitlines()))
    return atomic_write(path, with_combo(text, base8, devices).encode())
