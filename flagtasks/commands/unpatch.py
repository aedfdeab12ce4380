"""`flagtasks unpatch`: ready source trees for devices, in --dir or in this checkout."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import actions, config, git, plan, store, switch
from ..config import Config
from ..errors import UsageError
from ..names import check_device, check_rev, is_base8
from . import given_path, known_device, load_config, outside_repo, run_tasks, take_lock


def run(args: argparse.Namespace) -> int:
    devices = [check_device(d) for d in args.device_type]
    if len(set(devices)) != len(devices):
        raise UsageError("a device is given twice in --device-type: list each device once")
    rev = check_rev(args.commit_id, "--commit-id")
    cfg = load_config()
    found = store.scan(cfg.hardware)
    for device in devices:
        known_device(cfg, device, found)
    base8 = _base8(cfg, rev, devices, found)
    for device in devices:
        if base8 not in found.get(device, {}):
            have = ", ".join(sorted(found.get(device, {}))) or "none"
            raise UsageError(
                f"{device} has no adaptation on base {base8} in {cfg.hardware} "
                f"(its bases: {have}); pick one of those with --commit-id"
            )
    if len(devices) > 1:
        _check_combo(cfg.hardware, base8, devices)
    if args.dir is None and len(devices) > 1:
        raise UsageError("several devices need --dir (each gets DIR/<DEV>/<NAME>/)")
    keys = dict(cfg.keys)
    key = None
    if args.key_path:
        key = outside_repo(cfg, given_path(args.key_path), "--key-path")
        if not key.is_dir():
            raise UsageError(
                f"--key-path {key} is not a folder: give the folder with private_key.pem"
            )
        keys.update({device: key for device in devices})
    build_root = None
    if args.dir is not None:
        build_root = config.build_folder(cfg.root, cfg.hardware, Path(args.dir), "--dir")
    cfg = replace(cfg, use={d: base8 for d in devices}, keys=keys, vendors={})
    take_lock(cfg)
    p = plan.make(cfg, build_root=build_root, force=args.force)
    for device in devices:
        job = p.builds[device]
        if job.stored.base is None:
            raise plan.unknown_commit(cfg, base8, f"base of {device}")
        if job.stored.encrypted:
            # a key that cannot read the patch fails here, before doit would mark the
            # device's intact tree as not up to date
            actions.check_key(job.stored, job.key)
    if build_root is None:
        stored = p.builds[devices[0]].stored
        assert stored.base is not None
        meta = actions.checked_meta(stored)
        for leftover in cfg.state_dir.glob("patch-*"):  # of a killed run (we hold the lock)
            shutil.rmtree(leftover, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="patch-", dir=cfg.state_dir) as private:
            patch_file = Path(private) / "adaptation.patch"
            device_key = key or keys.get(stored.device)
            note = actions.write_checked_plaintext(stored, device_key, meta, patch_file)
            subs = []
            records = actions.sub_records(stored, meta)
            actions.sub_copies(cfg.repo, stored, records)  # each base as the store says
            for number, record in enumerate(records):
                sub_file = Path(private) / f"sub-{number}.patch"
                actions.write_checked_plaintext(stored, device_key, meta, sub_file, record)
                subs.append(
                    switch.SubSwitch(
                        record.path, record.base, record.current, record.tree, sub_file
                    )
                )
            said = switch.switch_checkout(cfg.repo, stored.device, stored.base, patch_file, subs)
            print(note + said)
        return 0
    code = run_tasks(p, ["run", *[f"unpatch:{d}" for d in devices]])
    if code == 0:
        for device in devices:
            plan.record_pick(cfg.state_dir, device, base8, keys.get(device) if key else None)
    return code


def _base8(cfg: Config, rev: str, devices: list[str], found: dict[str, Any]) -> str:
    """A store folder name as given, else whatever commit `rev` names."""
    if is_base8(rev) and any(rev in found.get(d, {}) for d in devices):
        return rev
    sha = git.resolve(cfg.repo, [rev])[rev]
    if sha is None:
        raise plan.unknown_commit(cfg, rev, "--commit-id")
    return sha[:8]


def _check_combo(hardware: Path, base8: str, devices: list[str]) -> None:
    combos = [c for c in store.read_hetero_any(hardware) if c.base8 == base8]
    if any(set(c.devices) == set(devices) for c in combos):
        return
    listed = "; ".join(" ".join(c.devices) for c in combos) or "none"
    raise UsageError(
        f"{' '.join(devices)} is not a hetero combo on {base8} in {hardware / store.HETERO} "
        f"(combos there: {listed}); unpatch devices one by one or add the combo with patch"
    )
