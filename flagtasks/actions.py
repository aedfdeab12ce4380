"""What each doit task does, as plain functions of picklable job data.

Every action is `engine.reported`: it raises our errors, and doit shows them as one
line each (exit 1 failed, 2 bad input); what it returns is its report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def _metadata(job: VendorJob, made: patches.Made, plaintext_sha: str, encrypted: bool) -> dict:
    return {
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


def _same_content(old: dict | None, new: dict) -> bool:
    """Metadata equal but for the tool version: rewriting it would only churn."""
    if not old:
        return False
    skip = ("tool_version",)
    return {k: v for k, v in old.items() if k not in skip} == {
        k: v for k, v in new.items() if k not in skip
    }


@reported
def format_patch(repo: Path, hardware: Path, state_dir: Path, job: VendorJob) -> str:
    """Generate base..current and store it; for a keyed device, stage it for `encrypt`.

    Nothing is rewritten when the content is unchanged, so re-runs and fresh clones leave
    `git status` clean.
    """
    store.sweep_temp(store.base_folder(hardware, job.device, job.base8))
    made = patches.make(repo, job.base, job.current, job.mode)
    note = f"{made.note}\n" if made.note else ""
    digest = store.sha256(made.data)
    encrypted = job.key is not None
    meta = _metadata(job, made, digest, encrypted)
    where = store.patch_path(hardware, job.device, job.base8, encrypted)
    old = store.read_meta(store.meta_path(hardware, job.device, job.base8))
    unchanged = where.is_file() and _same_content(old, meta)
    if job.key is not None:
        stage, stage_meta = staged_files(state_dir, job.device, job.base8)
        stage.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if crypto.ensure_keypair(job.key):
            note += f"created a key pair in {job.key} (private_key.pem is owner-only)\n"
        old_stage = store.read_meta(stage_meta)
        if not (stage.is_file() and _same_content(old_stage, meta)):
            store.atomic_write(stage, crypto.seal_for_vendor(made.data, job.key), mode=0o600)
            store.atomic_write(stage_meta, store.meta_bytes(meta), mode=0o600)
        if unchanged:
            return f"{note}{where} is unchanged ({made.mode}, {made.commits} patch(es))"
        return f"{note}staged {job.device} {job.base8} ({made.mode}) for encryption"
    if unchanged and where.read_bytes() == made.data:
        return f"{note}{where} is unchanged ({made.mode}, {made.commits} patch(es))"
    store.write_adaptation(hardware, job.device, job.base8, made.data, meta, encrypted=False)
    return f"{note}wrote {where} ({made.mode}, {made.commits} patch(es))"


@reported
def encrypt(hardware: Path, state_dir: Path, job: VendorJob) -> str:
    """Encrypt the staged patch for the device's recipients; the ciphertext is rewritten
    only when the plaintext or the recipients changed."""
    assert job.key is not None
    stage, stage_meta = staged_files(state_dir, job.device, job.base8)
    where = store.patch_path(hardware, job.device, job.base8, True)
    if not stage.is_file():
        raise OperationError(f"nothing to encrypt for {job.device}: run format_patch:{job.device}")
    created = crypto.ensure_keypair(job.key)
    said = f"created a key pair in {job.key}\n" if created else ""
    recipients = crypto.recipient_keys(job.key, job.recipients)
    plaintext = crypto.decrypt(
        stage.read_bytes(), crypto.load_private_key(job.key), name=str(stage)
    )
    meta = store.read_meta(stage_meta) or {}
    old = store.read_meta(store.meta_path(hardware, job.device, job.base8))
    if not crypto.needs_rewrite(where, _same_content(old, meta), recipients):
        return f"{said}{where} is unchanged (same plaintext and recipients)"
    blob = crypto.encrypt(plaintext, recipients)
    store.write_adaptation(hardware, job.device, job.base8, blob, meta, encrypted=True)
    return f"{said}wrote {where} (encrypted for {len(recipients)} recipient(s))"


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


def read_plaintext(job: StoredJob, key: Path | None) -> bytes:
    """The plaintext mbox of a stored adaptation, decrypting with `key` when needed."""
    data = read_stored(job.patch)
    if not job.encrypted:
        return data
    return crypto.decrypt(data, crypto.load_private_key(_need_key(job, key)), name=str(job.patch))


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


def check_adaptation(repo: Path, job: StoredJob, key: Path | None, current_tree: str | None) -> str:
    """Verify one stored adaptation; returns a one-line result or raises OperationError."""
    _require_base(repo, job)
    meta = checked_meta(job)
    if job.encrypted and key is None:
        recipients = crypto.header_recipients(read_stored(job.patch), name=str(job.patch))
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
        tree = patches.apply_tree(repo, job.base, plaintext)
    except patches.PatchFailed as exc:
        raise OperationError(
            f"{job.patch}: {exc.message}; regenerate it against base {job.base8} or rebase "
            "the vendor branch onto it"
        ) from None
    expected = current_tree or _recorded_tree(job, meta or {})
    if expected and tree != expected:
        raise OperationError(
            f"{job.patch} applied to {job.base8} gives tree {tree[:12]}, expected {expected[:12]} "
            "(the current commit's tree): regenerate the adaptation"
        )
    checked = "tree matches" if expected else "applies cleanly"
    return f"{note}{job.patch}: {checked}"


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
            tree = git.tree_of(repo, current[1]) if current and current[0] == job.base8 else None
            lines.append(check_adaptation(repo, job, key, tree))
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
    spec = build.Spec(
        repo=repo,
        dest=job.dest,
        device=stored.device,
        base=stored.base,
        base8=stored.base8,
        digest=job.digest,
        content=plan.content_id(stored),
        expect_tree=_recorded_tree(stored, meta),
    )
    notes: list[str] = []

    def fill(patch_file: Path) -> None:
        notes.append(write_checked_plaintext(stored, job.key, meta, patch_file))

    report = build.build(spec, fill, force=force)
    return "".join(notes) + report


def write_checked_plaintext(job: StoredJob, key: Path | None, meta: dict, path: Path) -> str:
    """Write the adaptation's plaintext to the new owner-only file `path` (streamed when it is
    stored plain) and check it as verify does: its sha256 against the metadata, and bodies
    git am would decode. Returns the note to print ('' when there is nothing to say)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        private_key = crypto.load_private_key(_need_key(job, key)) if job.encrypted else None
        with _stored_file(job.patch):
            if private_key is None:
                digest = files.copy_hashed(job.patch, out)
            else:
                with files.open_regular(job.patch, files.MAX_PATCH) as source:
                    size = os.fstat(source.fileno()).st_size
                    digest = crypto.decrypt_stream(
                        source, size, out, private_key, name=str(job.patch)
                    )
    note = _authenticity(job, meta, digest)
    with path.open("rb") as handle:
        moved = patches.check_bodies(handle)
    return note + patches.gitlink_note(moved)


def clean_tree(state_dir: Path, repo: Path, dest: Path) -> None:
    """`doit clean`: remove a tree that holds none of the user's work. doit's clean shows
    no reporter, so a failure ends the run through the error boundary."""
    with errors.boundary():
        lock.acquire(state_dir)
        errors.exit_cleanly_on_sigterm()
        print(build.remove(dest, repo))
