"""`flagtasks rebase`: carry a stored adaptation onto a newer upstream commit (the seed's "how
to iterate adaptation"), or forecast, for every device at once, which ones move cleanly."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import actions, crypto, errors, git, patches, plan, rebase, store
from ..config import Config
from ..errors import FlagtasksError, OperationError, UsageError
from ..names import check_device, check_rev
from ..plan import StoredJob, VendorJob
from . import given_path, known_device, load_config, outside_repo, take_lock

SCHEMA = 1


_USER_UMASK = [0o022]


def run(args: argparse.Namespace) -> int:
    _USER_UMASK[0] = os.umask(0o077)  # every scratch file holds plaintext: owner-only
    try:
        return _check(args) if args.check else _rebase(args)
    finally:
        os.umask(_USER_UMASK[0])


def _rebase(args: argparse.Namespace) -> int:
    if not args.device_type or len(args.device_type) != 1:
        raise UsageError("rebase needs one --device-type (or --check for a forecast)")
    if not args.base_commit_id:
        raise UsageError("rebase needs --base-commit-id: the base the adaptation is stored on")
    device = check_device(args.device_type[0])
    cfg = load_config()
    found = store.scan(cfg.hardware)
    known_device(cfg, device, found)
    old8 = _base8(cfg, check_rev(args.base_commit_id, "--base-commit-id"), device, found)
    onto = _resolve(cfg, check_rev(args.onto, "--onto"), "--onto")
    if onto[:8] == old8:
        raise UsageError(f"--onto {args.onto} is the adaptation's own base {old8}: nothing to do")
    key = _key(cfg, device, args.key_path)
    worktree = _worktree(cfg, args.worktree, device, onto) if args.worktree else None
    take_lock(cfg)
    p = plan.make(cfg)
    job = p.stored[device][old8]
    if job.base is None:
        raise plan.unknown_commit(cfg, old8, f"base of {device}")
    if worktree is not None and actions.sub_records(job, actions.checked_meta(job)):
        raise UsageError(
            f"{device} {old8} changes submodules: --worktree leaves the upstream's replay "
            "only; rebase without it for the report, then resolve in your copies and run "
            "flagtasks patch on the new base"
        )
    with (
        _plaintexts(cfg, job, key, onto) as (mbox, subs),
        tempfile.TemporaryDirectory(prefix="flagtasks-rebase-") as tmp,
    ):
        work = Path(tmp) / "work"
        outcome, inner = rebase.replay_with_subs(cfg.repo, work, job.base, onto, mbox, subs)
        print(_said(device, old8, onto, outcome, inner))
        if _conflicting(outcome, inner):
            if worktree is not None:
                _leave_worktree(cfg, job, onto, mbox, worktree)
            count = len(outcome.conflicts) + sum(len(o.conflicts) for o in inner.values())
            raise OperationError(
                f"{device} does not rebase cleanly onto {onto[:8]}: {count} commit(s) "
                f"conflict; nothing written to {cfg.hardware.name}/"
                + ("" if worktree else " (--worktree DIR leaves the replay to resolve)")
            )
        assert outcome.head is not None
        meta = actions.checked_meta(job)
        print(_store(cfg, job, key, meta, work, onto, outcome.head))
    return 0


def _conflicting(outcome: rebase.Outcome, inner: dict[str, rebase.Outcome]) -> bool:
    return bool(outcome.conflicts) or any(o.conflicts for o in inner.values())


def _base8(cfg: Config, rev: str, device: str, found: dict[str, Any]) -> str:
    if rev in found.get(device, {}):
        return rev
    sha = _resolve(cfg, rev, "--base-commit-id")
    if sha[:8] not in found.get(device, {}):
        have = ", ".join(sorted(found.get(device, {}))) or "none"
        raise UsageError(
            f"{device} has no adaptation on base {sha[:8]} in {cfg.hardware} (its bases: "
            f"{have}); pick one of those with --base-commit-id"
        )
    return sha[:8]


def _resolve(cfg: Config, rev: str, flag: str) -> str:
    sha = git.resolve(cfg.repo, [rev])[rev]
    if sha is None:
        raise plan.unknown_commit(cfg, rev, flag)
    return sha


def _key(cfg: Config, device: str, given: str | None) -> Path | None:
    if given:
        key = outside_repo(cfg, given_path(given), "--key-path")
        if not key.is_dir():
            raise UsageError(
                f"--key-path {key} is not a folder: give the folder with private_key.pem"
            )
        return key
    vendor = cfg.vendors.get(device)
    return cfg.keys.get(device) or (vendor.key if vendor else None)


def _worktree(cfg: Config, given: str, device: str, onto: str) -> Path:
    """Where --worktree may go: a new or empty folder outside the checkout, its git folder
    and its build folder (inside, it would be a stray in the store or plaintext in .git)."""
    typed = given_path(given)
    if typed.is_symlink():
        raise UsageError(f"--worktree {typed} is a symbolic link: give a real folder")
    folder = typed.resolve()
    common = git.objects_dir_cached(cfg.repo).parent
    for inside in (cfg.root, cfg.repo, cfg.build, common):
        if folder == inside.resolve() or folder.is_relative_to(inside.resolve()):
            raise UsageError(
                f"--worktree {folder} is inside {inside}: give a folder outside the checkout "
                f"(e.g. {cfg.root.parent / (cfg.root.name + '-rebase')})"
            )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"--worktree {folder} exists and is not an empty folder: pick a new one")
    parent = next((p for p in folder.parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise UsageError(f"--worktree {folder}: {parent} is not a folder; pick another place")
    branch = _branch(device, onto)
    if git.branch_exists(cfg.repo, branch):
        raise UsageError(
            f"branch {branch} already exists: delete it (git branch -D {branch}) first"
        )
    return folder


def _branch(device: str, onto: str) -> str:
    return f"flagtasks/rebase/{device}/{onto[:8]}"


@contextmanager
def _plaintexts(
    cfg: Config, job: StoredJob, key: Path | None, onto: str, quiet: bool = False
) -> Iterator[tuple[Path, list[rebase.SubReplay]]]:
    """The stored adaptation's plaintext, and each submodule patch's with what it moves
    onto (the commit the new base pins), in owner-only files of a private temporary folder
    (--check writes nothing in the checkout), checked as unpatch checks them."""
    meta = actions.checked_meta(job)
    records = actions.sub_records(job, meta)
    copies = actions.sub_copies(cfg.repo, job, records)
    pins = git.gitlinks_in(cfg.repo, onto) if records else {}
    with tempfile.TemporaryDirectory(prefix="flagtasks-rebase-") as private:
        path = Path(private) / "adaptation.patch"
        note = actions.write_checked_plaintext(job, key, meta, path)
        if note and not quiet:
            print(note, end="")  # e.g. a legacy encrypted patch cannot be authenticated
        subs = []
        for number, (record, copy) in enumerate(zip(records, copies, strict=True)):
            pin = pins.get(record.path)
            if pin is None:
                raise OperationError(
                    f"{onto[:8]} has no submodule {record.path}, which the {job.device} "
                    "adaptation changes: adapt the new base by hand and run flagtasks patch"
                )
            if not git.has_commit(copy, pin):
                raise OperationError(
                    f"submodule {record.path}: commit {pin[:12]}, which {onto[:8]} pins, is not "
                    f"in your copy of it: fetch it there (git -C {record.path} fetch), or check "
                    f"out {onto[:8]} and run git submodule update --init {record.path}"
                )
            sub_file = Path(private) / f"sub-{number}.patch"
            actions.write_checked_plaintext(job, key, meta, sub_file, record)
            subs.append(
                rebase.SubReplay(record.path, copy, record.base, pin, record.current, sub_file)
            )
        yield path, subs


def _said(
    device: str, old8: str, onto: str, outcome: rebase.Outcome, inner: dict[str, rebase.Outcome]
) -> str:
    lines = [_said_one(f"{device} {old8} -> {onto[:8]}", outcome)]
    lines += [_said_one(f"  submodule {path}", o) for path, o in inner.items()]
    return "\n".join(lines)


def _said_one(what: str, outcome: rebase.Outcome) -> str:
    head = f"{what}: {outcome.total} commit(s)"
    if outcome.conflicts:
        lines = [f"{head}, {len(outcome.conflicts)} conflict:"]
        for conflict in outcome.conflicts:
            where = "; ".join(f"{errors.printable(n)} ({w})" for n, w in conflict.files)
            lines.append(f"  commit {conflict.commit.number}/{outcome.total} "
                         f"{conflict.commit.subject!r}: {where}")  # fmt: skip
        return "\n".join(lines)
    if outcome.three_way:
        merged = ", ".join(str(c) for c in outcome.three_way)
        return f"{head}, clean; the three-way merge was needed for commit(s) {merged}"
    return f"{head}, clean (every commit applies as it is)"


def _store(
    cfg: Config, job: StoredJob, key: Path | None, meta: dict, work: Path, onto: str, head: str
) -> str:
    """Write the rebased adaptation as `patch` would (same mode, key and recipients; made and
    proven exact in the scratch), then verify it from the store with the upstream's objects
    alone."""
    mode = meta.get("mode") if meta.get("mode") in ("series", "squash") else "auto"
    made, subs = patches.make_adaptation(work, onto, head, str(mode))
    recipients = _recipients(cfg, job, key) if job.encrypted else None
    vendor = cfg.vendors.get(job.device)
    new = VendorJob(
        device=job.device,
        base=onto,
        current=head,
        mode=made.mode,
        key=key if job.encrypted else None,
        recipients=vendor.recipients if vendor else (),
    )
    said = actions.store_made(cfg.hardware, new, made, subs, recipients)
    stored = StoredJob(
        device=job.device,
        base8=onto[:8],
        base=onto,
        patch=store.patch_path(cfg.hardware, job.device, onto[:8], job.encrypted),
        encrypted=job.encrypted,
        meta=store.meta_path(cfg.hardware, job.device, onto[:8]),
    )
    return said + "\n" + actions.check_adaptation(cfg.repo, stored, key, None)


def _recipients(cfg: Config, job: StoredJob, key: Path | None) -> list:
    """The old adaptation's readers: the key's own public key and the configured recipients,
    which must be every key the old patch was readable by."""
    assert key is not None  # write_checked_plaintext needed it
    vendor = cfg.vendors.get(job.device)
    recipients = crypto.recipient_keys(key, vendor.recipients if vendor else ())
    wanted = crypto.readable_by(job.patch)
    have = sorted({crypto.fingerprint(r) for r in recipients})
    if wanted and set(wanted) - set(have):
        raise UsageError(
            f"{job.patch} is readable by {len(wanted)} key(s), and flagtasks has the public "
            f"keys of {len(set(wanted) & set(have))} of them: add the others' public keys as "
            f"recipients in [vendor.{job.device}] of config.toml"
        )
    return recipients


def _leave_worktree(cfg: Config, job: StoredJob, onto: str, mbox: Path, folder: Path) -> None:
    """`git am -3` stopped at the first conflict at `folder`, on a new branch at the new
    base, then the next steps. A plaintext adaptation gets a linked worktree of the
    checkout; an encrypted one a repository of its own that borrows the checkout's objects,
    so none of its plaintext lands in the checkout's .git (fetching the result is the
    vendor's own step)."""
    assert job.base is not None
    branch = _branch(job.device, onto)
    umask = os.umask(_USER_UMASK[0] if not job.encrypted else 0o077)
    try:
        if job.encrypted:
            folder.mkdir(parents=True, exist_ok=True)
            git.init_shared(folder, git.objects_dir_cached(cfg.repo), branch)
            git.checkout_new(folder, branch, onto)
        else:
            try:
                git.worktree_add(cfg.repo, folder, branch, onto)
            except FlagtasksError:
                if git.branch_exists(cfg.repo, branch):
                    git.delete_branch(cfg.repo, branch)
                raise
        os.umask(0o077)  # git am's copy of the patch
        stop = rebase.stop_at_first_conflict(folder, job.base, mbox)
    finally:
        os.umask(umask)
    kind = (
        "a repository of its own (the adaptation is encrypted)" if job.encrypted else "a worktree"
    )
    fetch = (
        f"  cd {cfg.root} && git fetch -q {folder} {branch}:{branch}   # the result, into "
        "this checkout\n"
        if job.encrypted
        else f"  cd {cfg.root}\n"
    )
    print(
        f"left {kind} at {folder} on branch {branch}, stopped at the first conflict "
        f"({', '.join(stop.unmerged) or 'see git status'}). Next:\n"
        f"  cd {folder}   # resolve the files, git add them\n"
        "  git am --continue   # repeat until the series is applied\n"
        f"{fetch}"
        f"  flagtasks patch --device-type {job.device} --base-commit-id {onto[:8]} "
        f"--current-commit-id {branch}" + (" --key-path <the key folder>" if job.encrypted else "")
    )


# ---- --check: the forecast for every device ----


@dataclass(frozen=True)
class Row:
    device: str
    base: str | None
    result: str
    commits: list[dict[str, Any]]
    files: list[str]
    note: str = ""


def _check(args: argparse.Namespace) -> int:
    """Try each device's selected adaptation onto REV; write nothing, take no lock."""
    if args.base_commit_id or args.worktree or args.key_path:
        raise UsageError("rebase --check takes --onto, --device-type and --json only")
    cfg = load_config()
    onto = _resolve(cfg, check_rev(args.onto, "--onto"), "--onto")
    found = store.scan(cfg.hardware)
    wanted = [check_device(d) for d in args.device_type or []]
    for device in wanted:
        known_device(cfg, device, found)
    p = plan.make(cfg)
    selected = _selected(cfg, p)
    devices = wanted or sorted(selected)
    jobs = [(d, selected[d]) for d in devices if d in selected]
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    shares = [jobs[n::workers] for n in range(workers)]  # one scratch per worker, reused
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda share: _forecast_all(cfg, onto, share), shares))
    by_device = {row.device: row for rows_ in done for row in rows_}
    rows = [by_device[d] for d, _ in jobs]
    combos = _combos(cfg, rows)
    if args.json:
        print(json.dumps(_document(onto, rows, combos), indent=2))
    else:
        _table(onto, rows, combos)
    return 1 if any(r.result in ("conflict", "error") for r in rows) else 0


def _selected(cfg: Config, p: plan.Plan) -> dict[str, StoredJob]:
    """Each stored device's `[use]` base, else its newest (by commit date)."""
    chosen: dict[str, StoredJob] = {}
    times = git.commit_times(
        cfg.repo, [j.base for bases in p.stored.values() for j in bases.values() if j.base]
    )
    for device, bases in p.stored.items():
        stored = {b8: j for b8, j in bases.items() if j.patch.is_file()}
        if not stored:
            continue
        use = cfg.use.get(device)
        pick = next((j for b8, j in stored.items() if use and (b8 == use or j.base == use)), None)
        chosen[device] = pick or max(
            stored.values(), key=lambda j: (times.get(j.base or "", -1), j.base8)
        )
    return chosen


def _forecast_all(cfg: Config, onto: str, jobs: list[tuple[str, StoredJob]]) -> list[Row]:
    """Forecast `jobs` one after the other in one scratch, which follows each replay with
    what differs only."""
    with tempfile.TemporaryDirectory(prefix="flagtasks-rebase-") as tmp:
        return [_forecast(cfg, onto, device, job, Path(tmp) / "work") for device, job in jobs]


def _forecast(cfg: Config, onto: str, device: str, job: StoredJob, work: Path) -> Row:
    vendor = cfg.vendors.get(device)
    key = cfg.keys.get(device) or (vendor.key if vendor else None)
    if job.encrypted and key is None:
        return Row(device, job.base, "no-key", [], [], "encrypted; give its key in [keys]")
    if job.base is None:
        return Row(device, None, "error", [], [], f"base {job.base8} is not in the checkout")
    try:
        with _plaintexts(cfg, job, key, onto, quiet=True) as (mbox, subs):
            outcome, inner = rebase.replay_with_subs(cfg.repo, work, job.base, onto, mbox, subs)
    except FlagtasksError as exc:
        return Row(device, job.base, "error", [], [], exc.message.splitlines()[0])
    results = [outcome.result, *(o.result for o in inner.values())]
    result = next((r for r in ("conflict", "three-way") if r in results), "clean")
    commits, files = _listed("", outcome), outcome.files
    for path, sub in inner.items():
        commits += _listed(f"{path}: ", sub)
        files += [f"{path}/{name}" for name in sub.files]
    return Row(device, job.base, result, commits, files)


def _listed(prefix: str, outcome: rebase.Outcome) -> list[dict[str, Any]]:
    """The commits a row names: the conflicting ones, else those the merge was needed for."""
    listed = [c.commit for c in outcome.conflicts] if outcome.conflicts else outcome.three_way
    return [{"number": c.number, "subject": f"{prefix}{c.subject}"} for c in listed]


def _combos(cfg: Config, rows: list[Row]) -> list[dict[str, Any]]:
    """Each hetero combo on a forecast device's base: does every device of it move?"""
    by_device = {r.device: r for r in rows}
    try:
        combos = store.read_hetero_any(cfg.hardware)
    except UsageError:
        return []
    out = []
    for combo in dict.fromkeys((c.base8, c.devices) for c in combos):
        base8, devices = combo
        forecast = [by_device.get(d) for d in devices]
        if not any(r and r.base and r.base.startswith(base8) for r in forecast):
            continue
        moves = all(
            r is not None and r.base is not None and r.base.startswith(base8)
            and r.result in ("clean", "three-way")
            for r in forecast
        )  # fmt: skip
        out.append({"base8": base8, "devices": list(devices), "moves": moves})
    return out


def _document(onto: str, rows: list[Row], combos: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "onto": onto,
        "devices": [
            {
                "device": r.device,
                "base": r.base,
                "result": r.result,
                "commits": r.commits,
                "files": r.files,
                **({"note": r.note} if r.note else {}),
            }
            for r in rows
        ],
        "combos": combos,
    }


def _table(onto: str, rows: list[Row], combos: list[dict[str, Any]]) -> None:
    print(f"forecast onto {onto[:8]}")
    if not rows:
        print("no stored adaptations")
    cells = [
        (
            r.device,
            (r.base or "-")[:8],
            r.result,
            errors.printable(", ".join(r.files))
            or ", ".join(f"{c['number']} {c['subject']!r}" for c in r.commits)
            or r.note
            or "-",
        )
        for r in rows
    ]
    header = ("DEVICE", "BASE", "RESULT", "DETAILS")
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in (header, *cells):
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    for combo in combos:
        said = "moves" if combo["moves"] else "does not move"
        print(f"hetero {combo['base8']}: {' '.join(combo['devices'])} {said}")
