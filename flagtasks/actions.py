"""What each doit task does, as plain functions of picklable job data.

Every action is `engine.reported`: it raises our errors, and doit shows them as one
line each (exit 1 failed, 2 bad input); what it returns is its report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import (
    FORMAT_VERSION,
    build,
    crypto,
    errors,
    files,
    git,
    lock,
    patches,
    plan,
    store,
    submodules,
    version,
)
from .engine import reported
from .errors import FlagtasksError, OperationError, UsageError
from .plan import BuildJob, StoredJob, VendorJob


def staged_files(state_dir: Path, device: str, base8: str) -> list[Path]:
    """Where a keyed device's new patch waits for `encrypt` (sealed to the vendor's own key)
    and its metadata: format_patch's targets, encrypt's inputs."""
    stage = state_dir / "stage" / device / f"{base8}.patch.sealed"
    return [stage, stage.with_name(stage.name + ".json")]


def _staged_sub(state_dir: Path, device: str, base8: str, path: str) -> Path:
    """Where a submodule's patch waits for `encrypt`, beside the upstream's (the staged
    metadata lists them, so they need not be task targets)."""
    name = store.sub_patch_name(base8, path, encrypted=False)
    return state_dir / "stage" / device / f"{name}.sealed"


def _metadata(
    job: VendorJob, made: patches.Made, plaintext_sha: str, encrypted: bool,
    subs: list[patches.SubMade],
) -> dict:  # fmt: skip
    meta = {
        "base": job.base,
        "current": job.current,
        "tree": made.tree,
        "mode": made.mode,
        "commits": made.commits,
        "patch_sha256": plaintext_sha,
        "encrypted": encrypted,
        "format": FORMAT_VERSION,
        "tool_version": version(),
    }
    if subs:  # absent otherwise: stores without submodules keep their bytes
        meta["submodules"] = [
            {
                "path": sub.move.path,
                "url": sub.move.url,
                "base": sub.move.base,
                "current": sub.move.current,
                "tree": sub.made.tree,
                "mode": sub.made.mode,
                "commits": sub.made.commits,
                "patch_sha256": store.sha256(sub.made.data),
            }
            for sub in subs
        ]
    return meta


def _same_content(old: dict | None, new: dict) -> bool:
    """Metadata equal but for the tool version: rewriting it would only churn."""
    if not old:
        return False
    skip = ("tool_version",)
    return {k: v for k, v in old.items() if k not in skip} == {
        k: v for k, v in new.items() if k not in skip
    }


def _notes(made: patches.Made, subs: list[patches.SubMade]) -> str:
    said = [made.note] if made.note else []
    said += [f"submodule {sub.move.path}: {sub.made.note}" for sub in subs if sub.made.note]
    return "".join(f"{line}\n" for line in said)


def _subs_said(subs: list[patches.SubMade]) -> str:
    if not subs:
        return ""
    return "; submodules: " + ", ".join(
        f"{sub.move.path} ({sub.made.mode}, {sub.made.commits})" for sub in subs
    )


@reported
def format_patch(repo: Path, hardware: Path, state_dir: Path, job: VendorJob) -> str:
    """Generate base..current and store it; for a keyed device, stage it for `encrypt`.

    Nothing is rewritten when the content is unchanged, so re-runs and fresh clones leave
    `git status` clean.
    """
    store.sweep_temp(store.base_folder(hardware, job.device, job.base8))
    made, subs = patches.make_adaptation(repo, job.base, job.current, job.mode)
    note = _notes(made, subs)
    encrypted = job.key is not None
    meta = _metadata(job, made, store.sha256(made.data), encrypted, subs)
    where = store.patch_path(hardware, job.device, job.base8, encrypted)
    said = f"({made.mode}, {made.commits} patch(es){_subs_said(subs)})"
    if job.key is None:
        if _write_plain(hardware, job, made, meta, subs):
            return f"{note}wrote {where} {said}"
        return f"{note}{where} is unchanged {said}"
    stage, stage_meta = staged_files(state_dir, job.device, job.base8)
    stage.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if crypto.ensure_keypair(job.key):
        note += f"created a key pair in {job.key} (private_key.pem is owner-only)\n"
    old_stage = store.read_meta(stage_meta)
    if not (stage.is_file() and _same_content(old_stage, meta)):
        for sub in subs:
            sealed = crypto.seal_for_vendor(sub.made.data, job.key)
            where_sub = _staged_sub(state_dir, job.device, job.base8, sub.move.path)
            store.atomic_write(where_sub, sealed, mode=0o600)
        store.atomic_write(stage, crypto.seal_for_vendor(made.data, job.key), mode=0o600)
        store.atomic_write(stage_meta, store.meta_bytes(meta), mode=0o600)
    old = store.read_meta(store.meta_path(hardware, job.device, job.base8))
    if where.is_file() and _same_content(old, meta):
        return f"{note}{where} is unchanged {said}"
    return f"{note}staged {job.device} {job.base8} {said} for encryption"


def _subs_stored(folder: Path, job: VendorJob, subs: dict[str, bytes]) -> bool:
    """The plaintext submodule patches in `folder` are exactly `subs`, and no others."""
    names = {store.sub_patch_name(job.base8, path, False): data for path, data in subs.items()}
    present = {p.name for p in store.sub_patch_files(folder)}
    if present != set(names):
        return False
    return all(
        files.read_bytes(folder / name, files.MAX_PATCH) == data for name, data in names.items()
    )


def _write_plain(
    hardware: Path, job: VendorJob, made: patches.Made, meta: dict, subs: list[patches.SubMade]
) -> bool:
    """Store a plaintext adaptation unless the same one is there; True when written."""
    folder = store.base_folder(hardware, job.device, job.base8)
    where = store.patch_path(hardware, job.device, job.base8, False)
    old = store.read_meta(store.meta_path(hardware, job.device, job.base8))
    data = {sub.move.path: sub.made.data for sub in subs}
    if (
        where.is_file()
        and _same_content(old, meta)
        and where.read_bytes() == made.data
        and _subs_stored(folder, job, data)
    ):
        return False
    store.write_adaptation(
        hardware, job.device, job.base8, made.data, meta, encrypted=False, subs=data
    )
    return True


def _write_sealed(
    hardware: Path,
    job: VendorJob,
    meta: dict,
    recipients: list,
    plaintexts: Callable[[], tuple[bytes, dict[str, bytes]]],
) -> bool:
    """Store an adaptation encrypted for `recipients`, unless every file there already holds
    this plaintext for these readers (ciphertext differs on each run: rewriting it would
    churn); `plaintexts` gives the upstream's and each submodule's, read only when needed.
    True when written."""
    folder = store.base_folder(hardware, job.device, job.base8)
    where = store.patch_path(hardware, job.device, job.base8, True)
    old = store.read_meta(store.meta_path(hardware, job.device, job.base8))
    paths = [record["path"] for record in store.submodules_of(meta)]
    stored = [where, *(folder / store.sub_patch_name(job.base8, p, True) for p in paths)]
    same = _same_content(old, meta)
    if not any(crypto.needs_rewrite(path, same, recipients) for path in stored):
        return False
    plaintext, subs = plaintexts()
    blob = crypto.encrypt(plaintext, recipients)
    sealed = {path: crypto.encrypt(subs[path], recipients) for path in paths}
    store.write_adaptation(hardware, job.device, job.base8, blob, meta, encrypted=True, subs=sealed)
    return True


@reported
def encrypt(hardware: Path, state_dir: Path, job: VendorJob) -> str:
    """Encrypt the staged patches for the device's recipients; the ciphertext is rewritten
    only when the plaintext or the recipients changed."""
    assert job.key is not None
    stage, stage_meta = staged_files(state_dir, job.device, job.base8)
    where = store.patch_path(hardware, job.device, job.base8, True)
    if not stage.is_file():
        raise OperationError(f"nothing to encrypt for {job.device}: run format_patch:{job.device}")
    created = crypto.ensure_keypair(job.key)
    said = f"created a key pair in {job.key}\n" if created else ""
    recipients = crypto.recipient_keys(job.key, job.recipients)
    private_key = crypto.load_private_key(job.key)
    meta = store.read_meta(stage_meta) or {}

    def staged() -> tuple[bytes, dict[str, bytes]]:
        subs = {}
        for record in store.submodules_of(meta):
            sealed = _staged_sub(state_dir, job.device, job.base8, record["path"])
            data = files.read_bytes(sealed, files.MAX_PATCH)
            subs[record["path"]] = crypto.decrypt(data, private_key, name=str(sealed))
        return crypto.decrypt(stage.read_bytes(), private_key, name=str(stage)), subs

    if not _write_sealed(hardware, job, meta, recipients, staged):
        return f"{said}{where} is unchanged (same plaintext and recipients)"
    count = len(store.submodules_of(meta))
    extra = f" and {count} submodule patch(es)" if count else ""
    return f"{said}wrote {where}{extra} (encrypted for {len(recipients)} recipient(s))"


def store_made(
    hardware: Path,
    job: VendorJob,
    made: patches.Made,
    subs: list[patches.SubMade],
    recipients: list | None,
) -> str:
    """Store a made adaptation at once (rebase): plain, or encrypted for `recipients`, with
    the metadata `format_patch` writes, left as it is when unchanged (the same rebase twice
    gives the same bytes); another adaptation already on that base is never replaced."""
    encrypted = recipients is not None
    meta = _metadata(job, made, store.sha256(made.data), encrypted, subs)
    old = store.read_meta(store.meta_path(hardware, job.device, job.base8))
    other = store.load_adaptation(hardware, job.device, job.base8)
    if other is not None and not _same_content(old, meta):
        raise UsageError(
            f"{job.device} already has another adaptation on {job.base8} ({other.folder}): "
            "remove that folder (git rm -r) to replace it, or rebase onto another commit"
        )
    where = store.patch_path(hardware, job.device, job.base8, encrypted)
    said = f"({made.mode}, {made.commits} patch(es){_subs_said(subs)})"
    if recipients is None:
        written = _write_plain(hardware, job, made, meta, subs)
    else:
        data = {sub.move.path: sub.made.data for sub in subs}
        written = _write_sealed(hardware, job, meta, recipients, lambda: (made.data, data))
    if not written:
        return f"{where} is unchanged {said}"
    readers = f", encrypted for {len(recipients)} recipient(s)" if recipients else ""
    return f"wrote {where} {said}{readers}"


@contextmanager
def _stored_file(path: Path) -> Iterator[None]:
    """Reading a stored patch: a link, a FIFO, a huge or unreadable file there is that
    adaptation's error (exit 1), so the other devices are still checked and built."""
    try:
        yield
    except UsageError as exc:
        raise OperationError(exc.message) from None
    except OSError as exc:
        raise OperationError(f"{path}: cannot be read ({exc.strerror}); restore it") from None


def read_stored(path: Path) -> bytes:
    """A stored patch's bytes (see `_stored_file`)."""
    with _stored_file(path):
        return files.read_bytes(path, files.MAX_PATCH)


def read_plaintext(job: StoredJob, key: Path | None, patch: Path | None = None) -> bytes:
    """The plaintext mbox of a stored adaptation (or of its submodule patch `patch`),
    decrypting with `key` when needed."""
    patch = patch or job.patch
    data = read_stored(patch)
    if not job.encrypted:
        return data
    return crypto.decrypt(data, crypto.load_private_key(_need_key(job, key)), name=str(patch))


@dataclass(frozen=True)
class SubRecord:
    """A submodule the metadata says the adaptation changes, checked to be plain data."""

    path: str
    base: str
    current: str
    tree: str
    patch_sha256: str
    patch: Path


def sub_records(job: StoredJob, meta: dict) -> list[SubRecord]:
    """The submodule patches an adaptation's metadata lists: paths, object ids and digests
    are data from a pull request, so anything but plain relative paths and 40-hex ids is
    that adaptation's error."""
    raw = meta.get("submodules", [])
    if not isinstance(raw, list):
        raise OperationError(f"{job.meta}: submodules is not a list; regenerate the adaptation")
    records: list[SubRecord] = []
    for item in raw:
        ids = [item.get(k) for k in ("base", "current", "tree")] if isinstance(item, dict) else []
        digest = item.get("patch_sha256") if isinstance(item, dict) else None
        if not (
            isinstance(item, dict)
            and store.is_sub_path(item.get("path"))
            and all(store.is_full_base(v, "") for v in ids)
            and isinstance(digest, str)
            and len(digest) == 64
        ):
            raise OperationError(
                f"{job.meta}: a submodule entry is not a path with 40-hex base, current and "
                "tree and a sha256; regenerate the adaptation"
            )
        path = item["path"]
        if any(
            r.path == path or r.path.startswith(f"{path}/") or path.startswith(f"{r.path}/")
            for r in records
        ):
            raise OperationError(f"{job.meta}: submodule {path} is listed twice; regenerate it")
        name = store.sub_patch_name(job.base8, path, job.encrypted)
        base, current, tree = (str(v) for v in ids)
        records.append(SubRecord(path, base, current, tree, digest, job.patch.parent / name))
    return records


def sub_copies(repo: Path, job: StoredJob, records: list[SubRecord]) -> list[Path]:
    """The user's copy of each submodule the adaptation changes (see `_sub_copy`)."""
    assert job.base is not None
    if not records:
        return []
    names, links = git.gitmodules(repo, job.base), git.gitlinks_in(repo, job.base)
    return [_sub_copy(repo, job, record, names, links) for record in records]


def _sub_copy(
    repo: Path, job: StoredJob, record: SubRecord, names: dict, links: dict[str, str]
) -> Path:
    """The user's copy of a submodule the adaptation changes; the base's gitlink there must
    be the record's base (metadata cannot pick another commit or path)."""
    if links.get(record.path) != record.base:
        raise OperationError(
            f"{job.meta}: submodule {record.path} is not at {record.base[:12]} in base "
            f"{job.base8}; regenerate the adaptation"
        )
    return submodules.user_copy(repo, record.path, names.get(record.path, (None,))[0], record.base)


def _check_sub(
    job: StoredJob, record: SubRecord, key: Path | None, copy: Path, expected: str
) -> None:
    """A submodule patch applied to its base in the user's copy gives the recorded tree."""
    plaintext = read_plaintext(job, key, record.patch)
    if store.sha256(plaintext) != record.patch_sha256:
        raise OperationError(
            f"{record.patch} does not match {job.meta.name} (sha256 differs): regenerate the "
            "adaptation, or restore both files from the vendor"
        )
    try:
        tree = patches.apply_tree(copy, record.base, plaintext)
    except patches.PatchFailed as exc:
        raise OperationError(f"{record.patch}: {exc.message}; regenerate the adaptation") from None
    if tree != expected:
        raise OperationError(
            f"{record.patch} applied to {record.base[:8]} gives tree {tree[:12]}, expected "
            f"{expected[:12]}: regenerate the adaptation"
        )


def _need_key(job: StoredJob, key: Path | None) -> Path:
    if key is None:
        raise UsageError(
            f'{job.patch} is encrypted: give its key folder ([keys] {job.device} = "..." in '
            "config.toml, or --key-path)"
        )
    return key


def check_key(job: StoredJob, key: Path | None) -> None:
    """Refuse a key that cannot open an encrypted adaptation, reading only its header."""
    private_key = crypto.load_private_key(_need_key(job, key))
    with _stored_file(job.patch), files.open_regular(job.patch, files.MAX_PATCH) as source:
        crypto.check_key(source, private_key, name=str(job.patch))


def _authenticity(job: StoredJob, meta: dict, digest: str) -> str:
    """Check the plaintext against the sha256 its metadata records; FlagScale's legacy
    encrypted format carries no authentication, so without metadata say it cannot be
    checked. Returns the note to print ('' when there is nothing to say)."""
    recorded = meta.get("patch_sha256") if not meta.get("invalid") else None
    if isinstance(recorded, str):
        if recorded != digest:
            raise OperationError(
                f"{job.patch} does not match {job.meta.name} (sha256 differs): regenerate the "
                "adaptation, or restore both files from the vendor"
            )
        return ""
    if job.encrypted and crypto.is_legacy(_head(job.patch, len(crypto.MAGIC))):
        return (
            f"note: {job.patch} is in FlagScale's legacy encrypted format, which carries no "
            "authentication, and has no metadata to check it against\n"
        )
    return ""


def _recorded_tree(job: StoredJob, meta: dict) -> str | None:
    """The tree id the metadata says the patch gives: data, so 40 hex digits or an error."""
    tree = meta.get("tree")
    if tree is None or store.is_full_base(tree, ""):
        return tree
    raise OperationError(f"{job.meta}: tree is not a 40-hex tree id; regenerate the adaptation")


def _head(path: Path, size: int) -> bytes:
    """The first bytes of a stored patch that `read_stored` already accepted."""
    with path.open("rb") as handle:
        return handle.read(size)


def _require_base(repo: Path, job: StoredJob) -> None:
    """A stored base missing from the upstream is bad input: say how to get it."""
    if job.base is None:
        raise UsageError(
            f"base {job.base8} of {job.patch} is not in {repo}: fetch more history "
            "(git fetch --unshallow) or update the upstream"
        )


def checked_meta(job: StoredJob) -> dict:
    """The adaptation's metadata ({} when it has none, as in FlagScale's own stores), or
    that adaptation's error when it is there but unusable: verify and unpatch alike."""
    meta = store.read_meta(job.meta)
    if meta is None:
        return {}
    if meta.get("invalid"):
        raise OperationError(f"{job.meta} is not valid metadata: regenerate the adaptation")
    if not store.is_full_base(meta.get("base"), job.base8):
        raise OperationError(
            f"{job.meta}: base is not the 40 hex digits of a commit starting with {job.base8}; "
            "regenerate the adaptation"
        )
    return meta


def check_adaptation(repo: Path, job: StoredJob, key: Path | None, current: str | None) -> str:
    """Verify one stored adaptation (vendor side: against `current`, the vendor's commit);
    returns a one-line result or raises OperationError."""
    _require_base(repo, job)
    meta = checked_meta(job)
    records = sub_records(job, meta)
    if job.encrypted and key is None:
        recipients = crypto.header_recipients(read_stored(job.patch), name=str(job.patch))
        for record in records:
            crypto.header_recipients(read_stored(record.patch), name=str(record.patch))
        shown = f"{len(recipients)} recipient(s)" if recipients else "legacy format"
        return f"{job.patch}: header ok ({shown}); content check skipped: no key"
    plaintext = read_plaintext(job, key)
    if meta and meta.get("patch_sha256") != store.sha256(plaintext):
        raise OperationError(
            f"{job.meta} does not match {job.patch.name} (sha256 differs): regenerate the "
            "adaptation with format_patch"
        )
    note = _authenticity(job, meta or {}, store.sha256(plaintext))
    assert job.base is not None  # _require_base
    try:
        tree, links = patches.apply_links(repo, job.base, plaintext, [r.path for r in records])
    except patches.PatchFailed as exc:
        raise OperationError(
            f"{job.patch}: {exc.message}; regenerate it against base {job.base8} or rebase "
            "the vendor branch onto it"
        ) from None
    expected = git.tree_of(repo, current) if current else _recorded_tree(job, meta or {})
    if expected and tree != expected:
        raise OperationError(
            f"{job.patch} applied to {job.base8} gives tree {tree[:12]}, expected {expected[:12]} "
            "(the current commit's tree): regenerate the adaptation"
        )
    _check_subs(repo, job, key, current, records, links)
    checked = "tree matches" if expected else "applies cleanly"
    subs = f" (and {len(records)} submodule patch(es))" if records else ""
    return f"{note}{job.patch}: {checked}{subs}"


def _check_subs(
    repo: Path,
    job: StoredJob,
    key: Path | None,
    current: str | None,
    records: list[SubRecord],
    links: dict[str, str],
) -> None:
    """Every submodule patch by tree id: vendor side against the vendor's copy at current
    (and the metadata must list exactly the submodules base..current moves), user side
    against the metadata."""
    assert job.base is not None
    if current:
        moved = {m.path: m for m in submodules.moves(repo, job.base, current)}
        listed = {r.path: r for r in records}
        if set(moved) != set(listed) or any(
            (m.base, m.current) != (listed[p].base, listed[p].current) for p, m in moved.items()
        ):
            raise OperationError(
                f"{job.meta} does not list the submodules {job.base8}..{current[:8]} moves "
                f"({', '.join(sorted(moved)) or 'none'}): regenerate the adaptation"
            )
    if not records:
        return
    copies = sub_copies(repo, job, records)
    for record in records:  # what unpatch builds there must be what the patch points at
        if links.get(record.path) != record.current:
            raise OperationError(
                f"{job.patch} does not leave submodule {record.path} at {record.current[:12]}, "
                f"as {job.meta.name} says: regenerate the adaptation"
            )
    for record, copy in zip(records, copies, strict=True):
        expected = git.tree_of(copy, record.current) if current else record.tree
        _check_sub(job, record, key, copy, expected)


@reported
def verify(
    repo: Path, jobs: list[StoredJob], key: Path | None, current: tuple[str, str] | None
) -> str:
    """Check every stored adaptation of one device; report all failures, not the first.

    `current` is (base8, current SHA) on the vendor side: that adaptation must give
    current's tree; the others (and every one on the user side) their recorded tree.
    """
    lines, failures = [], []
    for job in jobs:
        try:
            mine = current[1] if current and current[0] == job.base8 else None
            lines.append(check_adaptation(repo, job, key, mine))
        except FlagtasksError as exc:
            failures.append(exc)
    if failures:
        worst = UsageError if all(f.exit_code == 2 for f in failures) else OperationError
        raise worst.of([f.message for f in failures])
    return "\n".join(lines)


@reported
def unpatch(repo: Path, job: BuildJob, force: bool = False) -> str:
    """Build the device's tree from its selected adaptation."""
    stored = job.stored
    _require_base(repo, stored)
    meta = checked_meta(stored)
    assert stored.base is not None  # _require_base
    records = sub_records(stored, meta)
    copies = sub_copies(repo, stored, records)  # a user without one stops here, no tree made
    subs = tuple(
        build.SubSpec(r.path, r.base, r.current, r.tree, git.objects_dir(copy))
        for r, copy in zip(records, copies, strict=True)
    )
    spec = build.Spec(
        repo=repo,
        dest=job.dest,
        device=stored.device,
        base=stored.base,
        base8=stored.base8,
        digest=job.digest,
        content=plan.content_id(stored),
        expect_tree=_recorded_tree(stored, meta),
        subs=subs,
    )
    notes: list[str] = []
    by_path = {r.path: r for r in records}

    def fill(patch_file: Path, path: str) -> None:
        record = by_path.get(path)
        notes.append(write_checked_plaintext(stored, job.key, meta, patch_file, record))

    report = build.build(spec, fill, force=force)
    return "".join(notes) + report


def write_checked_plaintext(
    job: StoredJob, key: Path | None, meta: dict, path: Path, record: SubRecord | None = None
) -> str:
    """Write the adaptation's plaintext (or its submodule patch's, for `record`) to the new
    owner-only file `path` (streamed when it is stored plain) and check it as verify does:
    its sha256 against the metadata, and bodies git am would decode. Returns the note to
    print ('' when there is nothing to say)."""
    source_path = record.patch if record else job.patch
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        private_key = crypto.load_private_key(_need_key(job, key)) if job.encrypted else None
        with _stored_file(source_path):
            if private_key is None:
                digest = files.copy_hashed(source_path, out)
            else:
                with files.open_regular(source_path, files.MAX_PATCH) as source:
                    size = os.fstat(source.fileno()).st_size
                    digest = crypto.decrypt_stream(
                        source, size, out, private_key, name=str(source_path)
                    )
    if record is not None:
        if digest != record.patch_sha256:
            raise OperationError(
                f"{record.patch} does not match {job.meta.name} (sha256 differs): regenerate "
                "the adaptation, or restore both files from the vendor"
            )
        with path.open("rb") as handle:
            patches.check_bodies(handle)
        return ""
    note = _authenticity(job, meta, digest)
    with path.open("rb") as handle:
        moved = patches.check_bodies(handle)
    carried = {r["path"] for r in store.submodules_of(meta)}
    return note + patches.gitlink_note([m for m in moved if m not in carried])


def clean_tree(state_dir: Path, repo: Path, dest: Path) -> None:
    """`doit clean`: remove a tree that holds none of the user's work. doit's clean shows
    no reporter, so a failure ends the run through the error boundary."""
    with errors.boundary():
        lock.acquire(state_dir)
        errors.exit_cleanly_on_sigterm()
        print(build.remove(dest, repo))
