"""`flagtasks patch`: make (and verify) a device's adaptation; several devices = hetero."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from .. import crypto, git, hygiene, plan, store
from ..config import Config, Vendor
from ..errors import GitError, OperationError, UsageError
from ..names import check_device, check_rev
from . import given_path, load_config, outside_repo, run_tasks, take_lock


def run(args: argparse.Namespace) -> int:
    devices = [check_device(d) for d in args.device_type]
    if len(set(devices)) != len(devices):
        raise UsageError("a device is given twice in --device-type: list each device once")
    base_rev = check_rev(args.base_commit_id, "--base-commit-id")
    current_rev = check_rev(args.current_commit_id, "--current-commit-id")
    cfg = load_config()
    shas = git.resolve(cfg.repo, [base_rev, current_rev])
    for flag, rev in (("--base-commit-id", base_rev), ("--current-commit-id", current_rev)):
        if shas[rev] is None:
            raise plan.unknown_commit(cfg, rev, flag)
    base8 = (shas[base_rev] or "")[:8]
    target, others = devices[-1], devices[:-1]
    if others:
        store.read_hetero_any(cfg.hardware)  # a broken hetero.txt is refused before any work
    found = store.scan(cfg.hardware)
    for device in others:
        if base8 not in found.get(device, {}):
            raise UsageError(
                f"hetero combo needs {device} on base {base8} first: run flagtasks patch "
                f"--device-type {device} --base-commit-id {base8} (it has: "
                f"{', '.join(sorted(found.get(device, {}))) or 'no adaptations'})"
            )
    configured = cfg.vendors.get(target)
    key = given_path(args.key_path) if args.key_path else (configured.key if configured else None)
    if key is not None:
        key = outside_repo(cfg, key, "--key-path" if args.key_path else "key")
    vendor = Vendor(
        device=target,
        base=base_rev,
        current=current_rev,
        mode=args.mode or (configured.mode if configured else "auto"),
        key=key,
        recipients=configured.recipients if configured else (),
    )
    take_lock(cfg)
    _say_uncommitted(cfg.repo, current_rev)
    if key is not None and crypto.ensure_keypair(key):
        print(f"created a key pair in {key} (private_key.pem is owner-only; keep it safe)")
    p = plan.make(replace(cfg, vendors={target: vendor}))
    steps = [f"format_patch:{target}"] + ([f"encrypt:{target}"] if key else [])
    code = run_tasks(p, ["run", "--always-execute", *steps, f"verify:{target}"])
    if code:
        return code
    if others and store.write_combo(cfg.hardware, base8, tuple(devices)):
        print(f"hetero.txt: {base8}: {' '.join(devices)}")
    if args.commit:
        _commit(cfg, target, base8, bool(others), p.vendors[target].current)
    return 0


def _say_uncommitted(repo: Path, current_rev: str) -> None:
    """Edits not yet committed are not part of current: say so rather than drop them."""
    if git.work_tree_top(repo) is None:
        return
    try:
        changes = git.tracked_changes(repo)
    except GitError:  # a submodule's git folder is gone: the patch says which one
        return
    if changes:
        print(
            f"note: {len(changes)} uncommitted change(s) in {repo} (e.g. {changes[0]}) are not "
            f"part of {current_rev}: commit them and run patch again to include them"
        )


def _commit(cfg: Config, device: str, base8: str, hetero: bool, current: str) -> None:
    """Commit the adaptation's own files only, once the store and secret checks pass them."""
    adaptation = store.load_adaptation(cfg.hardware, device, base8)
    if adaptation is None:
        raise OperationError(f"no adaptation of {device} on {base8} to commit")
    tracked = git.tracked_under(cfg.root, str(adaptation.folder.relative_to(cfg.root)), limit=None)
    paths = [
        store.patch_path(cfg.hardware, device, base8, encrypted=False),
        store.patch_path(cfg.hardware, device, base8, encrypted=True),
        store.meta_path(cfg.hardware, device, base8),
        *store.sub_patch_files(adaptation.folder),  # and earlier ones, to commit their removal
        *(cfg.root / rel for rel in tracked if store.sub_path_of(base8, Path(rel).name)),
    ]
    paths = list(dict.fromkeys(paths))
    if hetero:
        paths.append(cfg.hardware / store.HETERO)
    problems = hygiene.commit_problems(cfg.root, cfg.hardware, adaptation)
    if problems:
        raise OperationError.of(["not committed:", *problems])
    subject = git.subject(cfg.repo, current)
    message = subject if subject.startswith(f"[{device}]") else f"[{device}] {subject}"
    sha = git.commit_paths(cfg.root, paths, message)
    print(f"committed {sha[:8]} {message}")
