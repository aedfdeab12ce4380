"""A keyed device's patch waits for `encrypt` sealed, never as plaintext, even on failure."""

from __future__ import annotations

from pathlib import Path

from fixtures import clone_sample, doit, flagtasks_ok, git


def test_failed_encrypt_leaves_no_plaintext(tmp_path: Path) -> None:
    checkout = clone_sample(tmp_path / "FlagScale")
    flagtasks_ok(checkout, "init")
    missing = tmp_path / "nobody" / "public_key.pem"
    with (checkout / "config.toml").open("a") as config:
        config.write(
            f'[vendor.A_X100]\nbase = "v1.0"\ncurrent = "origin/vendor/A_X100"\n'
            f'key = "{tmp_path / "keys"}"\nrecipients = ["{missing}"]\n'
        )
    done = doit(checkout, "encrypt:A_X100")
    assert done.returncode != 0, done.stdout
    assert "public_key.pem" in done.stderr and "Traceback" not in done.stderr
    plain = git(checkout, "diff", "v1.0", "origin/vendor/A_X100")
    added = [ln[1:] for ln in plain.splitlines() if ln.startswith("+") and len(ln) > 12]
    staged = [p for p in (checkout / ".flagtasks" / "stage").rglob("*") if p.is_file()]
    assert staged, "format_patch should have staged the new patch"
    for path in staged:
        assert path.stat().st_mode & 0o077 == 0
        data = path.read_bytes()
        assert not any(line.encode() in data for line in added), f"plaintext in {path}"
    assert not list((checkout / "hardware").rglob("*.patch*"))
