"""`flagtasks verify`: every stored adaptation applies exactly, and the store is clean."""

from __future__ import annotations

import argparse

from .. import plan, store
from ..names import check_device
from . import known_device, load_config, run_tasks, take_lock


def run(args: argparse.Namespace) -> int:
    devices = [check_device(d) for d in args.device_type or []]
    cfg = load_config()
    found = store.scan(cfg.hardware)
    for device in devices:
        known_device(cfg, device, found)
    take_lock(cfg)
    p = plan.make(cfg)
    names = [f"verify:{d}" for d in devices] + ["verify:store"] if devices else ["verify"]
    return run_tasks(p, ["run", *names])
