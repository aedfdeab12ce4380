"""One module per command of `flagtasks`; cli.py only wires argparse to them."""

from __future__ import annotations

import os
from pathlib import Path

from .. import config, engine, errors, git, lock, plan, store, switch, tasks
from ..errors import UsageError

_STARTED_IN: list[Path] = []


def given_path(text: str) -> Path:
    """A path the user typed, relative to the folder the command was started in (as git
    takes paths), although the command then runs from the checkout's root."""
    path = Path(text).expanduser()
    start = _STARTED_IN[0] if _STARTED_IN else Path.cwd()
    return path if path.is_absolute() else start / path


def load_config() -> config.Config:
    """The configuration of the checkout the command runs in, found from any folder inside
    it; doit's state paths are relative, so the command continues from the checkout's root."""
    _STARTED_IN[:] = [Path.cwd()]
    root = config.find_root(Path.cwd())
    os.chdir(root)
    cfg = config.load(root)
    _finish_interrupted_switch(cfg)
    branch = _in_place_branch(cfg.repo)
    if branch and not store.scan(cfg.hardware):
        raise UsageError(
            f"{cfg.repo} is on {branch}, which an in-place unpatch made (its "
            f"{cfg.hardware.name}/ holds no adaptation): switch back first, e.g. git checkout -"
        )
    return cfg


def _in_place_branch(repo: Path) -> str | None:
    """The `flagtasks/<DEV>/<BASE8>` branch the checkout is on, read from .git/HEAD."""
    try:
        head = (repo / ".git" / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    name = head.removeprefix("ref: refs/heads/")
    return name if name != head and name.startswith("flagtasks/") else None


def _finish_interrupted_switch(cfg: config.Config) -> None:
    """A killed in-place unpatch left its journal: undo it (or keep its finished branch)
    before anything reads the checkout, whose hardware/ the switch may have hidden."""
    gitdir = cfg.repo / ".git"
    if not gitdir.is_dir():
        if not git.is_repo(cfg.repo):
            return
        gitdir = git.git_dir(cfg.repo)
    if (gitdir / switch.JOURNAL).exists():
        take_lock(cfg)
        said = switch.recover_switch(cfg.repo)
        if said:
            print(said)


def take_lock(cfg: config.Config) -> None:
    """Commands that change things hold the checkout's run lock; readers never wait."""
    lock.acquire(config.trusted_state(cfg.root))
    errors.exit_cleanly_on_sigterm()


def run_tasks(p: plan.Plan, args: list[str]) -> int:
    """Run our doit tasks over plan `p` in this process, sharing the dependency state."""
    return engine.run(tasks.namespace(p), args)


def outside_repo(cfg: config.Config, key: Path, flag: str = "key path") -> Path:
    """Key folders must live outside the repository (a key in the repo is a leak waiting)."""
    key = key.expanduser().resolve()
    for inside in (cfg.root, cfg.repo):
        if key == inside or inside in key.parents:
            raise UsageError(
                f"{flag} {key} is inside the repository {inside}: keep keys outside it "
                "(e.g. ~/.flagtasks/keys/<DEV>)"
            )
    return key


def known_device(
    cfg: config.Config, device: str, found: dict[str, dict[str, store.Adaptation]]
) -> str:
    """`device` if the store or config.toml knows it; else bad input listing the known
    ones, with a hint when only the case differs (a_x100 for A_X100)."""
    known = sorted(set(found) | set(cfg.vendors))
    if device in known:
        return device
    alike = [name for name in known if name.lower() == device.lower()]
    hint = f" (did you mean {alike[0]}?)" if alike else ""
    raise UsageError(
        f"unknown device {device}{hint}: no adaptation in {cfg.hardware} and no "
        f"[vendor.{device}] in config.toml (known: {', '.join(known) or 'none'})"
    )
