"""Turn config + store into the jobs the tasks run: which device builds which base.

This is the only work done when doit loads tasks, so it stays cheap: file reads plus
at most two git processes (one batched rev resolution, one batched date lookup).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import FORMAT_VERSION, git, store
from . import config as config_mod
from .config import Config
from .errors import UsageError
from .names import is_base8


@dataclass(frozen=True)
class VendorJob:
    """format_patch/encrypt/verify inputs for one `[vendor.<DEV>]` section."""

    device: str
    base: str
    current: str
    mode: str
    key: Path | None
    recipients: tuple[Path, ...]

    @property
    def base8(self) -> str:
        return self.base[:8]


@dataclass(frozen=True)
class StoredJob:
    """One adaptation in the store (or about to be written there by format_patch)."""

    device: str
    base8: str
    base: str | None
    patch: Path
    encrypted: bool
    meta: Path


@dataclass(frozen=True)
class BuildJob:
    """unpatch inputs for one device: the selected adaptation and where its tree goes."""

    stored: StoredJob
    dest: Path
    key: Path | None
    digest: str


@dataclass(frozen=True)
class Plan:
    config: Config
    vendors: dict[str, VendorJob] = field(default_factory=dict)
    stored: dict[str, dict[str, StoredJob]] = field(default_factory=dict)
    builds: dict[str, BuildJob] = field(default_factory=dict)
    force: bool = False

    @property
    def devices(self) -> list[str]:
        return sorted(set(self.stored) | set(self.vendors))

    @property
    def repo(self) -> Path:
        return self.config.repo

    @property
    def hardware(self) -> Path:
        return self.config.hardware

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def paths(self, files: list[Path]) -> list[str]:
        """File paths for doit, relative to the checkout's root where doit runs, so moving
        the checkout does not make every task look stale."""
        root = self.config.root
        return [str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for f in files]


def inputs(job: StoredJob, vendor: VendorJob | None) -> list[Path]:
    """The stored files a task reads: the patch, its metadata when there is one, and the
    submodule patches in its folder (made here, the metadata stands for those: it records
    their sha256, and format_patch may add or drop some)."""
    made_here = vendor is not None and vendor.base8 == job.base8
    if made_here:
        return [job.patch, job.meta]
    if not job.meta.is_file():
        return [job.patch]
    return [job.patch, job.meta, *_sub_patches(job)]


def _sub_patches(job: StoredJob) -> list[Path]:
    folder = job.patch.parent
    wanted = job.patch.name.removeprefix(job.base8)
    return [p for p in store.sub_patch_files(folder) if p.name.endswith(wanted)]


def build_inputs(job: StoredJob, vendor: VendorJob | None) -> list[Path]:
    """What a build depends on. An encrypted patch with metadata is tracked by its metadata
    (which holds the plaintext's sha256), so re-encrypting for new recipients rebuilds nothing.
    """
    found = inputs(job, vendor)
    return [job.meta] if job.encrypted and job.meta in found else found


def producer(vendor: VendorJob) -> str:
    """The task that writes a vendor device's stored patch."""
    return f"{'encrypt' if vendor.key else 'format_patch'}:{vendor.device}"


def digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


PICKS = "picks.json"
"""In the state folder: the base (and key folder) each device's user last built with
`flagtasks unpatch`, so later `doit unpatch` runs keep building it."""


def read_picks(state_dir: Path) -> dict[str, dict[str, str | None]]:
    """device -> {"base8": ..., "key": ...}; whatever is malformed is ignored."""
    try:
        data = json.loads((state_dir / PICKS).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    picks: dict[str, dict[str, str | None]] = {}
    for device, pick in data.items() if isinstance(data, dict) else ():
        if isinstance(pick, dict) and isinstance(pick.get("base8"), str):
            key = pick.get("key")
            picks[device] = {"base8": pick["base8"], "key": key if isinstance(key, str) else None}
    return picks


def record_pick(state_dir: Path, device: str, base8: str, key: Path | None) -> None:
    """Record the base a user built; a key given before is kept when none is given now
    (a later `unpatch` without --key-path must not make the tree look stale)."""
    picks = read_picks(state_dir)
    kept = picks.get(device, {}).get("key") if key is None else str(key)
    picks[device] = {"base8": base8, "key": kept}
    store.atomic_write(
        state_dir / PICKS, json.dumps(picks, indent=2, sort_keys=True).encode(), 0o600
    )


def make(config: Config, build_root: Path | None = None, force: bool = False) -> Plan:
    """The Plan for `config`; `build_root` overrides `[upstream] build` (CLI --dir)."""
    if not config.repo.is_dir() or not _looks_like_repo(config.repo):
        raise UsageError(
            f"upstream.repo {config.repo} is not a git repository: set [upstream] repo in "
            f"{config.source or 'config.toml'} or run from the root of an upstream checkout"
        )
    config_mod.trusted_state(config.root)
    found = store.scan(config.hardware)
    wanted: list[str] = []
    for vendor in config.vendors.values():
        wanted += [vendor.base, vendor.current]
    for device, rev in config.use.items():
        if not (is_base8(rev) and rev in found.get(device, {})):
            wanted.append(rev)
    for bases in found.values():
        for base8, adaptation in bases.items():
            wanted.append(_meta_base(adaptation) or base8)
    shas = git.resolve(config.repo, wanted)

    vendors = {dev: _vendor_job(config, shas, dev) for dev in config.vendors}
    stored: dict[str, dict[str, StoredJob]] = {}
    for device, bases in found.items():
        for base8, adaptation in bases.items():
            stored.setdefault(device, {})[base8] = StoredJob(
                device=device,
                base8=base8,
                base=shas.get(_meta_base(adaptation) or base8),
                patch=adaptation.stored,
                encrypted=adaptation.is_encrypted,
                meta=adaptation.folder / store.META,
            )
    for device, job in vendors.items():
        encrypted = job.key is not None
        stored.setdefault(device, {})[job.base8] = StoredJob(
            device=device,
            base8=job.base8,
            base=job.base,
            patch=store.patch_path(config.hardware, device, job.base8, encrypted),
            encrypted=encrypted,
            meta=store.meta_path(config.hardware, device, job.base8),
        )
    builds = _builds(config, stored, vendors, shas, build_root or config.build)
    return Plan(config=config, vendors=vendors, stored=stored, builds=builds, force=force)


def _looks_like_repo(path: Path) -> bool:
    """A checkout's root holds `.git` (a folder, or a file in a linked worktree or a
    submodule); anything else asks git, once."""
    return (path / ".git").exists() or git.is_repo(path)


def _meta_base(adaptation: store.Adaptation) -> str | None:
    """The full base SHA the metadata records: data, never a rev expression, so only 40 hex
    digits that start with the folder's BASE8 count (verify reports anything else)."""
    base = (adaptation.meta or {}).get("base")
    return base if store.is_full_base(base, adaptation.base8) else None


def _vendor_job(config: Config, shas: dict[str, str | None], device: str) -> VendorJob:
    vendor = config.vendors[device]
    for key, rev in (("base", vendor.base), ("current", vendor.current)):
        if shas.get(rev) is None:
            raise unknown_commit(config, rev, f"vendor.{device}.{key}")
    return VendorJob(
        device=device,
        base=shas[vendor.base] or "",
        current=shas[vendor.current] or "",
        mode=vendor.mode,
        key=vendor.key,
        recipients=vendor.recipients,
    )


def unknown_commit(config: Config, rev: str, where: str) -> UsageError:
    """The error for a rev that does not resolve, with the shallow-clone hint when it fits."""
    hint = "check the spelling or fetch it"
    if git.is_shallow(config.repo):
        hint = "this is a shallow clone: fetch more history (git fetch --unshallow)"
    return UsageError(f"{where}: commit {rev!r} not found in {config.repo}; {hint}")


def _builds(
    config: Config,
    stored: dict[str, dict[str, StoredJob]],
    vendors: dict[str, VendorJob],
    shas: dict[str, str | None],
    build_root: Path,
) -> dict[str, BuildJob]:
    chosen: dict[str, StoredJob] = {}
    undecided: dict[str, dict[str, StoredJob]] = {}
    picks = read_picks(config.state_dir)
    for device, bases in stored.items():
        picked = picks.get(device, {}).get("base8")
        if device in config.use:
            chosen[device] = _used(config, device, bases, shas)
        elif picked in bases:
            chosen[device] = bases[picked]
        elif device in vendors:
            chosen[device] = bases[vendors[device].base8]
        elif len(bases) == 1:
            chosen[device] = next(iter(bases.values()))
        else:
            undecided[device] = bases
    if undecided:
        known = [job.base for bases in undecided.values() for job in bases.values() if job.base]
        times = git.commit_times(config.repo, known)
        for device, bases in undecided.items():
            chosen[device] = max(
                bases.values(), key=lambda job: (times.get(job.base or "", -1), job.base8)
            )
    builds = {}
    for device, job in chosen.items():
        picked_key = picks.get(device, {}).get("key")
        key = (
            config.keys.get(device)
            or (vendors[device].key if device in vendors else None)
            or (Path(picked_key) if picked_key else None)
        )
        dest = build_root / device / config.name
        values = {
            "format": FORMAT_VERSION,
            "base": job.base,
            "base8": job.base8,
            "encrypted": job.encrypted,
        }
        builds[device] = BuildJob(stored=job, dest=dest, key=key, digest=digest(values))
    return builds


def content_id(job: StoredJob) -> str | None:
    """What a tree is built from, so a tree restored from a backup or cache of another
    adaptation is stale: the patch's sha256; for an encrypted patch with metadata, the
    plaintext's sha256 it records (checked after decryption), so re-encrypting rebuilds
    nothing."""
    meta = store.read_meta(job.meta) or {}
    subs = store.submodules_of(meta)
    if job.encrypted:
        claimed = meta.get("patch_sha256")
        if isinstance(claimed, str) and not meta.get("invalid"):
            said = [f"{s['path']}={s.get('patch_sha256')}" for s in subs]
            return ";".join([f"plaintext:{claimed}", *said])
    own = store.file_digest(job.patch)
    if not subs or own is None:
        return own
    folder = job.patch.parent
    names = [(s["path"], store.sub_patch_name(job.base8, s["path"], False)) for s in subs]
    said = [f"{path}={store.file_digest(folder / name)}" for path, name in names]
    return ";".join([own, *said])


def _used(
    config: Config, device: str, bases: dict[str, StoredJob], shas: dict[str, str | None]
) -> StoredJob:
    rev = config.use[device]
    base8 = rev if rev in bases else (shas.get(rev) or "")[:8]
    if base8 not in bases:
        have = ", ".join(sorted(bases)) or "none"
        raise UsageError(
            f"{config.source or 'config.toml'}: use.{device} = {rev!r} has no adaptation in "
            f"{config.hardware / device} (bases there: {have}); pick one of those"
        )
    return bases[base8]
