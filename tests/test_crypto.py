"""Real-crypto tests for flagtasks.crypto: both formats, tampering, keys on disk."""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from flagtasks import crypto
from flagtasks.errors import OperationError, UsageError

PLAINTEXT = b"From 0123 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] secret-marker-42\n" * 50
SECRET = b"secret-marker-42"


def _new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@pytest.fixture(scope="module")
def key1() -> rsa.RSAPrivateKey:
    return _new_key()


@pytest.fixture(scope="module")
def key2() -> rsa.RSAPrivateKey:
    return _new_key()


@pytest.fixture(scope="module")
def key3() -> rsa.RSAPrivateKey:
    return _new_key()


@pytest.fixture(scope="module")
def blob(key1, key2) -> bytes:
    return crypto.encrypt(PLAINTEXT, [key1.public_key(), key2.public_key()])


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, bool]:
    """One RSA-3072 pair made by ensure_keypair under a permissive umask (it is slow)."""
    key_dir = tmp_path_factory.mktemp("keys") / "nested" / "vendor"
    old = os.umask(0)
    try:
        created = crypto.ensure_keypair(key_dir)
    finally:
        os.umask(old)
    return key_dir, created


def _pem_private(key: rsa.RSAPrivateKey, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _write_private(folder: Path, data: bytes, mode: int = 0o600) -> Path:
    """A private_key.pem as a careful user keeps it: owner-only unless `mode` says otherwise."""
    path = folder / crypto.PRIVATE_KEY
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _pem_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _legacy_encrypt(data: bytes, public_key: rsa.RSAPublicKey, pad: bool = True) -> bytes:
    """FlagScale's tools/patch/encryption_utils.py layout: iv + OAEP(aes_key) + AES-CBC."""
    aes_key = os.urandom(32)
    iv = os.urandom(16)
    if pad:
        n = 16 - len(data) % 16
        data = data + bytes([n] * n)
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    body = encryptor.update(data) + encryptor.finalize()
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )
    return iv + public_key.encrypt(aes_key, oaep) + body


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def _split(blob: bytes) -> tuple[int, dict, bytes]:
    """Header start offset, parsed header and the raw header bytes of a flagtasks blob."""
    start = len(crypto.MAGIC) + 1 + 4
    (length,) = struct.unpack(">I", blob[len(crypto.MAGIC) + 1 : start])
    raw = blob[start : start + length]
    return start, json.loads(raw), raw


def _rebuild(blob: bytes, header: dict) -> bytes:
    """Re-serialise a changed header, keeping the original body and tag."""
    start, _, raw = _split(blob)
    new = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    prefix = crypto.MAGIC + bytes([crypto.VERSION]) + struct.pack(">I", len(new)) + new
    return prefix + blob[start + len(raw) :]


def _assert_clean_error(excinfo) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message
    assert SECRET.decode() not in message


# --- new format -------------------------------------------------------------------------


def test_round_trip(key1):
    blob = crypto.encrypt(PLAINTEXT, [key1.public_key()])
    assert blob.startswith(crypto.MAGIC)
    assert SECRET not in blob
    assert not crypto.is_legacy(blob)
    assert crypto.decrypt(blob, key1) == PLAINTEXT


def test_empty_plaintext_round_trip(key1):
    assert crypto.decrypt(crypto.encrypt(b"", [key1.public_key()]), key1) == b""


def test_each_encryption_is_fresh(key1):
    one = crypto.encrypt(PLAINTEXT, [key1.public_key()])
    two = crypto.encrypt(PLAINTEXT, [key1.public_key()])
    assert one != two


def test_two_recipients_each_decrypt(blob, key1, key2):
    assert crypto.decrypt(blob, key1) == PLAINTEXT
    assert crypto.decrypt(blob, key2) == PLAINTEXT


def test_header_is_documented_shape(blob, key1, key2):
    _, header, raw = _split(blob)
    assert blob[len(crypto.MAGIC)] == crypto.VERSION
    assert raw == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    assert header["cipher"] == "AES-256-GCM"
    assert len(base64.b64decode(header["nonce"])) == 12
    for entry in header["recipients"]:
        assert len(base64.b64decode(entry["key"])) == 256


def test_header_recipients_lists_both(blob, key1, key2):
    expected = {crypto.fingerprint(key1.public_key()), crypto.fingerprint(key2.public_key())}
    assert set(crypto.header_recipients(blob)) == expected
    assert len(crypto.header_recipients(blob)) == 2


def test_duplicate_recipients_are_wrapped_once(key1):
    blob = crypto.encrypt(PLAINTEXT, [key1.public_key(), key1.public_key()])
    assert crypto.header_recipients(blob) == [crypto.fingerprint(key1.public_key())]


def test_third_key_cannot_decrypt(blob, key3):
    with pytest.raises(OperationError) as excinfo:
        crypto.decrypt(blob, key3, name="hardware/A_X100/aaaa1111/aaaa1111.patch.encrypted")
    message = str(excinfo.value)
    assert "not encrypted for this key" in message
    assert crypto.fingerprint(key3.public_key()) in message
    assert "add your public key as a recipient" in message
    assert "aaaa1111.patch.encrypted" in message
    _assert_clean_error(excinfo)


def _tamper_offsets(blob: bytes, key1) -> dict[str, int]:
    start, header, raw = _split(blob)
    fp1 = crypto.fingerprint(key1.public_key())
    wrapped1 = next(e["key"] for e in header["recipients"] if e["fingerprint"] == fp1)
    return {
        "magic": 3,
        "version": len(crypto.MAGIC),
        "header length": len(crypto.MAGIC) + 4,
        "header brace": start,
        "nonce": start + raw.index(header["nonce"].encode()) + 2,
        "wrapped key": start + raw.index(wrapped1.encode()) + 10,
        "fingerprint": start + raw.index(fp1.encode()) + 12,
        "body start": start + len(raw),
        "body middle": start + len(raw) + len(PLAINTEXT) // 2,
        "tag": len(blob) - 8,
        "last byte": len(blob) - 1,
    }


@pytest.mark.parametrize(
    "where",
    [
        "magic",
        "version",
        "header length",
        "header brace",
        "nonce",
        "wrapped key",
        "fingerprint",
        "body start",
        "body middle",
        "tag",
        "last byte",
    ],
)
def test_flipped_byte_fails(blob, key1, where):
    offset = _tamper_offsets(blob, key1)[where]
    with pytest.raises(OperationError) as excinfo:
        crypto.decrypt(_flip(blob, offset), key1)
    _assert_clean_error(excinfo)


def test_other_recipients_entry_is_authenticated(blob, key1, key2):
    """Re-wrapping key2's entry leaves key1's data key intact, yet the header no longer matches."""
    _, header, _ = _split(blob)
    fp2 = crypto.fingerprint(key2.public_key())
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )
    for entry in header["recipients"]:
        if entry["fingerprint"] == fp2:
            entry["key"] = base64.b64encode(key2.public_key().encrypt(os.urandom(32), oaep))
            entry["key"] = entry["key"].decode()
    with pytest.raises(OperationError, match="failed authentication"):
        crypto.decrypt(_rebuild(blob, header), key1)


def test_swapped_nonce_fails(blob, key1):
    _, header, _ = _split(blob)
    header["nonce"] = base64.b64encode(os.urandom(12)).decode()
    with pytest.raises(OperationError, match="failed authentication"):
        crypto.decrypt(_rebuild(blob, header), key1)


def test_dropped_recipient_fails(blob, key1, key2):
    _, header, _ = _split(blob)
    fp2 = crypto.fingerprint(key2.public_key())
    header["recipients"] = [e for e in header["recipients"] if e["fingerprint"] != fp2]
    with pytest.raises(OperationError, match="failed authentication"):
        crypto.decrypt(_rebuild(blob, header), key1)


def test_truncation_fails(blob, key1):
    start, _, raw = _split(blob)
    lengths = [
        0,
        5,
        len(crypto.MAGIC),
        len(crypto.MAGIC) + 1,
        len(crypto.MAGIC) + 3,
        start + len(raw) // 2,
        start + len(raw),
        start + len(raw) + 10,
        len(blob) - 16,
        len(blob) - 1,
    ]
    for length in lengths:
        with pytest.raises(OperationError) as excinfo:
            crypto.decrypt(blob[:length], key1)
        _assert_clean_error(excinfo)


def test_appended_bytes_fail(blob, key1):
    for extra in (b"\x00", b"\n", os.urandom(16)):
        with pytest.raises(OperationError, match="failed authentication"):
            crypto.decrypt(blob + extra, key1)


def test_garbage_fails(key1):
    for junk in (b"", b"hello", os.urandom(16 + 256 + 64), crypto.MAGIC + os.urandom(200)):
        with pytest.raises(OperationError):
            crypto.decrypt(junk, key1)


def test_malformed_headers_raise_operation_error(blob, key1):
    start, header, _ = _split(blob)
    bad_headers = [
        {**header, "cipher": "AES-128-CBC"},
        {**header, "nonce": "AAAA"},
        {**header, "nonce": "not base64!"},
        {**header, "recipients": []},
        {**header, "recipients": [{"fingerprint": 1, "key": "AAAA"}]},
        {k: v for k, v in header.items() if k != "recipients"},
        [1, 2, 3],
        "x",
    ]
    for bad in bad_headers:
        tampered = _rebuild(blob, bad)
        with pytest.raises(OperationError):
            crypto.header_recipients(tampered)
        with pytest.raises(OperationError):
            crypto.decrypt(tampered, key1)
    nested = crypto.MAGIC + b"\x01" + struct.pack(">I", 200_000) + b"[" * 200_000 + b"x" * 32
    with pytest.raises(OperationError):
        crypto.header_recipients(nested)
    huge = crypto.MAGIC + b"\x01" + struct.pack(">I", 0xFFFFFFFF) + b"{}"
    with pytest.raises(OperationError):
        crypto.header_recipients(huge)


def test_unknown_version_says_upgrade(blob, key1):
    newer = crypto.MAGIC + b"\x02" + blob[len(crypto.MAGIC) + 1 :]
    with pytest.raises(OperationError, match="upgrade flagtasks"):
        crypto.decrypt(newer, key1)


def test_header_recipients_on_truncated_header(blob):
    start, _, raw = _split(blob)
    for length in (len(crypto.MAGIC) + 2, start + len(raw) - 1):
        with pytest.raises(OperationError):
            crypto.header_recipients(blob[:length])


def test_encrypt_refuses_bad_recipients(key1):
    with pytest.raises(UsageError):
        crypto.encrypt(PLAINTEXT, [])
    weak = _new_key(1024).public_key()
    with pytest.raises(UsageError, match="too small"):
        crypto.encrypt(PLAINTEXT, [key1.public_key(), weak])
    with pytest.raises(UsageError, match="RSA"):
        crypto.encrypt(PLAINTEXT, [key1])


def test_fingerprint_is_sha256_of_spki(key1):
    import hashlib

    der = key1.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert crypto.fingerprint(key1.public_key()) == "sha256:" + hashlib.sha256(der).hexdigest()


# --- FlagScale legacy format -----------------------------------------------------------


@pytest.mark.parametrize("data", [PLAINTEXT, b"", b"x" * 32, "中文 patch\r\n".encode()])
def test_legacy_decrypts(key1, data):
    legacy = _legacy_encrypt(data, key1.public_key())
    assert crypto.is_legacy(legacy)
    assert crypto.header_recipients(legacy) == []
    assert crypto.decrypt(legacy, key1) == data


def test_legacy_with_flagscale_style_key_file(tmp_path, key2):
    """FlagScale saves TraditionalOpenSSL PEM; load_private_key must read it as is."""
    pem = _pem_private(key2, serialization.PrivateFormat.TraditionalOpenSSL)
    _write_private(tmp_path, pem)
    (tmp_path / crypto.PUBLIC_KEY).write_bytes(_pem_public(key2))
    loaded = crypto.load_private_key(tmp_path)
    public = crypto.load_public_key(tmp_path)
    legacy = _legacy_encrypt(PLAINTEXT, public)
    assert crypto.decrypt(legacy, loaded) == PLAINTEXT


def test_legacy_3072_key(generated):
    key_dir, _ = generated
    legacy = _legacy_encrypt(PLAINTEXT, crypto.load_public_key(key_dir))
    assert crypto.decrypt(legacy, crypto.load_private_key(key_dir)) == PLAINTEXT


def test_legacy_wrong_key_fails(key1, key3):
    legacy = _legacy_encrypt(PLAINTEXT, key1.public_key())
    with pytest.raises(OperationError, match="wrong private key") as excinfo:
        crypto.decrypt(legacy, key3)
    _assert_clean_error(excinfo)


def test_legacy_for_bigger_key_fails(key1, generated):
    key_dir, _ = generated
    legacy = _legacy_encrypt(PLAINTEXT, crypto.load_public_key(key_dir))
    with pytest.raises(OperationError):
        crypto.decrypt(legacy, key1)


@pytest.mark.parametrize(
    "padded",
    [
        b"a" * 31 + b"\x00",
        b"a" * 31 + b"\x11",
        b"a" * 30 + b"\x03\x02",
        b"a" * 16 + b"\x05" * 15 + b"\x10",
    ],
)
def test_legacy_bad_padding_fails(key1, padded):
    legacy = _legacy_encrypt(padded, key1.public_key(), pad=False)
    with pytest.raises(OperationError) as excinfo:
        crypto.decrypt(legacy, key1)
    _assert_clean_error(excinfo)


def test_legacy_damage_fails(key1):
    legacy = _legacy_encrypt(PLAINTEXT, key1.public_key())
    for damaged in (_flip(legacy, 16 + 5), legacy[:-1], legacy + b"\x00", legacy[:100]):
        with pytest.raises(OperationError):
            crypto.decrypt(damaged, key1)


# --- keys on disk --------------------------------------------------------------------------


def test_ensure_keypair_creates_owner_only_pair(generated):
    key_dir, created = generated
    assert created is True
    private = key_dir / crypto.PRIVATE_KEY
    public = key_dir / crypto.PUBLIC_KEY
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    key = crypto.load_private_key(key_dir)
    assert key.key_size == 3072
    assert crypto.fingerprint(crypto.load_public_key(key_dir)) == crypto.fingerprint(
        key.public_key()
    )
    assert crypto.fingerprint(crypto.load_public_key(public)) == crypto.fingerprint(
        key.public_key()
    )
    assert crypto.contains_private_key(private.read_bytes())
    assert not crypto.contains_private_key(public.read_bytes())


def test_ensure_keypair_second_time_changes_nothing(generated):
    key_dir, _ = generated
    files = [key_dir / crypto.PRIVATE_KEY, key_dir / crypto.PUBLIC_KEY]
    before = [(p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in files]
    assert crypto.ensure_keypair(key_dir) is False
    after = [(p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in files]
    assert before == after


@pytest.mark.parametrize("present", [crypto.PRIVATE_KEY, crypto.PUBLIC_KEY])
def test_ensure_keypair_refuses_half_pair(tmp_path, present):
    (tmp_path / present).write_bytes(b"placeholder")
    missing = crypto.PUBLIC_KEY if present == crypto.PRIVATE_KEY else crypto.PRIVATE_KEY
    with pytest.raises(UsageError, match=missing):
        crypto.ensure_keypair(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [present]
    assert (tmp_path / present).read_bytes() == b"placeholder"


def test_ensure_keypair_refuses_a_file(tmp_path):
    target = tmp_path / "keyfile"
    target.write_bytes(b"")
    with pytest.raises(UsageError):
        crypto.ensure_keypair(target)


def test_load_private_key_missing_folder_creates_nothing(tmp_path):
    missing = tmp_path / "no" / "keys"
    with pytest.raises(UsageError, match="does not exist") as excinfo:
        crypto.load_private_key(missing)
    assert str(missing) in str(excinfo.value)
    assert list(tmp_path.iterdir()) == []


def test_load_private_key_missing_file_creates_nothing(tmp_path):
    with pytest.raises(UsageError, match=crypto.PRIVATE_KEY):
        crypto.load_private_key(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_private_key_refuses_non_keys(tmp_path, key1):
    for content in (b"hello", _pem_public(key1), os.urandom(64)):
        _write_private(tmp_path, content)
        with pytest.raises(UsageError, match="not a PEM private key"):
            crypto.load_private_key(tmp_path)


def test_load_private_key_refuses_passphrase(tmp_path, key1):
    pem = key1.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    _write_private(tmp_path, pem)
    with pytest.raises(UsageError, match="passphrase"):
        crypto.load_private_key(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_load_private_key_unreadable(tmp_path, key1):
    path = tmp_path / crypto.PRIVATE_KEY
    path.write_bytes(_pem_private(key1))
    path.chmod(0)
    with pytest.raises(UsageError, match="cannot read"):
        crypto.load_private_key(tmp_path)


@pytest.mark.parametrize(
    "mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610], ids=lambda mode: f"{mode:04o}"
)
def test_load_private_key_refuses_a_key_others_can_reach(tmp_path, key1, mode):
    """As ssh does: a private key that anyone but its owner may read or change is refused
    with one line that names the file and the fix, before its bytes are used."""
    path = _write_private(tmp_path, _pem_private(key1), mode)
    with pytest.raises(UsageError) as excinfo:
        crypto.load_private_key(tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert f"chmod 600 {path}" in message
    assert f"mode {mode:04o}" in message
    assert excinfo.value.exit_code == 2
    assert "PRIVATE KEY" not in message


def test_key_mode_is_judged_before_the_content(tmp_path):
    """Not a key at all, but readable by others: the mode is what is reported."""
    _write_private(tmp_path, b"hello", 0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        crypto.load_private_key(tmp_path)


def test_key_mode_is_the_mode_of_the_file_a_link_points_to(tmp_path, key1):
    """A key folder may link to the key (a secrets mount does); the key itself is judged."""
    real = tmp_path / "real"
    real.mkdir()
    target = _write_private(real, _pem_private(key1), 0o644)
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / crypto.PRIVATE_KEY).symlink_to(target)
    with pytest.raises(UsageError, match="chmod 600"):
        crypto.load_private_key(folder)
    target.chmod(0o600)
    assert crypto.fingerprint(crypto.load_private_key(folder).public_key()) == (
        crypto.fingerprint(key1.public_key())
    )


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700], ids=lambda mode: f"{mode:04o}")
def test_owner_only_key_is_loaded(tmp_path, key1, mode):
    _write_private(tmp_path, _pem_private(key1), mode)
    loaded = crypto.load_private_key(tmp_path)
    assert crypto.fingerprint(loaded.public_key()) == crypto.fingerprint(key1.public_key())


def test_huge_key_file_is_refused_unread(tmp_path):
    path = tmp_path / crypto.PRIVATE_KEY
    with path.open("wb") as out:
        out.truncate(64 << 20)  # sparse: 64 MiB that is not a key
    path.chmod(0o600)
    with pytest.raises(UsageError, match="larger than"):
        crypto.load_private_key(tmp_path)


def test_load_public_key_errors(tmp_path, key1):
    with pytest.raises(UsageError, match="not found"):
        crypto.load_public_key(tmp_path)
    with pytest.raises(UsageError, match="not found"):
        crypto.load_public_key(tmp_path / "nope.pem")
    path = tmp_path / crypto.PUBLIC_KEY
    path.write_bytes(b"garbage")
    with pytest.raises(UsageError, match="not a PEM public key"):
        crypto.load_public_key(tmp_path)
    path.write_bytes(_pem_private(key1))
    with pytest.raises(UsageError, match="private key"):
        crypto.load_public_key(path)
    path.write_bytes(_pem_public(_new_key(1024)))
    with pytest.raises(UsageError, match="too small"):
        crypto.load_public_key(path)


# --- private key detection -----------------------------------------------------------------


def test_contains_private_key(key1):
    assert crypto.contains_private_key(_pem_private(key1))
    traditional = _pem_private(key1, serialization.PrivateFormat.TraditionalOpenSSL)
    assert crypto.contains_private_key(b"config = 1\n" + traditional + b"\ntrailer")
    assert crypto.contains_private_key(_pem_private(key1, serialization.PrivateFormat.OpenSSH))
    assert crypto.contains_private_key(b"-----BEGIN " + b"OPENSSH PRIVATE KEY-----\n")
    assert not crypto.contains_private_key(_pem_public(key1))
    assert not crypto.contains_private_key(b"just some text about a private key\n")
    assert not crypto.contains_private_key(b"")
    assert not crypto.contains_private_key(PLAINTEXT)


# --- private key material in other forms -------------------------------------------------


def _keys() -> dict[str, object]:
    return {
        "rsa": _new_key(),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


@pytest.fixture(scope="module")
def keys() -> dict[str, object]:
    return _keys()


def _private(key, encoding, fmt, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(encoding, fmt, encryption)  # type: ignore[attr-defined]


DER_FORMS = {
    "pkcs8-rsa": ("rsa", serialization.PrivateFormat.PKCS8, None),
    "pkcs1-rsa": ("rsa", serialization.PrivateFormat.TraditionalOpenSSL, None),
    "pkcs8-ec": ("ec", serialization.PrivateFormat.PKCS8, None),
    "sec1-ec": ("ec", serialization.PrivateFormat.TraditionalOpenSSL, None),
    "pkcs8-ed25519": ("ed25519", serialization.PrivateFormat.PKCS8, None),
    "encrypted-pkcs8-rsa": ("rsa", serialization.PrivateFormat.PKCS8, b"pw"),
    "encrypted-pkcs8-ec": ("ec", serialization.PrivateFormat.PKCS8, b"pw"),
}


@pytest.mark.parametrize("form", list(DER_FORMS))
def test_der_private_key_is_found(keys, form):
    name, fmt, password = DER_FORMS[form]
    der = _private(keys[name], serialization.Encoding.DER, fmt, password)
    assert not crypto._PRIVATE_MARKER.search(der), "the form has no PEM marker to find"
    assert crypto.is_der_private_key(der)
    assert crypto.contains_private_key(der)
    # its base64, as an environment variable or a PEM body without the armour lines
    assert crypto.contains_private_key(b"SIGNING_KEY=" + base64.b64encode(der) + b"\n")
    assert crypto.contains_private_key(base64.encodebytes(der))


@pytest.mark.parametrize("offset", [0, 1, 2, 7])
@pytest.mark.parametrize(
    "fmt", ["pkcs8", "traditional", "openssh", "encrypted-pkcs8"], ids=lambda f: f
)
def test_base64_wrapped_pem_key_is_found(keys, offset, fmt):
    """A PEM key base64-encoded whole (a Kubernetes secret, a CI variable), at each of the
    three alignments its header can have in the encoded text, standard and URL-safe."""
    formats = {
        "pkcs8": (keys["rsa"], serialization.PrivateFormat.PKCS8, None),
        "traditional": (keys["ec"], serialization.PrivateFormat.TraditionalOpenSSL, None),
        "openssh": (keys["ed25519"], serialization.PrivateFormat.OpenSSH, None),
        "encrypted-pkcs8": (keys["rsa"], serialization.PrivateFormat.PKCS8, b"pw"),
    }
    key, private_format, password = formats[fmt]
    pem = _private(key, serialization.Encoding.PEM, private_format, password)
    wrapped = b"x" * offset + pem
    for encoded in (base64.b64encode(wrapped), base64.urlsafe_b64encode(wrapped)):
        assert crypto.contains_private_key(b"apiVersion: v1\ndata:\n  key: " + encoded + b"\n")


def test_openssh_key_body_without_its_armour_is_found(keys):
    pem = _private(keys["ed25519"], serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH)
    body = b"".join(pem.splitlines()[1:-1])
    assert crypto.contains_private_key(b"ssh_key = " + body + b"\n")


def _certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flagtasks.example")])
    when = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(when)
        .not_valid_after(when + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_public_material_and_other_binaries_are_not_keys(keys, key1):
    """What may sit in a repository: certificates (DER, PEM, a kubeconfig's base64 of the
    PEM), public keys in every encoding, a request, random and compressed bytes."""
    cert = _certificate(key1)
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(cert.subject)
        .sign(key1, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    harmless = {
        "certificate-der": cert.public_bytes(serialization.Encoding.DER),
        "certificate-pem": pem_cert,
        "kubeconfig": b"certificate-authority-data: " + base64.b64encode(pem_cert) + b"\n",
        "request-der": request,
        "request-base64": base64.b64encode(request),
        "pkcs1-public-der": key1.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        ),
        "random": os.urandom(4096),
        "random-sequence": b"\x30\x82\x01\x00" + os.urandom(256),
        "random-base64": base64.b64encode(os.urandom(1 << 16)),
        "gzip": gzip.compress(PLAINTEXT),
        "digits": b"0" * 1000,
    }
    for name, key in keys.items():
        public = key.public_key()  # type: ignore[attr-defined]
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        openssh = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        harmless[f"{name}-public-der"] = der
        harmless[f"{name}-public-pem"] = pem
        harmless[f"{name}-public-pem-base64"] = base64.b64encode(pem)
        harmless[f"{name}-public-der-base64"] = base64.b64encode(der)
        harmless[f"{name}-public-openssh"] = openssh
        harmless[f"{name}-public-openssh-base64"] = base64.b64encode(openssh)
    found = [name for name, data in harmless.items() if crypto.contains_private_key(data)]
    assert found == []


def test_damaged_der_key_is_not_taken_for_one(key1):
    """DER detection loads the key; a file merely shaped like one (cut short) is not a key."""
    der = _private(key1, serialization.Encoding.DER, serialization.PrivateFormat.PKCS8)
    assert not crypto.is_der_private_key(der[:-40])
    assert not crypto.is_der_private_key(der[:200])
