"""doit up-to-date checkers: when a task may skip its work.

Each is cheap and runs no git: it reads the marker of a build tree, the stored metadata
or a key file, so a no-op run costs little more than doit's own start-up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import FORMAT_VERSION, build, store
from .plan import StoredJob, content_id


class changed:  # noqa: N801 - named like doit's own `config_changed`
    """Like doit's config_changed, but the value is computed when doit checks the task
    (after its dependencies ran) instead of when tasks load: a key pair that `encrypt`
    creates mid-run must not make the next run look stale."""

    def __init__(self, name: str, func: Callable[..., Any], *args: Any) -> None:
        self.key = f"_changed_{name}"
        self.func = func
        self.args = args

    def _value(self) -> str:
        return json.dumps(self.func(*self.args), sort_keys=True, default=str)

    def __repr__(self) -> str:
        return f"changed({self.key.removeprefix('_changed_')!r})"

    def configure_task(self, task: Any) -> None:
        task.value_savers.append(lambda: {self.key: self._value()})

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        return bool(values.get(self.key) == self._value())


def encrypted_stored(stored: Path) -> bool:
    """The encrypted patch exists (its content is judged by the staged file it came from)."""
    return stored.is_file()


def tree_current(
    task: Any, dest: Path, digest: str, stored: StoredJob, force_default: bool
) -> bool:
    """The tree is there and built from these inputs and this content (read now, after
    format_patch may have rewritten it); `--force` always rebuilds."""
    force = task.options.get("force", force_default) if task.options else force_default
    return not force and build.is_current(dest, digest, content_id(stored))


def stored_matches(meta: Path, base: str, current: str, encrypted: bool) -> bool:
    """The stored adaptation still says it was made from this base and current."""
    found = store.read_meta(meta)
    base8 = meta.parent.name
    plain = meta.with_name(f"{base8}{store.PATCH}")
    if found and not encrypted:
        if store.file_digest(plain) != found.get("patch_sha256"):
            return False
        for sub in store.submodules_of(found):
            where = meta.with_name(store.sub_patch_name(base8, sub["path"], False))
            if store.file_digest(where) != sub.get("patch_sha256"):
                return False
    return found is not None and (
        found.get("base") == base
        and found.get("current") == current
        and bool(found.get("encrypted")) == encrypted
        and found.get("format") == FORMAT_VERSION
    )
