"""Encrypted adaptations end to end: real doit and the real CLI on the sample upstream.

The vendor encrypts `v1.0..origin/vendor/A_X100` of examples/sample/upstream.git with a key
folder outside the checkout; users build trees with their own key folder. The contract
(SPEC.md, "Safety", "Incremental", task `encrypt`): no plaintext in hardware/, in build/
outside the tree it builds, or in a world-readable temp file; authenticated ciphertext (a
flipped byte, a truncated file or a wrong key is a clear error that writes no plaintext and no
tree); no churn on re-runs and fresh clones; FlagScale's own `.patch.encrypted` still readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fixtures import (
    NAME,
    describe,
    doit,
    doit_fails,
    doit_ok,
    executed,
    flagtasks_fails,
    flagtasks_ok,
    git,
    git_raw,
    sample_project,
    up_to_date,
)
from repos import VENDOR, tree_of, worktree_mismatches

DEV = "A_X100"
BASE = "v1.0"
CURRENT = "origin/vendor/A_X100"


# --------------------------------------------------------------------------- helpers


def toml_str(value: object) -> str:
    return json.dumps(str(value))


def new_checkout(where: Path) -> Path:
    """A FlagScale checkout of the sample upstream in `where`, adopted with `flagtasks init`."""
    return sample_project(where / NAME, branches=False, vendors=False, identity=VENDOR)


_CONFIGS: dict[Path, tuple[str, dict[str, list[str]]]] = {}
"""Per checkout: config.toml as `init` wrote it, and the test's own sections."""


def set_section(project: Path, name: str, lines: list[str]) -> None:
    """(Re)write one test-owned table after what `init` wrote, keeping the other ones."""
    path = project / "config.toml"
    if project not in _CONFIGS:
        _CONFIGS[project] = (path.read_text(), {})
    text, sections = _CONFIGS[project]
    sections[name] = lines
    body = "".join("\n" + "\n".join(table) + "\n" for table in sections.values())
    path.write_text(text + body)


def set_vendor(project: Path, key: Path, recipients: list[Path] | None) -> None:
    lines = [
        f"[vendor.{DEV}]",
        f'base = "{BASE}"',
        f'current = "{CURRENT}"',
        f"key = {toml_str(key)}",
    ]
    if recipients is not None:
        lines.append(f"recipients = [{', '.join(toml_str(r) for r in recipients)}]")
    set_section(project, "vendor", lines)


def set_keys(project: Path, key: Path) -> None:
    set_section(project, "keys", ["[keys]", f"{DEV} = {toml_str(key)}"])


def user_checkout(where: Path, store: Path, key: Path | None = None) -> Path:
    """A user's checkout holding a copy of the vendor's hardware/ (and [keys] when given)."""
    project = new_checkout(where)
    shutil.copytree(store, project / "hardware")
    if key is not None:
        set_keys(project, key)
    return project


def make_keypair(folder: Path, bits: int = 2048, legacy: bool = False) -> rsa.RSAPrivateKey:
    """A key folder like flagtasks/FlagScale make: private_key.pem (0600) + public_key.pem."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    folder.mkdir(mode=0o700, parents=True)
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if legacy
        else serialization.PrivateFormat.PKCS8
    )
    private = folder / "private_key.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    )
    private.chmod(0o600)
    (folder / "public_key.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key


def fingerprint_of(public_pem: Path) -> str:
    """sha256 of the DER SubjectPublicKeyInfo, computed here independently of flagtasks."""
    key = serialization.load_pem_public_key(public_pem.read_bytes())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def files_holding(
    roots: Iterable[Path], needles: Iterable[bytes], skip: Callable[[Path], bool] = lambda p: False
) -> list[str]:
    """Every regular file below `roots` (symlinks not followed) that contains a needle."""
    needles = list(needles)
    hits = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not skip(Path(dirpath, d))]
            for name in names:
                path = Path(dirpath, name)
                if skip(path) or path.is_symlink() or not path.is_file():
                    continue
                data = path.read_bytes()
                found = [n for n in needles if n in data]
                if found:
                    hits.append(f"{path} holds {found[0]!r}")
    return hits


def git_objects(path: Path) -> bool:
    """Compressed object stores: plaintext cannot show up there byte for byte."""
    return path.name == "objects" and path.parent.name == ".git"


def all_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def tree_state(tree: Path) -> tuple[int, str, str]:
    """What replacing a build tree changes: the folder's inode, its HEAD and its marker."""
    marker = tree / ".git" / "flagtasks-build.json"
    return (
        tree.stat().st_ino,
        git(tree, "rev-parse", "HEAD"),
        marker.read_text() if marker.exists() else "",
    )


def assert_tree_is_current(project: Path, tree: Path) -> None:
    assert (tree / ".git").is_dir(), f"no build tree at {tree}"
    assert git(tree, "rev-parse", "HEAD^{tree}") == tree_of(project, CURRENT)
    assert worktree_mismatches(tree, project, CURRENT) == []


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Keys:
    root: Path
    vendor: Path  # created by the vendor's first doit run, never by the tests
    customer: Path
    stranger: Path


@dataclass(frozen=True)
class Secrets:
    """Distinctive added lines of the vendor's diff, as they appear in files (`raw`) and in
    a patch (`patch`, "\\n+<line>": never in a built tree, only in patch text)."""

    raw: tuple[bytes, ...]
    patch: tuple[bytes, ...]
    mbox: bytes


@dataclass(frozen=True)
class Vendor:
    project: Path
    base8: str
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]

    @property
    def folder(self) -> Path:
        return self.project / "hardware" / DEV / self.base8

    @property
    def encrypted(self) -> Path:
        return self.folder / f"{self.base8}.patch.encrypted"

    @property
    def tree(self) -> Path:
        return self.project / "build" / DEV / NAME


@pytest.fixture(scope="module")
def tmpdir_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A TMPDIR of our own for every subprocess, to look for plaintext left in temp files."""
    tmp = tmp_path_factory.mktemp("tmpdir")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))
        yield tmp


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("keys")
    make_keypair(root / "cust")
    make_keypair(root / "stranger")
    return Keys(root=root, vendor=root / "a", customer=root / "cust", stranger=root / "stranger")


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory, tmpdir_env: Path, keys: Keys) -> Vendor:
    """The vendor's checkout after `doit` (which creates the key pair), run twice."""
    project = new_checkout(tmp_path_factory.mktemp("vendor"))
    set_vendor(project, keys.vendor, [keys.customer / "public_key.pem"])
    assert not keys.vendor.exists()
    first = doit_ok(project)
    second = doit_ok(project)
    base8 = git(project, "rev-parse", f"{BASE}^{{commit}}")[:8]
    return Vendor(project=project, base8=base8, first=first, second=second)


@pytest.fixture(scope="module")
def secrets(vendor: Vendor) -> Secrets:
    mbox = git_raw(
        vendor.project,
        "format-patch",
        "--stdout",
        "--binary",
        "--full-index",
        f"{BASE}..{CURRENT}",
    )
    raw = tuple(
        line[1:]
        for line in mbox.split(b"\n")
        if line.startswith(b"+") and not line.startswith(b"+++") and len(line.strip()) >= 12
    )
    assert len(raw) >= 2, f"the sample's vendor diff has too few distinctive lines: {raw}"
    return Secrets(raw=raw, patch=tuple(b"\n+" + line for line in raw), mbox=mbox)


def decrypt_with(key_dir: Path, blob: bytes) -> bytes:
    """Decrypt with flagtasks' own (unit-tested) reader, to look inside what was stored."""
    from flagtasks import crypto

    return crypto.decrypt(blob, crypto.load_private_key(key_dir))


# --------------------------------------------------------------------------- 1. encrypt


def test_doit_encrypts_with_a_new_owner_only_key_and_leaks_no_plaintext(
    vendor: Vendor, keys: Keys, secrets: Secrets, tmpdir_env: Path
) -> None:
    assert "encrypt:A_X100" in executed(vendor.first), describe(vendor.first)
    # the key pair, owner-only
    private, public = keys.vendor / "private_key.pem", keys.vendor / "public_key.pem"
    assert private.is_file() and public.is_file()
    assert stat.S_IMODE(keys.vendor.stat().st_mode) == 0o700
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in public.read_bytes()

    # the store: the encrypted patch and its metadata, no plaintext patch anywhere
    hardware = vendor.project / "hardware"
    assert sorted(p.name for p in vendor.folder.iterdir()) == [
        f"{vendor.base8}.patch.encrypted",
        "meta.json",
    ]
    assert [p for p in hardware.rglob("*") if p.name.endswith(".patch")] == []
    meta = json.loads((vendor.folder / "meta.json").read_text())
    assert meta["encrypted"] is True
    assert meta["base"] == git(vendor.project, "rev-parse", f"{BASE}^{{commit}}")
    assert meta["current"] == git(vendor.project, "rev-parse", CURRENT)

    # what was encrypted is the adaptation, so the scans below look for the right bytes
    plaintext = decrypt_with(keys.vendor, vendor.encrypted.read_bytes())
    assert meta["patch_sha256"] == hashlib.sha256(plaintext).hexdigest()
    for needle in secrets.patch:
        assert needle in plaintext, f"{needle!r} is not in the stored adaptation"
    assert decrypt_with(keys.customer, vendor.encrypted.read_bytes()) == plaintext

    # no plaintext in hardware/, build/ outside the tree, .flagtasks (stage included)
    tree = vendor.tree
    outside_tree = files_holding(
        [hardware, vendor.project / "build", vendor.project / ".flagtasks"],
        secrets.raw,
        skip=lambda p: p == tree,
    )
    assert outside_tree == []
    # the stage is format_patch's target and encrypt's input: kept, but sealed and owner-only
    stage = vendor.project / ".flagtasks" / "stage"
    for staged in (p for p in stage.rglob("*") if p.is_file()):
        assert stat.S_IMODE(staged.stat().st_mode) == 0o600, staged
        if staged.suffix == ".sealed":
            assert staged.read_bytes().startswith(b"FLAGTASKS-ENC\n"), "plaintext left staged"
    # nor patch text anywhere in the checkout (compressed git objects aside)
    assert files_holding([vendor.project], secrets.patch, skip=git_objects) == []
    # nor in a world-readable temp file
    leaked = [
        hit
        for hit in files_holding([tmpdir_env], secrets.raw + secrets.patch)
        if os.stat(hit.split(" holds ")[0]).st_mode & stat.S_IROTH
    ]
    assert leaked == []

    # the tree is current's tree
    assert_tree_is_current(vendor.project, tree)


def test_second_run_after_the_key_was_created_does_nothing(vendor: Vendor) -> None:
    """SPEC Incremental: a task whose inputs did not change does nothing. Creating the key
    pair in the first run must not make the second one re-encrypt or rebuild the tree."""
    rerun = set(executed(vendor.second)) - {"verify:store"}
    assert rerun == set(), describe(vendor.second)
    assert "unpatch:A_X100" in up_to_date(vendor.second), describe(vendor.second)


# --------------------------------------------------------------------------- 2. no churn


def test_no_churn_on_rerun_fresh_clone_and_patch_command(vendor: Vendor, keys: Keys) -> None:
    project = vendor.project
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "[A_X100] encrypted adaptation")
    stored = all_files(project / "hardware")
    assert git(project, "status", "--porcelain") == ""

    rerun = doit_ok(project)
    assert git(project, "status", "--porcelain") == "", describe(rerun)

    # a fresh clone: no dependency state, no build trees
    shutil.rmtree(project / ".flagtasks")
    shutil.rmtree(project / "build")
    fresh = doit_ok(project)
    assert git(project, "status", "--porcelain") == "", describe(fresh)
    assert all_files(project / "hardware") == stored
    assert_tree_is_current(project, vendor.tree)

    patched = flagtasks_ok(
        project,
        "patch",
        "--device-type",
        DEV,
        "--base-commit-id",
        BASE,
        "--current-commit-id",
        CURRENT,
        "--key-path",
        str(keys.vendor),
    )
    assert git(project, "status", "--porcelain") == "", describe(patched)
    assert all_files(project / "hardware") == stored


# --------------------------------------------------------------------------- 3. recipients


def test_recipients_decide_who_can_read(
    vendor: Vendor, keys: Keys, secrets: Secrets, tmp_path: Path
) -> None:
    # a vendor checkout of its own (the module's vendor made the key pair already)
    project = new_checkout(tmp_path / "vendor")
    customer_pub = keys.customer / "public_key.pem"
    set_vendor(project, keys.vendor, [customer_pub])
    doit_ok(project)
    folder = project / "hardware" / DEV / vendor.base8
    encrypted = folder / f"{vendor.base8}.patch.encrypted"
    with_customer = encrypted.read_bytes()
    meta_before = (folder / "meta.json").read_bytes()

    # the customer's key folder alone unpatches: [keys] with doit, --key-path with the CLI
    user = user_checkout(tmp_path / "user", project / "hardware", key=keys.customer)
    doit_ok(user, f"unpatch:{DEV}")
    assert_tree_is_current(user, user / "build" / DEV / NAME)
    flagtasks_ok(
        user,
        "unpatch",
        "--device-type",
        DEV,
        "--commit-id",
        vendor.base8,
        "--dir",
        "other",
        "--key-path",
        str(keys.customer),
    )
    assert_tree_is_current(user, user / "other" / DEV / NAME)

    # dropping the customer re-encrypts; the plaintext did not change, so no tree is rebuilt
    set_vendor(project, keys.vendor, [])
    rerun = doit_ok(project)
    assert "encrypt:A_X100" in executed(rerun), describe(rerun)
    assert "unpatch:A_X100" in up_to_date(rerun), describe(rerun)
    assert encrypted.read_bytes() != with_customer
    assert (folder / "meta.json").read_bytes() == meta_before
    assert decrypt_with(keys.vendor, encrypted.read_bytes()) == decrypt_with(
        keys.customer, with_customer
    )

    # ... and the customer can no longer read it: clear error, no tree, no plaintext
    late = user_checkout(tmp_path / "late-user", project / "hardware", key=keys.customer)
    doit_fails(late, 1, f"unpatch:{DEV}", says=["not encrypted for this key"])
    flagtasks_fails(
        late,
        1,
        "unpatch",
        "--device-type",
        DEV,
        "--commit-id",
        vendor.base8,
        "--dir",
        "build",
        "--key-path",
        str(keys.customer),
        says=["not encrypted for this key"],
    )
    built = late / "build" / DEV
    assert not built.exists() or [p.name for p in built.iterdir()] == [], "a (half) tree is left"
    assert files_holding([late], secrets.patch, skip=git_objects) == []


# --------------------------------------------------------------------------- 4. tamper


BROKEN_WORDS = ("corrupt", "damaged", "modified", "truncated")


def tampered_variants(blob: bytes) -> dict[str, bytes]:
    """A flipped byte in each part of a flagtasks file, and truncations."""
    header_len = int.from_bytes(blob[15:19], "big")
    body = 19 + header_len

    def flip(offset: int) -> bytes:
        data = bytearray(blob)
        data[offset] ^= 0x01
        return bytes(data)

    return {
        "magic": flip(0),
        "header": flip(19 + header_len // 2),
        "body": flip(body + (len(blob) - body) // 2),
        "tag": flip(len(blob) - 1),
        "truncated by one byte": blob[:-1],
        "truncated to half": blob[: len(blob) // 2],
    }


def test_tampered_patch_is_refused_without_plaintext_or_tree(
    vendor: Vendor, keys: Keys, secrets: Secrets, tmp_path: Path
) -> None:
    user = user_checkout(tmp_path / "user", vendor.project / "hardware", key=keys.customer)
    encrypted = user / "hardware" / DEV / vendor.base8 / f"{vendor.base8}.patch.encrypted"
    good = encrypted.read_bytes()
    assert good.startswith(b"FLAGTASKS-ENC\n"), "not the flagtasks format: offsets are wrong"
    tree = user / "build" / DEV / NAME
    doit_ok(user, f"unpatch:{DEV}")
    before = tree_state(tree)
    doit_ok(user, "forget")

    variants = tampered_variants(good)
    unnamed = []
    for what, bad in variants.items():
        encrypted.write_bytes(bad)
        last = what == list(variants)[-1]
        if last:  # no tree before: none may appear
            shutil.rmtree(tree)
        for proc in (doit_fails(user, 1, f"unpatch:{DEV}"), flagtasks_fails(user, 1, "verify")):
            assert any(w in proc.stderr for w in BROKEN_WORDS), f"{what}\n{describe(proc)}"
            if encrypted.name not in proc.stderr:
                unnamed.append(f"{what}: {' '.join(map(str, proc.args[-2:]))}: {proc.stderr}")
        if last:
            assert not tree.exists(), f"{what}: a tree was built"
        else:
            assert tree_state(tree) == before, f"{what}: the tree was replaced"
        left = sorted(p.name for p in tree.parent.iterdir()) if tree.parent.exists() else []
        assert left == ([] if last else [NAME]), what
        hits = files_holding([user], secrets.patch, skip=git_objects)
        assert hits == [], f"{what}: plaintext written: {hits}"
        assert encrypted.read_bytes() == bad, f"{what}: the stored file was changed"
    # SPEC Errors: the message names the thing; "encrypted patch" alone does not say which
    assert unnamed == [], "errors do not name the damaged file:\n" + "\n".join(unnamed)


# --------------------------------------------------------------------------- 5. bad keys


def test_wrong_missing_and_misplaced_keys(vendor: Vendor, keys: Keys, tmp_path: Path) -> None:
    user = user_checkout(tmp_path / "user", vendor.project / "hardware")
    unpatch = ["unpatch", "--device-type", DEV, "--commit-id", vendor.base8, "--dir", "build"]

    flagtasks_fails(
        user, 1, *unpatch, "--key-path", str(keys.stranger), says=["not encrypted for this key"]
    )
    assert not (user / "build" / DEV / NAME).exists()

    set_keys(user, keys.stranger)
    flagtasks_fails(user, 1, "verify", says=["not encrypted for this key"])

    typo = keys.root / "custmer"
    flagtasks_fails(user, 2, *unpatch, "--key-path", str(typo), says=[str(typo)])
    assert not typo.exists(), "a mistyped --key-path was created"
    assert not (user / "build" / DEV / NAME).exists()

    # a key path inside the repository is refused before anything is written
    stored = all_files(user / "hardware")
    patch = [
        "patch",
        "--device-type",
        DEV,
        "--base-commit-id",
        BASE,
        "--current-commit-id",
        CURRENT,
    ]
    for inside in ("my-keys", str(user / "secret" / "keys")):
        flagtasks_fails(user, 2, *patch, "--key-path", inside, says=["inside the repository"])
        assert not (user / inside).exists(), f"{inside} was created"
    assert all_files(user / "hardware") == stored
    assert not files_holding([user], [b"PRIVATE KEY"], skip=git_objects)


def test_config_key_inside_the_repository_is_refused(tmp_path: Path) -> None:
    """SPEC config.toml: `key` is "a folder outside the repo"; `patch` refuses a key path
    inside the repository. doit with the same [vendor] key must not mint a private key in the
    checkout either (one clear error, exit 2, nothing written)."""
    project = new_checkout(tmp_path / "vendor")
    set_vendor(project, project / "secret" / "keys", None)
    proc = doit(project)
    assert proc.returncode == 2, describe(proc)
    assert not (project / "secret").exists(), "a key pair was created inside the repository"
    assert not (project / "hardware").exists()


# --------------------------------------------------------------------------- 6. legacy


def flagscale_encrypt(plaintext: bytes, public: rsa.RSAPublicKey) -> bytes:
    """FlagScale's encrypt_file: iv(16) + RSA-OAEP(SHA-256) wrapped AES-256 key + AES-CBC."""
    iv, aes_key = os.urandom(16), os.urandom(32)
    wrapped = public.encrypt(
        aes_key,
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        ),
    )
    assert len(wrapped) == public.key_size // 8
    padder = sym_padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    return iv + wrapped + encryptor.update(padded) + encryptor.finalize()


def test_flagscale_legacy_encrypted_store(vendor: Vendor, secrets: Secrets, tmp_path: Path) -> None:
    legacy_key = tmp_path / "keys" / "flagscale"
    private = make_keypair(legacy_key, bits=4096, legacy=True)
    assert (
        (legacy_key / "private_key.pem")
        .read_bytes()
        .startswith(b"-----BEGIN RSA " + b"PRIVATE KEY-----")
    )

    user = new_checkout(tmp_path / "user")
    folder = user / "hardware" / DEV / vendor.base8
    folder.mkdir(parents=True)
    (folder / f"{vendor.base8}.patch.encrypted").write_bytes(
        flagscale_encrypt(secrets.mbox, private.public_key())
    )
    stored = all_files(user / "hardware")

    flagtasks_ok(
        user,
        "unpatch",
        "--device-type",
        DEV,
        "--commit-id",
        vendor.base8,
        "--dir",
        "build",
        "--key-path",
        str(legacy_key),
    )
    assert_tree_is_current(user, user / "build" / DEV / NAME)

    set_keys(user, legacy_key)
    flagtasks_ok(user, "verify")
    status = flagtasks_ok(user, "status")
    rows = [line for line in status.stdout.splitlines() if line.startswith(DEV)]
    assert len(rows) == 1 and vendor.base8 in rows[0], describe(status)
    assert "encrypted" in rows[0], describe(status)
    assert all_files(user / "hardware") == stored, "the FlagScale store was rewritten"
    assert files_holding([user], secrets.patch, skip=git_objects) == []


# --------------------------------------------------------------------------- 7. no key


def test_verify_without_key_skips_content_and_status_lists_recipients(
    vendor: Vendor, keys: Keys, tmp_path: Path
) -> None:
    user = user_checkout(tmp_path / "user", vendor.project / "hardware")
    verified = flagtasks_ok(user, "verify")
    assert "skipped" in verified.stdout.lower(), describe(verified)

    status = flagtasks_ok(user, "status", "--json")
    document = json.loads(status.stdout)
    rows = [r for r in document["adaptations"] if r["device"] == DEV]
    assert [r["base8"] for r in rows] == [vendor.base8], status.stdout
    assert rows[0]["encrypted"] is True and rows[0]["legacy_encryption"] is False
    expected = sorted(fingerprint_of(k / "public_key.pem") for k in (keys.vendor, keys.customer))
    assert sorted(rows[0]["recipients"]) == expected


def test_cli_key_path_build_stays_built_in_status_and_doit(
    vendor: Vendor, keys: Keys, tmp_path: Path
) -> None:
    """A tree built with `unpatch --key-path` (no [keys] in config.toml) is the device's pick:
    status says built, a later `doit unpatch` does nothing, and a failed attempt with a wrong
    key leaves the intact tree built."""
    user = user_checkout(tmp_path / "user", vendor.project / "hardware")
    unpatch = ["unpatch", "--device-type", DEV, "--commit-id", vendor.base8, "--dir", "build"]
    flagtasks_ok(user, *unpatch, "--key-path", str(keys.vendor))
    tree = user / "build" / DEV / NAME
    assert_tree_is_current(user, tree)

    def row() -> dict:
        document = json.loads(flagtasks_ok(user, "status", "--json").stdout)
        (found,) = [r for r in document["adaptations"] if r["device"] == DEV]
        return found

    assert row()["build"] == "built" and row()["selected"] is True
    again = doit_ok(user, f"unpatch:{DEV}")
    assert f"unpatch:{DEV}" in up_to_date(again), describe(again)

    flagtasks_fails(user, 1, *unpatch, "--key-path", str(keys.stranger), "--force")
    assert row()["build"] == "built", "a failed attempt made the intact tree look stale"
    assert_tree_is_current(user, tree)

    # the same unpatch without --key-path: up to date, and the key it was built with stays
    flagtasks_ok(user, *unpatch)
    assert row()["build"] == "built", "unpatch without --key-path forgot the key"
    again = doit_ok(user, f"unpatch:{DEV}")
    assert f"unpatch:{DEV}" in up_to_date(again), describe(again)
