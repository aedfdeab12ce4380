"""Store hygiene for `verify`: what must be true of hardware/ and the repository as a whole.

Each check returns every problem it finds, so CI shows the full list in one run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import crypto, files, git, store
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
            if entry.name != store.HETERO and entry.is_dir():  # hetero.txt: said below
                problems.append(f"{entry}: a symbolic link in the store; replace it")
            continue
        if entry.name.startswith("."):
            continue  # hidden folders and files: not ours
        if not entry.is_dir():
            if not entry.is_file() and entry.name != store.HETERO:
                problems.append(f"{entry}: not a regular file or folder; remove it")
            continue  # the project's own files (README, LICENSE, ...)
        if not is_device(entry.name):
            problems.append(f"{entry}: not a device folder (<Vendor>_<Chip>); rename or remove it")
            continue
        if not any(entry.iterdir()):
            problems.append(f"{entry}: holds no adaptation; remove the folder")
        for base_dir in sorted(entry.iterdir()):
            if base_dir.is_symlink():
                problems.append(f"{base_dir}: a symbolic link in the store; replace it")
            elif base_dir.is_dir() and _foreign(base_dir):
                continue  # FlagScale's own per-backend folders: `foreign_notes`
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
                problems += [
                    f"{path}: a symbolic link in the store; replace it with the file"
                    for path in sorted(base_dir.iterdir())
                    if path.is_symlink() and path not in store.stray_files(base_dir)
                ]
    for bases in found.values():
        for adaptation in bases.values():
            if adaptation.plain and adaptation.encrypted:
                problems.append(
                    f"{adaptation.plain}: plaintext beside the encrypted patch; delete it"
                )
            problems += _sub_kind_problems(adaptation)
            meta = adaptation.meta
            if meta and meta.get("invalid"):
                problems.append(f"{adaptation.folder / store.META}: not valid JSON; regenerate it")
            elif meta and bool(meta.get("encrypted")) != adaptation.is_encrypted:
                said = repr(meta.get("encrypted"))[:40]
                problems.append(
                    f"{adaptation.folder / store.META}: says encrypted={said} "
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


def _foreign(folder: Path) -> bool:
    """A folder in a device folder that is FlagScale's own, not an adaptation: its newer
    store keeps `hardware/<DEV>/<backend>/` folders (`FlagScale`, `Megatron-LM`, `vllm`,
    ...), each described by a `diff.yaml`."""
    marker = folder / "diff.yaml"
    return not is_base8(folder.name) and marker.is_file() and not marker.is_symlink()


def foreign_notes(hardware: Path) -> list[str]:
    """What verify says, without failing, about folders in device folders it leaves alone."""
    found = []
    with contextlib.suppress(OSError):
        for device in sorted(hardware.iterdir()):
            if device.is_symlink() or not device.is_dir() or not is_device(device.name):
                continue
            found += [
                f"{d.relative_to(hardware)}"
                for d in sorted(device.iterdir())
                if d.is_dir() and not d.is_symlink() and _foreign(d)
            ]
    if not found:
        return []
    return [
        f"note: {len(found)} folder(s) in device folders are not flagtasks adaptations "
        f"(e.g. {found[0]}, FlagScale's own backend patches with a diff.yaml); left alone"
    ]


def _sub_kind_problems(adaptation: store.Adaptation) -> list[str]:
    """A submodule patch is stored as the upstream's is: encrypted when that one is, and
    never both kinds."""
    problems = []
    for path in store.sub_patch_files(adaptation.folder):
        encrypted = path.name.endswith(store.ENCRYPTED)
        if not encrypted and adaptation.is_encrypted:
            problems.append(f"{path}: plaintext beside the encrypted patches; delete it")
        elif encrypted and not adaptation.is_encrypted:
            problems.append(f"{path}: encrypted, but the adaptation's patch is not; regenerate it")
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
    secrets = _encrypted_plaintexts(hardware)
    problems = []
    for relative in git.listed_files(root):
        path = root / relative
        if path.is_symlink() or not path.is_file() or _too_big(path, hardware):
            continue
        try:
            problem = _secret_in(path, secrets)
        except OSError:
            continue
        if problem:
            problems.append(f"{relative}: {problem}")
    return problems


def _too_big(path: Path, hardware: Path) -> bool:
    """Files the scan skips: over the store's own limits (the store check reports those in
    hardware/), or over a gigabyte anywhere (data, not a key or a patch)."""
    size = path.stat().st_size
    if size > files.MAX_PATCH:
        return True
    small = path.name in (store.META, store.HETERO) and path.is_relative_to(hardware)
    return small and size > files.MAX_SMALL


KEY_PROBLEM = "holds private key material; remove it from the repository"
COPY_PROBLEM = "is the plaintext of an encrypted adaptation; delete it"
_CHUNK = 1 << 20
_OVERLAP = 2 * crypto.KEY_MARKER_SPAN
_GZIP_MAGIC = b"\x1f\x8b"
_PATCH_STARTS = (b"From ", b"diff --git")


@dataclass(frozen=True)
class _Plaintexts:
    """What a copy of an encrypted adaptation's plaintext is recognised by: the sha256s the
    metadata records, and a size no copy exceeds (twice the largest ciphertext, for CRLF line
    ends, plus a margin); a file or gzip stream larger than that is not hashed at all."""

    hashes: frozenset[str]
    limit: int


def _secret_in(path: Path, plaintexts: _Plaintexts) -> str | None:
    """Read a file once, in overlapping chunks, looking for keys and known plaintexts.

    A plaintext copy is recognised as it is, with CRLF line ends, with its trailing newlines
    added or removed, and gzip-compressed (decompressed as it is read, never more than
    `plaintexts.limit` bytes); only files that start like a patch, or a gzip stream that does,
    and are no larger than the limit are hashed, so a large repository costs one read.
    """
    digests: _Digests | None = None
    gunzip: _Gunzip | None = None
    tail = b""
    with path.open("rb") as handle:
        hashed = bool(plaintexts.hashes)
        hashed = hashed and os.fstat(handle.fileno()).st_size <= plaintexts.limit
        first = True
        while chunk := handle.read(_CHUNK):
            if first and hashed:
                if chunk.startswith(_GZIP_MAGIC):
                    gunzip = _Gunzip(plaintexts.limit)
                elif chunk.startswith(_PATCH_STARTS):
                    digests = _Digests()
            first = False
            if crypto.contains_private_key(tail + chunk):
                return KEY_PROBLEM
            tail = chunk[-_OVERLAP:]
            if digests is not None:
                digests.update(chunk)
            if gunzip is not None and not gunzip.feed(chunk):
                gunzip = None
    if gunzip is not None:
        digests = gunzip.finish()
    if digests is not None and digests.hexdigests() & plaintexts.hashes:
        return COPY_PROBLEM
    return None


class _Trimmed:
    """The sha256 of a stream whose trailing newlines are held back, so that it can be
    finished with any number of them."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._newlines = 0

    def copy(self) -> _Trimmed:
        twin = _Trimmed()
        twin._hash, twin._newlines = self._hash.copy(), self._newlines
        return twin

    def update(self, data: bytes) -> None:
        body = data.rstrip(b"\n")
        if body:
            _add_newlines(self._hash, self._newlines)
            self._hash.update(body)
            self._newlines = len(data) - len(body)
        else:
            self._newlines += len(data)

    def hexdigests(self) -> set[str]:
        """The stream's sha256 as it is, and with 0 to 3 trailing newlines instead."""
        found = set()
        for count in {self._newlines, 0, 1, 2, 3}:
            digest = self._hash.copy()
            _add_newlines(digest, count)
            found.add(digest.hexdigest())
        return found


def _add_newlines(digest: Any, count: int) -> None:
    while count > 0:
        step = min(count, _CHUNK)
        digest.update(b"\n" * step)
        count -= step


class _Digests:
    """The sha256s a copy of a patch may have: the bytes as they are and with CRLF turned
    into LF, each with any trailing newlines (`_Trimmed`). The LF form is only computed from
    the first carriage return on, forked from the first form, which is the same till then."""

    def __init__(self) -> None:
        self.head = b""
        self._raw = _Trimmed()
        self._lf: _Trimmed | None = None
        self._cr = False  # the LF form holds back a "\r" that ended the last piece

    def update(self, data: bytes) -> None:
        if len(self.head) < len(_PATCH_STARTS[1]):
            self.head += data[: len(_PATCH_STARTS[1]) - len(self.head)]
        if self._lf is None and b"\r" in data:
            self._lf = self._raw.copy()
        self._raw.update(data)
        if self._lf is not None:
            if self._cr:
                data = b"\r" + data
            self._cr = data.endswith(b"\r")
            self._lf.update((data[:-1] if self._cr else data).replace(b"\r\n", b"\n"))

    def hexdigests(self) -> set[str]:
        found = self._raw.hexdigests()
        if self._lf is not None:
            lf = self._lf.copy()
            if self._cr:
                lf.update(b"\r")
            found |= lf.hexdigests()
        return found


class _Gunzip:
    """A gzip stream decompressed as it is read, into `_Digests`, and given up (False from
    `feed`) as soon as it is broken, does not start like a patch or grows past `limit`: a
    gzip bomb costs at most `limit` bytes of work and one chunk of memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.digests = _Digests()
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._size = 0
        self._ended = False  # a complete stream was followed by other bytes

    def feed(self, data: bytes) -> bool:
        try:
            while data and not self._ended:
                if self._inflate.eof:  # what follows a complete member
                    if not data.startswith(_GZIP_MAGIC):
                        self._ended = True  # trailing bytes, which gunzip ignores too
                        break
                    self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = self._inflate.decompress(data, _CHUNK)
                if not self._take(out):
                    return False
                inflate = self._inflate
                while len(out) == _CHUNK and not (inflate.unconsumed_tail or inflate.eof):
                    out = inflate.decompress(b"", _CHUNK)  # output still inside zlib
                    if not self._take(out):
                        return False
                data = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
        except zlib.error:
            return False
        return True

    def _take(self, out: bytes) -> bool:
        self._size += len(out)
        self.digests.update(out)
        head = self.digests.head
        started = len(head) < len(_PATCH_STARTS[1]) or head.startswith(_PATCH_STARTS)
        return self._size <= self.limit and started

    def finish(self) -> _Digests | None:
        """The digests of the whole stream, or None when it ended early or is not a patch."""
        if not (self._ended or self._inflate.eof):
            return None
        return self.digests if self.digests.head.startswith(_PATCH_STARTS) else None


def _encrypted_plaintexts(hardware: Path) -> _Plaintexts:
    hashes = set()
    largest = 0
    for bases in store.scan(hardware).values():
        for adaptation in bases.values():
            digest = (adaptation.meta or {}).get("patch_sha256")
            if adaptation.encrypted is not None and isinstance(digest, str):
                hashes.add(digest)
                with contextlib.suppress(OSError):
                    largest = max(largest, adaptation.encrypted.stat().st_size)
    return _Plaintexts(frozenset(hashes), 2 * largest + 4096)


def commit_problems(root: Path, hardware: Path, adaptation: store.Adaptation) -> list[str]:
    """What would stop `patch --commit` from committing an adaptation's own files: the
    checks of `verify:store` for them (kind, metadata, secrets)."""
    problems = []
    if adaptation.plain and adaptation.encrypted:
        problems.append(f"{adaptation.plain}: plaintext beside the encrypted patch; delete it")
    problems += _sub_kind_problems(adaptation)
    problems += [
        f"{p}: not part of the adaptation; remove it" for p in store.stray_files(adaptation.folder)
    ]
    meta = adaptation.meta
    if not meta or meta.get("invalid"):
        problems.append(f"{adaptation.folder / store.META}: missing or not valid; regenerate it")
    secrets = _encrypted_plaintexts(hardware)
    own = [adaptation.stored, *store.sub_patch_files(adaptation.folder)]
    for path in (*own, adaptation.folder / store.META, hardware / store.HETERO):
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
    notes = "".join(f"{note}\n" for note in hetero_notes(hardware) + foreign_notes(hardware))
    problems = store_problems(hardware) + secret_problems(root, hardware)
    if problems:
        sys.stdout.write(notes)
        raise OperationError.of([f"{len(problems)} store problem(s):", *problems])
    return f"{notes}store is consistent"
