"""Secrets: `verify` fails when private key material or the plaintext of an encrypted
adaptation is anywhere in the repository (tracked, or untracked and not ignored), key pairs
made by `patch --key-path` are owner-only, and no command ever prints key material.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import os
import shutil
import stat
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from fixtures import describe, doit, flagtasks, git, sample_project

from flagtasks import crypto, hygiene

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


def der(kind: str, password: bytes | None = None) -> bytes:
    """A fresh private key in DER form: no PEM line to find, only its structure."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind.endswith("ec"):
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    traditional = serialization.PrivateFormat.TraditionalOpenSSL
    fmt = serialization.PrivateFormat.PKCS8 if "pkcs8" in kind else traditional
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.DER, fmt, encryption)


def openssh_body() -> bytes:
    """An OpenSSH private key with its BEGIN/END lines taken off."""
    return b"".join(pem("openssh").splitlines()[1:-1]) + b"\n"


ENCODED_LEAKS = {
    # name: (file, how its bytes are made)
    "der-pkcs8-rsa": ("keys/server.der", lambda: der("pkcs8-rsa")),
    "der-pkcs1-rsa": ("deploy/rsa.key", lambda: der("pkcs1-rsa")),
    "der-sec1-ec": ("deploy/x100-ec.key", lambda: der("sec1-ec")),
    "der-encrypted-pkcs8": ("tools/signing.p8", lambda: der("pkcs8-rsa", b"passphrase")),
    "base64-pem-in-a-kubernetes-secret": (
        "deploy/secret.yaml",
        lambda: b"kind: Secret\ndata:\n  tls.key: " + base64.b64encode(pem("pkcs8-rsa")) + b"\n",
    ),
    "base64-pem-offset-by-one": (
        "deploy/bundle.b64",
        lambda: base64.b64encode(b"#" + pem("traditional-ec")),
    ),
    "base64-pem-offset-by-two": (
        "deploy/values.json",
        lambda: b'{"key": "' + base64.urlsafe_b64encode(b"k:" + pem("openssh")) + b'"}\n',
    ),
    "base64-der-in-an-env-file": (
        "ci/signing.env",
        lambda: b"SIGNING_KEY=" + base64.b64encode(der("pkcs8-rsa")) + b"\n",
    ),
    "openssh-body-without-armour": ("tools/deploy_key.txt", openssh_body),
    "base64-pem-across-the-first-mib": (
        "data/big.b64",
        lambda: b"x" * ((1 << 20) - 7) + b"\n" + base64.b64encode(pem("pkcs8-rsa")),
    ),
}


@pytest.mark.parametrize("case", list(ENCODED_LEAKS))
def test_encoded_private_key_fails_verify(project: Path, case: str) -> None:
    """Keys in DER form, base64-wrapped PEM (at each alignment, standard and URL-safe),
    base64 DER, an OpenSSH body without its armour: each is found, by its file name."""
    rel, make = ENCODED_LEAKS[case]
    path = project / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make())
    try:
        run = flagtasks(project, "verify")
        assert run.returncode == 1, describe(run)
        line = f"{rel}: holds private key material; remove it from the repository"
        assert line in run.stderr, describe(run)
    finally:
        path.unlink()


def certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate, DER and PEM, and nothing secret."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ci.flagtasks.example")])
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(when)
        .not_valid_after(when + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER), cert.public_bytes(
        serialization.Encoding.PEM
    )


def test_public_material_is_not_a_leak(project: Path) -> None:
    """The control for the tests above: a DER certificate, a kubeconfig holding a base64
    certificate, public keys in DER, base64 and OpenSSH form, binary files that start as DER
    does, and base64 of random bytes are not key material."""
    cert_der, cert_pem = certificate()
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    public_der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    harmless = {
        "certs/ca.der": cert_der,
        "deploy/kubeconfig": b"certificate-authority-data: " + base64.b64encode(cert_pem) + b"\n",
        "keys/x100.pub.der": public_der,
        "keys/x100.pub.b64": base64.b64encode(public_der) + b"\n",
        "keys/id_ed25519.pub": ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
        "assets/table.bin": b"\x30\x82\x04\xbd\x02\x01\x00\x30" + os.urandom(1213),
        "assets/blob.b64": base64.b64encode(os.urandom(1 << 16)),
    }
    try:
        for rel, data in harmless.items():
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            (project / rel).write_bytes(data)
        run = flagtasks(project, "verify")
        assert run.returncode == 0, describe(run)
    finally:
        for rel in harmless:
            (project / rel).unlink(missing_ok=True)


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


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


PLAINTEXT_FORMS = {
    # name: (file, how the copy differs from the plaintext)
    "a-trailing-newline-more": ("notes/x100.patch", lambda p: p + b"\n"),
    "trailing-newlines-stripped": ("notes/x100.patch", lambda p: p.rstrip(b"\n")),
    "crlf-line-ends": ("notes/x100-windows.patch", _crlf),
    "crlf-and-no-final-newline": ("notes/x100-windows.patch", lambda p: _crlf(p).rstrip()),
    "gzip": ("notes/x100.patch.gz", gzip.compress),
    "gzip-of-crlf": ("notes/x100.patch.gz", lambda p: gzip.compress(_crlf(p))),
    "gzip-of-two-members": (
        "notes/x100.patch.gz",
        lambda p: gzip.compress(p[:1000]) + gzip.compress(p[1000:] + b"\n"),
    ),
}


@pytest.mark.parametrize("case", list(PLAINTEXT_FORMS))
def test_normalised_plaintext_copy_fails_verify(encrypted, case: str) -> None:
    """A copy an editor, a Windows checkout or gzip changed is still the plaintext."""
    project, _, plaintext = encrypted
    rel, change = PLAINTEXT_FORMS[case]
    path = project / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    copy = change(plaintext)
    assert copy != plaintext
    path.write_bytes(copy)
    try:
        run = flagtasks(project, "verify")
        assert run.returncode == 1, describe(run)
        line = f"{rel}: is the plaintext of an encrypted adaptation; delete it"
        assert line in run.stderr, describe(run)
    finally:
        path.unlink()


def test_near_copies_and_broken_gzip_pass_verify(encrypted) -> None:
    """The control: a changed line, a copy cut short, a gzip stream cut short or damaged,
    and a gzip bomb starting like a patch are not the plaintext, and cost no traceback."""
    project, _, plaintext = encrypted
    packed = gzip.compress(plaintext)
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb_bytes = bomb.compress(b"From ") + bomb.compress(bytes(12 << 20)) + bomb.flush()
    near = {
        "notes/edited.patch": plaintext.replace(b"\n", b"\n ", 1),
        "notes/cut.patch": plaintext[: len(plaintext) // 2],
        "notes/cut.patch.gz": packed[:-12],
        "notes/damaged.patch.gz": packed[:40]
        + bytes(b ^ 0xFF for b in packed[40:60])
        + packed[60:],
        "notes/bomb.gz": bomb_bytes,
    }
    try:
        for rel, data in near.items():
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            (project / rel).write_bytes(data)
        started = time.monotonic()
        run = flagtasks(project, "verify")
        assert run.returncode == 0, describe(run)
        assert time.monotonic() - started < 60
    finally:
        for rel in near:
            (project / rel).unlink(missing_ok=True)


def test_gzip_bomb_is_read_within_the_limit(tmp_path: Path) -> None:
    """A gzip stream is decompressed as it is read and given up past the size limit: 1 GiB
    of zeros behind a patch's first line costs the limit's worth of work and a few MiB."""
    member = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = member.compress(bytes(64 << 20)) + member.flush()
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b"From 0 Mon Sep 17 00:00:00 2001\n") + zeros * 16)
    plaintexts = hygiene._Plaintexts(frozenset({"0" * 64}), limit=32 << 20)
    assert bomb.stat().st_size < plaintexts.limit  # so it is decompressed, not skipped
    tracemalloc.start()
    try:
        started = time.monotonic()
        assert hygiene._secret_in(bomb, plaintexts) is None
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak} bytes"
    assert elapsed < 30


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_copies_larger_than_a_read_are_found_across_its_boundaries(tmp_path: Path) -> None:
    """Past one read (1 MiB): a CRLF copy whose "\\r" ends the first read, and a gzip of it in
    three members, whose output comes in several pieces; the plaintext is LF-only."""
    plain = b"From x\n" + b"y" * ((1 << 20) - 9) + b"\n" + b"z" * 70 + b"\n"
    plain += b"".join(b"line %d\n" % n for n in range(300_000))
    crlf = plain.replace(b"\n", b"\r\n")
    assert crlf[(1 << 20) - 1 : (1 << 20) + 1] == b"\r\n"
    third = len(crlf) // 3
    packed = b"".join(gzip.compress(crlf[at : at + third]) for at in range(0, len(crlf), third))
    plaintexts = hygiene._Plaintexts(frozenset({_sha256(plain)}), limit=3 * len(plain))
    for name, data in (("copy.patch", crlf), ("copy.patch.gz", packed)):
        path = tmp_path / name
        path.write_bytes(data)
        assert hygiene._secret_in(path, plaintexts) == hygiene.COPY_PROBLEM, name
    other = hygiene._Plaintexts(frozenset({_sha256(plain + b"!")}), limit=3 * len(plain))
    assert hygiene._secret_in(tmp_path / "copy.patch", other) is None


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


# --------------------------------------------------------------------------- key modes


def loose_copy(key: Path, where: Path, mode: int) -> Path:
    """A copy of the key folder `key` whose private_key.pem has `mode`."""
    copy = where / "keys"
    shutil.copytree(key, copy)
    os.chmod(copy / "private_key.pem", mode)
    return copy


def refusal(key_dir: Path) -> str:
    """The one line a key that others can read gets, naming the file and the fix."""
    private = key_dir / "private_key.pem"
    return f"chmod 600 {private}"


@pytest.mark.parametrize("mode", [0o644, 0o640], ids=lambda mode: f"{mode:04o}")
def test_unpatch_refuses_a_key_others_can_read(encrypted, tmp_path: Path, mode: int) -> None:
    """As ssh does: `--key-path` to a group- or world-readable key is refused (exit 2, one
    line naming the file and `chmod 600`) and nothing is built; owner-only, it works."""
    project, key, _ = encrypted
    loose = loose_copy(key, tmp_path, mode)
    out = tmp_path / "out"
    unpatch = ["unpatch", "--device-type", DEV, "--commit-id", "v1.0", "--dir", str(out)]
    run = flagtasks(project, *unpatch, "--key-path", str(loose))
    assert run.returncode == 2, describe(run)
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and refusal(loose) in errors[0], describe(run)
    assert f"{mode:04o}" in errors[0], describe(run)
    assert not (out / DEV).exists()
    os.chmod(loose / "private_key.pem", 0o600)
    again = flagtasks(project, *unpatch, "--key-path", str(loose))
    assert again.returncode == 0, describe(again)


def test_keys_section_refuses_a_key_others_can_read(encrypted, tmp_path: Path) -> None:
    """A user's `[keys]` folder is held to the same rule."""
    project, key, _ = encrypted
    loose = loose_copy(key, tmp_path, 0o644)
    user = sample_project(tmp_path / "user" / "FlagScale", vendors=False)
    shutil.copytree(project / "hardware", user / "hardware", dirs_exist_ok=True)
    with (user / "config.toml").open("a") as config:
        config.write(f'\n[keys]\n{DEV} = "{loose}"\n')
    out = tmp_path / "out"
    unpatch = ["unpatch", "--device-type", DEV, "--commit-id", "v1.0", "--dir", str(out)]
    run = flagtasks(user, *unpatch)
    assert run.returncode == 2, describe(run)
    assert refusal(loose) in run.stderr, describe(run)
    assert not (out / DEV).exists()


def test_vendor_key_others_can_read_is_refused(tmp_path: Path) -> None:
    """A vendor's `vendor.<DEV>.key` folder with a world-readable key: encrypting (which
    reads the private key back) stops with the same line; no ciphertext is written."""
    key_dir = tmp_path / "keys" / "x100"
    assert crypto.ensure_keypair(key_dir)
    os.chmod(key_dir / "private_key.pem", 0o644)
    project = sample_project(tmp_path / "FlagScale", keys={DEV: key_dir})
    run = doit(project)
    assert run.returncode == 2, describe(run)
    assert refusal(key_dir) in run.stderr, describe(run)
    assert not list((project / "hardware" / DEV).rglob("*.patch.encrypted"))
