"""The doit DAG: format_patch -> encrypt -> verify, and the stored patch -> unpatch.

A dodo.py only needs `from flagtasks.tasks import *`. Generators are declarative: each
task's inputs are in `file_dep` / `uptodate`, so doit runs only what is stale. What the
tasks do is in actions.py; when they may skip it, in uptodate.py.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.tools import config_changed

from . import FORMAT_VERSION, actions, crypto, errors, hygiene, plan
from . import config as config_mod
from .config import STATE_DIR
from .engine import Reporter
from .uptodate import changed, encrypted_stored, stored_matches, tree_current

__all__ = [  # noqa: F822 - DOIT_CONFIG comes from __getattr__ on purpose
    "DOIT_CONFIG",
    "task_format_patch",
    "task_encrypt",
    "task_verify",
    "task_unpatch",
]

_DOIT_CONFIG = {
    "dep_file": f"{STATE_DIR}/{config_mod.STATE_DB}",
    "backend": "sqlite3",
    "default_tasks": ["format_patch", "encrypt", "verify", "unpatch"],
    "continue": True,  # report every failing device, not only the first
    "reporter": Reporter,
}

Task = dict[str, Any]


def doit_config() -> dict[str, Any]:
    """doit's settings; the state folder is made only when doit is about to use it, and
    never through a symbolic link."""
    with errors.boundary():
        config_mod.trusted_state(Path.cwd()).mkdir(mode=0o700, exist_ok=True)
    return _DOIT_CONFIG


def __getattr__(name: str) -> Any:
    """`DOIT_CONFIG` is computed on access (dodo.py's star import), not at import time."""
    if name == "DOIT_CONFIG":
        return doit_config()
    raise AttributeError(name)


@functools.cache
def _plan_for(root: Path, force: bool) -> plan.Plan:
    with errors.boundary():
        return plan.make(config_mod.load(root), force=force)


def current_plan() -> plan.Plan:
    """The Plan for the folder doit runs in, made once per process (planning only reads)."""
    return _plan_for(Path.cwd(), os.environ.get("FLAGTASKS_FORCE", "") not in ("", "0"))


def task_format_patch() -> Iterator[Task]:
    """Vendor side: base..current of each vendor device as a deterministic patch"""
    yield from format_patch_tasks(current_plan())


def task_encrypt() -> Iterator[Task]:
    """Vendor side: encrypt the adaptation of each device that has a key"""
    yield from encrypt_tasks(current_plan())


def task_verify() -> Iterator[Task]:
    """Stored patches apply exactly (tree ids), and the store is consistent"""
    yield from verify_tasks(current_plan())


def task_unpatch() -> Iterator[Task]:
    """User side: build/DEV/NAME = base + the patch of the device, for each device"""
    yield from unpatch_tasks(current_plan())


def namespace(p: plan.Plan) -> dict[str, Any]:
    """The same tasks over a given Plan, for running doit in-process (the CLI)."""

    def creator(source: Any) -> Any:
        def create() -> Iterator[Task]:
            yield from source(p)

        create.__doc__ = source.__doc__
        return create

    tasks = {f"task_{name}": creator(source) for name, source in GENERATORS.items()}
    return {"DOIT_CONFIG": doit_config(), **tasks}


def format_patch_tasks(p: plan.Plan) -> Iterator[Task]:
    """Vendor side: base..current of each vendor device as a deterministic patch"""
    yield {"basename": "format_patch", "name": None, "doc": format_patch_tasks.__doc__}
    for dev, job in p.vendors.items():
        stored = p.stored[dev][job.base8]
        staged = actions.staged_files(p.state_dir, dev, job.base8)
        yield {
            "name": dev,
            "doc": _doc(f"{dev}: {job.base8}..{job.current[:8]} ({job.mode})"),
            "actions": [(actions.format_patch, [p.repo, p.hardware, p.state_dir, job])],
            "targets": p.paths(staged if job.key else [stored.patch]),
            "uptodate": [
                config_changed(
                    {
                        "base": job.base,
                        "current": job.current,
                        "mode": job.mode,
                        "key": job.key is not None,
                        "format": FORMAT_VERSION,
                    }
                ),
                (stored_matches, [stored.meta, job.base, job.current, job.key is not None]),
            ],
            "verbosity": 2,
        }


def encrypt_tasks(p: plan.Plan) -> Iterator[Task]:
    """Vendor side: encrypt the staged patch of each device that has a key"""
    yield {"basename": "encrypt", "name": None, "doc": encrypt_tasks.__doc__}
    for dev, job in p.vendors.items():
        if job.key is None:
            continue
        stored = p.stored[dev][job.base8]
        yield {
            "name": dev,
            "doc": _doc(f"{dev}: encrypt {job.base8} for its recipients"),
            "actions": [(actions.encrypt, [p.hardware, p.state_dir, job])],
            "file_dep": p.paths(actions.staged_files(p.state_dir, dev, job.base8)),
            "targets": p.paths([stored.patch, stored.meta]),
            "uptodate": [
                changed("recipients", crypto.recipients_id, job.key, job.recipients),
                (encrypted_stored, [stored.patch]),
            ],
            "verbosity": 2,
        }


def verify_tasks(p: plan.Plan) -> Iterator[Task]:
    """Stored patches apply exactly (tree ids), and the store is consistent"""
    yield {"basename": "verify", "name": None, "doc": verify_tasks.__doc__}
    for dev in p.devices:
        jobs = sorted(p.stored.get(dev, {}).values(), key=lambda j: j.base8)
        vendor = p.vendors.get(dev)
        key = p.config.keys.get(dev) or (vendor.key if vendor else None)
        current = (vendor.base8, vendor.current) if vendor else None
        yield {
            "name": dev,
            "doc": _doc(f"{dev}: {len(jobs)} adaptation(s) apply to their bases"),
            "actions": [(actions.verify, [p.repo, jobs, key, current])],
            "file_dep": p.paths([path for j in jobs for path in plan.inputs(j, vendor)]),
            "task_dep": [plan.producer(vendor)] if vendor else [],
            "uptodate": [
                config_changed({"bases": [j.base for j in jobs], "format": FORMAT_VERSION}),
                changed("key", crypto.key_id, key),
            ],
            "verbosity": 2,
        }
    yield {
        "name": "store",
        "doc": "store hygiene: names, hetero.txt, no plaintext beside encrypted, no keys",
        "actions": [(hygiene.check_task, [p.config.root, p.hardware])],
        "task_dep": [plan.producer(vendor) for vendor in p.vendors.values()],  # not mid-write
        "uptodate": [False],
        "verbosity": 2,
    }


def unpatch_tasks(p: plan.Plan) -> Iterator[Task]:
    """User side: build/DEV/NAME = base + the patch of the device, for each device"""
    yield {"basename": "unpatch", "name": None, "doc": unpatch_tasks.__doc__}
    for dev, job in p.builds.items():
        vendor = p.vendors.get(dev)
        yield {
            "name": dev,
            "doc": _doc(f"{dev}: {job.stored.base8} -> {job.dest}"),
            "actions": [(actions.unpatch, [p.repo, job])],
            "file_dep": p.paths(plan.build_inputs(job.stored, vendor)),
            "task_dep": [plan.producer(vendor)] if vendor else [],
            "uptodate": [
                config_changed(job.digest),
                changed("key", crypto.key_id, job.key if job.stored.encrypted else None),
                (tree_current, [job.dest, job.digest, job.stored, p.force]),
            ],
            "params": [
                {
                    "name": "force",
                    "long": "force",
                    "type": bool,
                    "default": p.force,
                    "help": "rebuild over a tree that holds your changes (kept aside)",
                }
            ],
            "clean": [(actions.clean_tree, [p.state_dir, p.repo, job.dest])],
            "verbosity": 2,
        }


def _doc(text: str) -> str:
    """Task docs end up inside single-quoted shell strings (`doit tabcompletion`)."""
    return text.replace("'", "\u2019")


GENERATORS = {
    "format_patch": format_patch_tasks,
    "encrypt": encrypt_tasks,
    "verify": verify_tasks,
    "unpatch": unpatch_tasks,
}
