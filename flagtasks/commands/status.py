"""`flagtasks status`: devices x bases, what is stored, verified and built.

Read only: it takes no lock and runs no task, it asks doit which tasks are up to date.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import crypto, engine, errors, plan, store, tasks
from ..errors import UsageError
from . import load_config

SCHEMA = 1
COLUMNS = ("device", "base", "stored", "verified", "build", "hetero", "submodules")
LEGEND = """\
stored     plaintext | encrypted (N recipients) | encrypted (legacy: FlagScale's format) |
           not generated (a [vendor.*] section whose patch is not written yet)
verified   yes: verify passed for this store and key | -: verify has not passed since it changed
build      built: the tree holds this adaptation | stale: it must be rebuilt |
           missing: no tree yet | -: not the base this device builds
hetero     the combos (hardware/hetero.txt) this adaptation is part of
submodules the submodules the adaptation changes (each has its own patch)"""


def rows(p: plan.Plan, combos: list[store.Combo]) -> list[dict[str, Any]]:
    """One typed row per stored adaptation (and per vendor adaptation not generated yet)."""
    states = engine.task_states(tasks.namespace(p))
    out = []
    for device in p.devices:
        chosen = p.builds.get(device)
        for base8, job in sorted(p.stored.get(device, {}).items()):
            meta = store.read_meta(job.meta) or {}
            generated = job.patch.is_file() or job.patch.is_symlink()
            recipients = crypto.readable_by(job.patch) if job.encrypted and generated else []
            selected = bool(chosen and chosen.stored.base8 == base8)
            build = None
            if selected and chosen:
                if states.get(f"unpatch:{device}") == "U":
                    build = "built"
                elif (chosen.dest / ".git").is_dir():
                    build = "stale"
                else:
                    build = "missing"
            mode = meta.get("mode")
            out.append(
                {
                    "device": device,
                    "base8": base8,
                    "base": job.base,
                    "generated": generated,
                    "encrypted": job.encrypted,
                    "legacy_encryption": job.encrypted and generated and not recipients,
                    "recipients": recipients,
                    "mode": mode if isinstance(mode, str) else None,
                    "verified": states.get(f"verify:{device}") == "U",
                    "selected": selected,
                    "build": build,
                    "path": str(chosen.dest) if selected and chosen else None,
                    "hetero": [  # a line FlagScale's tool appended twice counts once
                        list(devices)
                        for devices in dict.fromkeys(
                            c.devices for c in combos if c.base8 == base8 and device in c.devices
                        )
                    ],
                    "submodules": [sub["path"] for sub in store.submodules_of(meta)],
                }
            )
    return out


def _cells(row: dict[str, Any]) -> dict[str, str]:
    if not row["generated"]:
        stored = "not generated"
    elif row["legacy_encryption"]:
        stored = "encrypted (legacy)"
    elif row["encrypted"]:
        stored = f"encrypted ({len(row['recipients'])} recipients)"
    else:
        stored = "plaintext"
    return {
        "device": row["device"],
        "base": row["base8"],
        "stored": stored,
        "verified": "yes" if row["verified"] else "-",
        "build": row["build"] or "-",
        "hetero": "; ".join(" ".join(c) for c in row["hetero"]) or "-",
        "submodules": ", ".join(row["submodules"]) or "-",
    }


def run(args: argparse.Namespace) -> int:
    p = plan.make(load_config())
    try:
        combos, broken = store.read_hetero_any(p.hardware), None
    except UsageError as exc:  # still list every device; say what is wrong, exit 2
        combos, broken = [], exc
    table = rows(p, combos)
    code = _show(args, p, table)
    if broken:
        errors.emit(broken.message)
        return broken.exit_code
    return code


def _show(args: argparse.Namespace, p: plan.Plan, table: list[dict[str, Any]]) -> int:
    if args.json:
        document = {
            "schema": SCHEMA,
            "root": str(p.config.root),
            "hardware": str(p.hardware),
            "adaptations": table,
        }
        print(json.dumps(document, indent=2))
        return 0
    if not table:
        print(f"no adaptations in {p.hardware} and no [vendor.*] in config.toml")
        return 0
    cells = [_cells(row) for row in table]
    widths = {c: max(len(c), *(len(r[c]) for r in cells)) for c in COLUMNS}
    print("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip())
    for row in cells:
        print("  ".join(row[c].ljust(widths[c]) for c in COLUMNS).rstrip())
    print()
    print(LEGEND)
    return 0
