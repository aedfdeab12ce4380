"""Store hygiene for `verify`: what must be true of hardware/ and the repository as a whole.

Each check returns every problem it finds, so CI shows the full list in one run.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from . import crypto, git, store
from .engine import reported
from .errors import OperationError, UsageError
from .names import is_base8, is_device


def store_problems(hardware: Path) -> list[str]:
    """Names, plaintext beside encrypted, metadata presence, hetero.txt vs folders."""
    problems: list[str] = []
    if not hardware.is_dir():
        return problems
    found = store.scan(hardware)
    for entry in sorted(hardware.iterdir()):
        if entry.is_symlink():
            if entry.name == store.HETERO or entry.is_dir():
                problems.append(
                    f"{entry}: a symbolic link in the store; replace it with a real "
                    f"{'file' if entry.name == store.HETERO else 'folder'}"
                )
            continue
        if not entry.is_dir() or entry.name.startswith("."):
            continue  # the project's own files (README, LICENSE, ...) and hidden folders
        if not is_device(entry.name):
            problems.append(f"{entry}: not a device folder (<Vendor>_<Chip>); rename or remove it")
            continue
        for base_dir in sorted(entry.iterdir()):
            if base_dir.is_symlink():
                problems.append(f"{base_dir}: a symbolic link in the store; replace it")
            elif not base_dir.is_dir() or not is_base8(base_dir.name):
                problems.append(
                    f"{base_dir}: not a base folder (8 hex digits); rename or remove it"
                )
            elif base_dir.name not in found.get(entry.name, {}):
                problems.append(f"{base_dir}: holds no {base_dir.name}.patch; remove the folder")
            else:
                problems += [
                    f"{stray}: not part of the adaptation; remove it"
                    for stray in store.stray_files(base_dir)
                ]
    for bases in found.values():
        for adaptation in bases.values():
            if adaptation.plain and adaptation.encrypted:
                problems.append(
                    f"{adaptation.plain}: plaintext beside the encrypted patch; delete it"
                )
            meta = adaptation.meta
            if meta and meta.get("invalid"):
                problems.append(f"{adaptation.folder / store.META}: not valid JSON; regenerate it")
            elif meta and bool(meta.get("encrypted")) != adaptation.is_encrypted:
                problems.append(
                    f"{adaptation.folder / store.META}: says encrypted={meta.get('encrypted')} "
                    "but the stored patch is not; regenerate the adaptation"
                )
    source = store.hetero_file(hardware)
    try:
        combos = store.read_hetero_any(hardware)
    except UsageError as exc:
        return [*problems, exc.message]
    legacy = source is not None and source != hardware / store.HETERO
    seen: dict[str, tuple[str, ...]] = {}
    for combo in combos:
        if combo.base8 in seen and not (legacy and seen[combo.base8] == combo.devices):
            problems.append(f"{source}:{combo.line}: second line for {combo.base8}; keep one")
        seen[combo.base8] = combo.devices
        for device in combo.devices:
            if combo.base8 not in found.get(device, {}):
                problems.append(
                    f"{source}:{combo.line}: {device} has no adaptation on "
                    f"{combo.base8}; generate it or fix the line"
                )
    return problems


def hetero_notes(hardware: Path) -> list[str]:
    """What verify says, without failing, about a hetero.txt where FlagScale's tool put it."""
    source = store.hetero_file(hardware)
    if source is None or source == hardware / store.HETERO:
        return []
    return [
        f"note: combos are read from {source} (FlagScale's tool); flagtasks keeps them in "
        f"{hardware / store.HETERO}: git mv {source} {hardware / store.HETERO}"
    ]


def secret_problems(root: Path, hardware: Path) -> list[str]:
    """Private key material, or the plaintext of an encrypted adaptation, anywhere in the
    repository (tracked, or untracked and not ignored)."""
    if not git.is_repo(root):
        return []
    secrets = _encrypted_plaintext_hashes(hardware)
    problems = []
    for relative in git.listed_files(root):
        path = root / relative
        if path.is_symlink() or not path.is_file():
            continue
        try:
            problem = _secret_in(path, secrets)
        except OSError:
            continue
        if problem:
            problems.append(f"{relative}: {problem}")
    return problems


def _secret_in(path: Path, plaintext_hashes: set[str]) -> str | None:
    """Read a file once, in overlapping chunks, looking for keys and known plaintexts."""
    digest = hashlib.sha256()
    tail = b""
    plaintext_like = None
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            if plaintext_like is None:
                plaintext_like = chunk.startswith((b"From ", b"diff --git"))
            if crypto.contains_private_key(tail + chunk):
                return "holds private key material; remove it from the repository"
            tail = chunk[-_OVERLAP:]
            if plaintext_like and plaintext_hashes:
                digest.update(chunk)
    if plaintext_like and digest.hexdigest() in plaintext_hashes:
        return "is the plaintext of an encrypted adaptation; delete it"
    return None


_CHUNK = 1 << 20
_OVERLAP = 128


def _encrypted_plaintext_hashes(hardware: Path) -> set[str]:
    hashes = set()
    for bases in store.scan(hardware).values():
        for adaptation in bases.values():
            digest = (adaptation.meta or {}).get("patch_sha256")
            if adaptation.is_encrypted and isinstance(digest, str):
                hashes.add(digest)
    return hashes


def commit_problems(root: Path, hardware: Path, adaptation: store.Adaptation) -> list[str]:
    """What would stop `patch --commit` from committing an adaptation's own files: the
    checks of `verify:store` for them (kind, metadata, secrets)."""
    problems = []
    if adaptation.plain and adaptation.encrypted:
        problems.append(f"{adaptation.plain}: plaintext beside the encrypted patch; delete it")
    meta = adaptation.meta
    if not meta or meta.get("invalid"):
        problems.append(f"{adaptation.folder / store.META}: missing or not valid; regenerate it")
    secrets = _encrypted_plaintext_hashes(hardware)
    for path in (adaptation.stored, adaptation.folder / store.META, hardware / store.HETERO):
        if path.is_symlink():
            problems.append(f"{path}: a symbolic link; replace it with the file")
            continue
        if path.is_file():
            problem = _secret_in(path, secrets)
            if problem:
                problems.append(f"{path.relative_to(root)}: {problem}")
    return problems


@reported
def check_task(root: Path, hardware: Path) -> str:
    notes = "".join(f"{note}\n" for note in hetero_notes(hardware))
    problems = store_problems(hardware) + secret_problems(root, hardware)
    if problems:
        sys.stdout.write(notes)
        raise OperationError.of([f"{len(problems)} store problem(s):", *problems])
    return f"{notes}store is consistent"
