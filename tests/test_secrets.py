"""Secrets: `verify` fails when private key material or the plaintext of an encrypted
adaptation is anywhere in the repository (tracked, or untracked and not ignored), key pairs
made by `patch --key-path` are owner-only, and no command ever prints key material.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fixtures import describe, doit, flagtasks, git, sample_project

from flagtasks import crypto

DEV = "A_X100"


def pem(kind: str) -> bytes:
    """Freshly generated private key material in the formats people leak."""
    if kind == "pkcs8-rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        fmt = serialization.PrivateFormat.PKCS8
    elif kind == "traditional-ec":
        key = ec.generate_private_key(ec.SECP256R1())
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        fmt = serialization.PrivateFormat.OpenSSH
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean vendor project; each test adds one secret, checks, and takes it away."""
    path = sample_project(tmp_path_factory.mktemp("secrets") / "FlagScale")
    first = doit(path, "verify")
    assert first.returncode == 0, describe(first)
    return path


LEAKS = {
    # name: (file, how it is placed, key format)
    "untracked-pkcs8": ("private_key.pem", "untracked", "pkcs8-rsa"),
    "untracked-nested-ec": ("deploy/secrets/x100.key", "untracked", "traditional-ec"),
    "tracked-openssh": ("tools/id_ed25519", "tracked", "openssh"),
    "in-the-store": (f"hardware/{DEV}/private_key.pem", "untracked", "pkcs8-rsa"),
    "inside-a-config-file": ("examples/llama/secret.yaml", "embedded", "traditional-ec"),
    "after-the-first-mib": ("data/big.txt", "late", "traditional-ec"),
}


@pytest.mark.parametrize("case", list(LEAKS))
def test_private_key_anywhere_fails_verify(project: Path, case: str) -> None:
    rel, how, kind = LEAKS[case]
    path = project / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    material = pem(kind)
    if how == "embedded":
        material = b"model: llama\nssh_key: |\n" + material + b"layers: 2\n"
    elif how == "late":
        material = b"x" * (1 << 20) + b"\n" + material
    path.write_bytes(material)
    if how == "tracked":
        git(project, "add", rel)
        git(project, "commit", "-q", "-m", "oops, a key")
    try:
        run = flagtasks(project, "verify")
        assert run.returncode == 1, describe(run)
        assert rel in run.stderr, describe(run)
        if case == "untracked-pkcs8":
            store = doit(project, "verify:store")
            assert store.returncode == 1 and rel in store.stderr, describe(store)
    finally:
        if how == "tracked":
            git(project, "reset", "-q", "--hard", "HEAD~1")
        path.unlink(missing_ok=True)


def test_ignored_key_is_not_a_leak(project: Path) -> None:
    """Keys in ignored places (build/, or a pattern in .gitignore) are not in the repo."""
    ignored = [project / "build" / "private_key.pem", project / "local" / "dev.pem"]
    ignore = project / ".gitignore"
    ignore.write_text((ignore.read_text() if ignore.exists() else "") + "local/\n")
    try:
        for path in ignored:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pem("traditional-ec"))
        run = flagtasks(project, "verify")
        assert run.returncode == 0, describe(run)
    finally:
        for path in ignored:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- encrypted


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """A vendor project whose A_X100 adaptation is encrypted with a key outside the repo;
    returns (project, key folder, the adaptation's plaintext)."""
    root = tmp_path_factory.mktemp("encrypted")
    key = root / "keys" / "a_x100"
    path = sample_project(root / "FlagScale", keys={DEV: key})
    run = doit(path)
    assert run.returncode == 0, describe(run)
    blob = next((path / "hardware" / DEV).glob("*/*.patch.encrypted")).read_bytes()
    plaintext = crypto.decrypt(blob, crypto.load_private_key(key))
    return path, key, plaintext


PLAINTEXT_COPIES = {
    "beside": "hardware/A_X100/BASE8/BASE8.patch",
    "same-folder-other-name": "hardware/A_X100/BASE8/decrypted.patch",
    "elsewhere": "notes/a_x100-adaptation.patch",
    "tracked": "docs/x100.patch",
}


@pytest.mark.parametrize("case", list(PLAINTEXT_COPIES))
def test_plaintext_of_encrypted_adaptation_fails_verify(encrypted, case: str) -> None:
    project, _, plaintext = encrypted
    base8 = next((project / "hardware" / DEV).iterdir()).name
    rel = PLAINTEXT_COPIES[case].replace("BASE8", base8)
    path = project / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(plaintext)
    if case == "tracked":
        git(project, "add", rel)
        git(project, "commit", "-q", "-m", "the decrypted patch, for review")
    try:
        run = flagtasks(project, "verify")
        assert run.returncode == 1, describe(run)
        assert rel in run.stderr, describe(run)
    finally:
        if case == "tracked":
            git(project, "reset", "-q", "--hard", "HEAD~1")
        path.unlink(missing_ok=True)


def test_encrypted_project_without_copies_passes_verify(encrypted) -> None:
    """The control for the tests above: the same project, no plaintext copy, passes."""
    run = flagtasks(encrypted[0], "verify")
    assert run.returncode == 0, describe(run)


def holders_of(root: Path, needle: bytes) -> list[str]:
    """Files below `root` holding `needle` as plain bytes (git's own objects are compressed
    and the upstream's history is the vendor's to keep, so .git/objects is left out)."""
    found = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "objects"]
        for name in names:
            path = Path(dirpath, name)
            if not path.is_symlink() and needle in path.read_bytes():
                found.append(str(path.relative_to(root)))
    return found


def test_no_plaintext_left_by_the_encrypted_flow(encrypted, tmp_path: Path) -> None:
    """After encrypt and unpatch, the plaintext is only in the build tree it makes: not in
    hardware/, not beside the tree, not staged, not in a temp file."""
    project, _, plaintext = encrypted
    temp = tmp_path / "tmp"
    temp.mkdir()
    unpatch = ["unpatch", "--device-type", DEV, "--commit-id", "v1.0", "--dir", "elsewhere"]
    run = flagtasks(project, *unpatch, "--key-path", str(encrypted[1]), env={"TMPDIR": str(temp)})
    assert run.returncode == 0, describe(run)
    patch_body = plaintext[plaintext.index(b"\ndiff --git") :]
    leaks = holders_of(project, patch_body) + holders_of(temp, patch_body)
    assert leaks == [], f"the plaintext patch is in: {leaks}"
    assert not list((project / ".flagtasks").rglob("*.patch")), "staged plaintext left"


# --------------------------------------------------------------------------- key pairs


def test_key_pair_created_by_patch_is_owner_only(tmp_path: Path) -> None:
    """Even under a permissive umask: private_key.pem 0600, its folder owner-only."""
    project = sample_project(tmp_path / "FlagScale")
    key = tmp_path / "keys" / "x100"
    run = flagtasks(
        project,
        "patch",
        "--device-type",
        DEV,
        "--base-commit-id",
        "v1.0",
        "--current-commit-id",
        f"vendor/{DEV}",
        "--key-path",
        str(key),
        umask=0,
    )
    assert run.returncode == 0, describe(run)
    private = key / "private_key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.stat().st_mode) & 0o077 == 0
    assert b"PRIVATE KEY" in private.read_bytes()
    store = project / "hardware" / DEV
    assert [p.name for p in store.rglob("*.patch")] == [], "plaintext beside the encrypted"
    verify = flagtasks(project, "verify")
    assert verify.returncode == 0, describe(verify)


@pytest.mark.parametrize("inside", ["keys/x100", ".", "hardware/A_X100"])
def test_key_path_inside_the_repository_is_refused(project: Path, inside: str) -> None:
    before = sorted(p.relative_to(project) for p in (project / "hardware").rglob("*"))
    run = flagtasks(
        project, "patch", "--device-type", DEV, "--base-commit-id", "v1.0", "--key-path", inside
    )
    assert run.returncode == 2, describe(run)
    assert "inside the repository" in run.stderr, describe(run)
    assert not list(project.rglob("private_key.pem"))
    assert sorted(p.relative_to(project) for p in (project / "hardware").rglob("*")) == before


def test_debug_output_holds_no_key_material(encrypted, tmp_path: Path) -> None:
    """Failure paths that print more (--debug, doit info) still print no key."""
    project, key, _ = encrypted
    leak = project / "leak.pem"
    leak.write_bytes(pem("pkcs8-rsa"))
    try:
        for run in (
            flagtasks(project, "--debug", "verify", allow_traceback="--debug shows the traceback"),
            doit(project, "info", f"encrypt:{DEV}"),
            flagtasks(project, "status", "--json"),
            flagtasks(project, "verify", "--device-type", DEV),
        ):
            assert "PRIVATE KEY" not in run.stdout + run.stderr
    finally:
        leak.unlink()
    wrong = tmp_path / "wrong"
    wrong.mkdir(mode=0o700)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (wrong / "private_key.pem").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (wrong / "public_key.pem").write_bytes(
        other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    os.chmod(wrong / "private_key.pem", 0o600)
    bad = flagtasks(
        project,
        "unpatch",
        "--device-type",
        DEV,
        "--commit-id",
        "v1.0",
        "--dir",
        str(tmp_path / "out"),
        "--key-path",
        str(wrong),
    )
    assert bad.returncode == 1, describe(bad)
    assert not (tmp_path / "out" / DEV / "FlagScale").exists()
