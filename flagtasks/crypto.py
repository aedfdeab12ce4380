"""Keys and ciphertext: the only module that touches either.

Vendors encrypt a patch for the public keys of the users allowed to read it; users decrypt
with their private key. Everything cryptographic comes from the `cryptography` package.

flagtasks format (written by `encrypt`, version 1)::

    b"FLAGTASKS-ENC\\n"          magic, 14 bytes
    0x01                        format version, 1 byte
    N                           header length, 4 bytes, big-endian
    header                      N bytes of UTF-8 JSON, sorted keys:
                                  {"cipher": "AES-256-GCM",
                                   "nonce": base64 of 12 random bytes,
                                   "recipients": [{"fingerprint": "sha256:<hex>",
                                                   "key": base64 of the wrapped data key}, ...]}
    body                        AES-256-GCM ciphertext followed by its 16-byte tag

A fresh random 32-byte data key encrypts the plaintext once; it is wrapped for every recipient
with RSA-OAEP (MGF1-SHA-256, SHA-256, no label). A recipient's fingerprint is the SHA-256 of
its public key's DER SubjectPublicKeyInfo, so a user can tell which key a file is for without
trying them all. The GCM associated data is every byte before the body (magic, version,
length and header), so a flipped byte anywhere, a truncated file or appended bytes all fail
authentication and no plaintext is returned.

FlagScale legacy format (read only). FlagScale's tool (FlagOpen/FlagScale,
tools/patch/encryption_utils.py, `encrypt_file` / `decrypt_file`) writes
``iv + wrapped_key + ciphertext``: a 16-byte random IV, the 32-byte AES key wrapped with
RSA-OAEP (MGF1-SHA-256, SHA-256, label None) whose length is the RSA modulus size in bytes,
then AES-256-CBC over the data padded PKCS#7-style by hand (1 to 16 bytes, a full block when
the data is already aligned). It generates 4096-bit keys saved as unencrypted
TraditionalOpenSSL PEM and its reader hard-codes 512 wrapped-key bytes; here the wrapped-key
length is taken from the private key, which is the same for those keys. The format has no
authentication: a wrong key or a bad padding is refused, but a modified body can go unnoticed.
A blob is legacy when it does not start with the flagtasks magic.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import importlib
import json
import os
import re
import shlex
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO

from . import files
from .errors import OperationError, UsageError


class _Lazy(ModuleType):
    """A module of `cryptography`, imported when first used: a run that touches no key (a
    no-op build, a status of plaintext stores) does not pay a fifth of doit's start-up."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self.__name__)
        return getattr(self._module, attr)


if TYPE_CHECKING:
    from cryptography import exceptions as _exc
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives import padding as sym_padding
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.ciphers import aead as _aead
    from cryptography.hazmat.primitives.ciphers import algorithms, modes
    from cryptography.hazmat.primitives.ciphers import base as _ciphers
else:
    _exc = _Lazy("cryptography.exceptions")
    hashes = _Lazy("cryptography.hazmat.primitives.hashes")
    serialization = _Lazy("cryptography.hazmat.primitives.serialization")
    sym_padding = _Lazy("cryptography.hazmat.primitives.padding")
    padding = _Lazy("cryptography.hazmat.primitives.asymmetric.padding")
    rsa = _Lazy("cryptography.hazmat.primitives.asymmetric.rsa")
    _aead = _Lazy("cryptography.hazmat.primitives.ciphers.aead")
    algorithms = _Lazy("cryptography.hazmat.primitives.ciphers.algorithms")
    modes = _Lazy("cryptography.hazmat.primitives.ciphers.modes")
    _ciphers = _Lazy("cryptography.hazmat.primitives.ciphers.base")

PRIVATE_KEY = "private_key.pem"
PUBLIC_KEY = "public_key.pem"

MAGIC = b"FLAGTASKS-ENC\n"
VERSION = 1
CIPHER = "AES-256-GCM"
KEY_BITS = 3072
MIN_RECIPIENT_BITS = 2048

_LENGTH = struct.Struct(">I")
_PREFIX = len(MAGIC) + 1 + _LENGTH.size
_MAX_HEADER = 1 << 20
_NONCE_BYTES = 12
_DATA_KEY_BYTES = 32
_TAG_BYTES = 16
_IV_BYTES = 16
_BLOCK_BYTES = 16
_PRIVATE_MARKER = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----|PuTTY-User-Key-File-\d+:")
_MAX_PRIVATE_KEY = 1 << 20
"""A private key file is a few kilobytes; a megabyte is not a key."""


def _oaep() -> padding.OAEP:
    """The key wrap both formats use, so new and legacy files share one definition."""
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


def ensure_keypair(key_dir: Path) -> bool:
    """Create an RSA key pair in `key_dir` unless one is there; True when it made one.

    The private key is created owner-only from the first byte (O_EXCL, mode 0600) so that it
    is never readable by others, not even for an instant. Half a pair is refused rather than
    silently replaced, because replacing a key locks users out of files already shipped.
    """
    key_dir = Path(key_dir)
    private_path = key_dir / PRIVATE_KEY
    public_path = key_dir / PUBLIC_KEY
    if key_dir.exists() and not key_dir.is_dir():
        raise UsageError(f"key path {key_dir} is a file: give a folder for {PRIVATE_KEY}")
    has_private, has_public = os.path.lexists(private_path), os.path.lexists(public_path)
    if has_private and has_public:
        return False
    if has_private or has_public:
        missing, present = (
            (public_path, private_path) if has_private else (private_path, public_path)
        )
        raise UsageError(
            f"{missing} is missing but {present.name} exists: restore it, "
            "or use an empty key folder to create a new pair"
        )
    if not key_dir.is_dir():
        try:
            key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(key_dir, 0o700)
        except OSError as err:
            raise UsageError(f"cannot create key folder {key_dir}: {err.strerror}") from None

    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    created: list[Path] = []
    try:
        _write_new(private_path, private_pem, 0o600)
        created.append(private_path)
        _write_new(public_path, public_pem, 0o644)
        created.append(public_path)
    except FileExistsError as err:
        _remove(created)
        raise UsageError(
            f"{err.filename} appeared while creating a key pair in {key_dir}: "
            "another run is creating keys there, try again when it is done"
        ) from None
    except OSError as err:
        _remove(created)
        raise UsageError(f"cannot write a key pair in {key_dir}: {err.strerror}") from None
    except BaseException:
        _remove(created)
        raise
    return True


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet, with `mode` set before any byte lands."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def _remove(paths: list[Path]) -> None:
    """Undo a partly created key pair, so no half pair is left for the next run to trust."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def load_private_key(key_dir: Path) -> rsa.RSAPrivateKey:
    """Load `key_dir/private_key.pem` for decryption; never creates anything.

    A user with a missing key must be told where the key belongs, not handed a fresh key that
    cannot open the vendor's files.
    """
    key_dir = Path(key_dir)
    path = key_dir / PRIVATE_KEY
    hint = f"pass the folder holding the {PRIVATE_KEY} the vendor gave you (--key-path or [keys])"
    if not key_dir.exists():
        raise UsageError(f"key folder {key_dir} does not exist: {hint}")
    if not key_dir.is_dir():
        raise UsageError(f"key path {key_dir} is not a folder: {hint}")
    if not path.is_file():
        raise UsageError(f"{path} not found: {hint}")
    data = _read_private_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(
            f"{path} is passphrase-protected: store it unencrypted in an owner-only folder"
        ) from None
    except (ValueError, _exc.UnsupportedAlgorithm):
        raise UsageError(f"{path} is not a PEM private key: {hint}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UsageError(f"{path} is not an RSA private key: {hint}")
    return key


def _read_private_key_file(path: Path) -> bytes:
    """The bytes of a private key file, refused unread when anyone but its owner may read or
    change it (mode & 0o077, as ssh refuses such keys): a key others can read is already
    another user's, and using it silently would hide that. The mode is taken from the open
    file, so the file checked is the file read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}; check its owner and mode") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path} is not a regular file: give the folder holding the key file")
        mode = stat.S_IMODE(info.st_mode)
        if os.name == "posix" and mode & 0o077:
            raise UsageError(
                f"{path} can be read or changed by other users (mode {mode:04o}); a private key "
                f"must be owner-only: chmod 600 {shlex.quote(str(path))}"
            )
        try:
            data = handle.read(_MAX_PRIVATE_KEY + 1)
        except OSError as err:
            raise UsageError(f"cannot read {path}: {err.strerror}") from None
    if len(data) > _MAX_PRIVATE_KEY:
        raise UsageError(f"{path} is larger than {_MAX_PRIVATE_KEY} bytes: not a private key")
    return data


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}; check its owner and mode") from None


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    """Load a recipient's public key from a public_key.pem file or a key folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / PUBLIC_KEY
    hint = f"give a {PUBLIC_KEY} file or the key folder that holds one"
    if not path.is_file():
        raise UsageError(f"{path} not found: {hint}")
    data = _read_key_file(path)
    if contains_private_key(data):
        raise UsageError(f"{path} holds a private key: give its {PUBLIC_KEY} instead")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, _exc.UnsupportedAlgorithm):
        raise UsageError(f"{path} is not a PEM public key: {hint}") from None
    problem = _recipient_problem(key)
    if problem or not isinstance(key, rsa.RSAPublicKey):
        raise UsageError(f"{path}: {problem or 'not an RSA public key'}")
    return key


def _recipient_problem(key: object) -> str | None:
    """Why `key` cannot be a recipient, or None; weak keys would undermine the whole file."""
    if not isinstance(key, rsa.RSAPublicKey):
        return "not an RSA public key; recipients must be RSA keys"
    if key.key_size < MIN_RECIPIENT_BITS:
        return f"RSA key of {key.key_size} bits is too small; use {MIN_RECIPIENT_BITS} or more"
    return None


def fingerprint(public_key: rsa.RSAPublicKey) -> str:
    """Name a key without revealing it: "sha256:" + hex SHA-256 of its DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def encrypt(plaintext: bytes, recipients: Sequence[rsa.RSAPublicKey]) -> bytes:
    """Encrypt `plaintext` so that each recipient's private key, and only those, can read it."""
    if not recipients:
        raise UsageError("no recipients to encrypt for: give at least one public key")
    by_fingerprint: dict[str, rsa.RSAPublicKey] = {}
    for key in recipients:
        problem = _recipient_problem(key)
        if problem:
            raise UsageError(f"cannot encrypt for this recipient: {problem}")
        by_fingerprint[fingerprint(key)] = key

    data_key = _aead.AESGCM.generate_key(bit_length=_DATA_KEY_BYTES * 8)
    nonce = os.urandom(_NONCE_BYTES)
    header = {
        "cipher": CIPHER,
        "nonce": _b64(nonce),
        "recipients": [
            {"fingerprint": fp, "key": _b64(by_fingerprint[fp].encrypt(data_key, _oaep()))}
            for fp in sorted(by_fingerprint)
        ],
    }
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    prefix = MAGIC + bytes([VERSION]) + _LENGTH.pack(len(header_bytes)) + header_bytes
    return prefix + _aead.AESGCM(data_key).encrypt(nonce, plaintext, prefix)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_legacy(blob: bytes) -> bool:
    """True for anything not in the flagtasks format, i.e. FlagScale's original layout."""
    return not blob.startswith(MAGIC)


@dataclass(frozen=True)
class _Envelope:
    """A parsed flagtasks blob: the authenticated prefix, then the fields read from it."""

    prefix: bytes
    nonce: bytes
    wrapped: dict[str, bytes]
    body: bytes


def _parse(blob: bytes, name: str) -> _Envelope:
    """Split a flagtasks blob, refusing anything malformed before any key is used."""
    prefix, nonce, wrapped = _parse_header(blob, len(blob), name)
    return _Envelope(prefix=prefix, nonce=nonce, wrapped=wrapped, body=blob[len(prefix) :])


def _parse_header(head: bytes, total: int, name: str) -> tuple[bytes, bytes, dict[str, bytes]]:
    """(authenticated prefix, nonce, wrapped keys) from the first bytes `head` of a flagtasks
    blob of `total` bytes; `head` must hold the whole header."""
    broken = f"{name} is damaged or truncated (bad flagtasks header): restore it from git"
    if len(head) < _PREFIX:
        raise OperationError(broken)
    version = head[len(MAGIC)]
    if version != VERSION:
        raise OperationError(
            f"{name} uses encryption format version {version}, this flagtasks reads "
            f"version {VERSION}: upgrade flagtasks or restore the file"
        )
    (length,) = _LENGTH.unpack_from(head, len(MAGIC) + 1)
    end = _PREFIX + length
    if length > _MAX_HEADER or len(head) < end or total < end + _TAG_BYTES:
        raise OperationError(broken)
    try:
        header = json.loads(head[_PREFIX:end].decode("utf-8"))
        if header["cipher"] != CIPHER:
            raise OperationError(f"{name} uses an unknown cipher; this flagtasks reads {CIPHER}")
        nonce = base64.b64decode(header["nonce"], validate=True)
        wrapped = {
            entry["fingerprint"]: base64.b64decode(entry["key"], validate=True)
            for entry in header["recipients"]
        }
    except OperationError:
        raise
    except (ValueError, TypeError, KeyError, RecursionError, binascii.Error):
        raise OperationError(broken) from None
    fingerprints_ok = all(isinstance(fp, str) and fp.startswith("sha256:") for fp in wrapped)
    if len(nonce) != _NONCE_BYTES or not wrapped or not fingerprints_ok:
        raise OperationError(broken)
    return head[:end], nonce, wrapped


def header_recipients(blob: bytes, *, name: str = "encrypted patch") -> list[str]:
    """Fingerprints a flagtasks blob is encrypted for ([] for legacy, which does not say)."""
    if is_legacy(blob):
        return []
    return sorted(_parse(blob, name).wrapped)


def _data_key(wrapped: dict[str, bytes], private_key: rsa.RSAPrivateKey, name: str) -> bytes:
    """The data key wrapped for `private_key`, or the error saying why it cannot be had."""
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise UsageError("decryption needs an RSA private key")
    own = fingerprint(private_key.public_key())
    mine = wrapped.get(own)
    if mine is None:
        raise OperationError(
            f"{name} is not encrypted for this key (fingerprint {own}; it has "
            f"{len(wrapped)} other recipient(s)): ask the vendor to add your public "
            "key as a recipient"
        )
    try:
        data_key = private_key.decrypt(mine, _oaep())
    except ValueError:
        data_key = b""
    if len(data_key) != _DATA_KEY_BYTES:
        raise OperationError(_failed(name))
    return data_key


def _failed(name: str) -> str:
    return f"{name} failed authentication: it is corrupted or was modified; restore it from git"


def decrypt(blob: bytes, private_key: rsa.RSAPrivateKey, *, name: str = "encrypted patch") -> bytes:
    """Return the plaintext, or raise OperationError; never returns partial or unverified data.

    `name` (usually the file's path) is only used in error messages.
    """
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise UsageError("decryption needs an RSA private key")
    if is_legacy(blob):
        return _decrypt_legacy(blob, private_key, name)
    envelope = _parse(blob, name)
    data_key = _data_key(envelope.wrapped, private_key, name)
    try:
        return _aead.AESGCM(data_key).decrypt(envelope.nonce, envelope.body, envelope.prefix)
    except _exc.InvalidTag:
        raise OperationError(_failed(name)) from None


def decrypt_stream(
    source: BinaryIO, size: int, out: BinaryIO, private_key: rsa.RSAPrivateKey, *, name: str
) -> str:
    """Decrypt the `size` bytes of `source` into `out` in chunks; return the plaintext's
    sha256. A build never holds a large patch in memory. What lands in `out` is trusted only
    once this returns (GCM's tag is checked last): on an error the caller discards it.
    FlagScale's legacy files (small, unauthenticated) are decrypted whole."""
    head = source.read(_PREFIX + _MAX_HEADER)
    if is_legacy(head):
        plaintext = decrypt(head + source.read(), private_key, name=name)
        out.write(plaintext)
        return hashlib.sha256(plaintext).hexdigest()
    prefix, nonce, wrapped = _parse_header(head, size, name)
    data_key = _data_key(wrapped, private_key, name)
    decryptor = _ciphers.Cipher(algorithms.AES(data_key), modes.GCM(nonce)).decryptor()
    decryptor.authenticate_additional_data(prefix)
    digest = hashlib.sha256()
    pending = head[len(prefix) :]
    remaining = size - len(head)
    while True:
        if len(pending) > _TAG_BYTES:
            piece = decryptor.update(pending[:-_TAG_BYTES])
            digest.update(piece)
            out.write(piece)
            pending = pending[-_TAG_BYTES:]
        if remaining <= 0:
            break
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        pending += chunk
    if len(pending) != _TAG_BYTES or source.read(1):
        raise OperationError(_failed(name))
    try:
        decryptor.finalize_with_tag(pending)
    except _exc.InvalidTag:
        raise OperationError(_failed(name)) from None
    return digest.hexdigest()


_CHUNK = 1 << 20


def check_key(source: BinaryIO, private_key: rsa.RSAPrivateKey, *, name: str) -> None:
    """Refuse a key that cannot open an encrypted file, reading only its header (the body
    is authenticated when it is decrypted)."""
    head = source.read(_PREFIX + _MAX_HEADER)
    if is_legacy(head):
        wrapped_len = (private_key.key_size + 7) // 8
        try:
            private_key.decrypt(head[_IV_BYTES : _IV_BYTES + wrapped_len], _oaep())
        except ValueError:
            raise OperationError(_legacy_failed(name)) from None
        return
    _data_key(_parse_header(head, len(head) + _TAG_BYTES, name)[2], private_key, name)


def _legacy_failed(name: str) -> str:
    return (
        f"cannot decrypt {name} (FlagScale format): wrong private key, or the file is "
        "corrupted; check the key folder (--key-path or [keys]) or restore the file"
    )


def _decrypt_legacy(blob: bytes, private_key: rsa.RSAPrivateKey, name: str) -> bytes:
    """Read FlagScale's iv + wrapped key + AES-256-CBC layout (see the module docstring)."""
    wrapped_len = (private_key.key_size + 7) // 8
    body_len = len(blob) - _IV_BYTES - wrapped_len
    failed = _legacy_failed(name)
    if body_len < _BLOCK_BYTES or body_len % _BLOCK_BYTES:
        raise OperationError(failed)
    iv = blob[:_IV_BYTES]
    wrapped = blob[_IV_BYTES : _IV_BYTES + wrapped_len]
    body = blob[_IV_BYTES + wrapped_len :]
    try:
        aes_key = private_key.decrypt(wrapped, _oaep())
    except ValueError:
        raise OperationError(failed) from None
    if len(aes_key) != _DATA_KEY_BYTES:
        raise OperationError(failed)
    decryptor = _ciphers.Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(_BLOCK_BYTES * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise OperationError(failed) from None


# ---- private key material, for hygiene scans ----


def contains_private_key(data: bytes) -> bool:
    """True when `data` holds private key material, for hygiene scans.

    Found: a PEM block (`-----BEGIN ... PRIVATE KEY-----`, encrypted ones too), an OpenSSH or
    PuTTY key; the same PEM text base64-encoded at any byte offset (a Kubernetes secret, a CI
    variable), an OpenSSH key body without its armour; a DER key (PKCS#8, encrypted PKCS#8,
    PKCS#1, SEC1) as the whole of `data` or base64-encoded at the start of a base64 run. A
    base64 match is only taken when its decoded bytes are a key's, so certificates, public
    keys and other base64 pass. A few literal-led searches over `data` (about 1.5 times the
    cost of the PEM search alone); a scan in chunks must overlap them by `KEY_MARKER_SPAN`.
    """
    if _PRIVATE_MARKER.search(data) or is_der_private_key(data):
        return True
    if any(form in data for form, _ in _OPENSSH_FORMS):
        return True
    for form, shift in _BEGIN_FORMS:
        at = data.find(form)
        while at >= 0:
            group = at - shift
            window = data[group : group + _B64_WINDOW] if group >= 0 else b""
            if _PRIVATE_MARKER.search(_b64_decode(window)):
                return True
            at = data.find(form, at + 1)
    return any(_der_key_shape(_b64_decode(run.group())) for run in _DER_B64.finditer(data))


def _b64_forms(text: bytes) -> list[tuple[bytes, int]]:
    """The base64 text that encodes `text` at each of the 3 byte offsets it can have in the
    encoded data, keeping only characters that depend on `text` alone; with each, how many
    characters after the start of a 4-character group it begins."""
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + text)
        own = [
            i
            for i in range(len(encoded))
            if 6 * i // 8 >= shift and (6 * i + 5) // 8 < shift + len(text)
        ]
        forms.append((encoded[own[0] : own[-1] + 1], own[0] % 4))
    return forms


_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64_CHARS) - set(b"-_")))
_B64_WINDOW = 128
"""Base64 characters decoded after a match: 96 bytes, more than any PEM header line."""
_BEGIN_FORMS = _b64_forms(b"-----BEGIN ")
_OPENSSH_FORMS = _b64_forms(b"openssh-key-v1\0")
"""The start of every OpenSSH private key's body (not of its public keys or certificates)."""
_DER_B64 = re.compile(rb"M(?<![A-Za-z0-9+/]M)[A-P][A-Za-z0-9+/_-]{30}")
"""The start of a base64 run that encodes a DER SEQUENCE (0x30), 32 characters of it. (One
regex alternating all the markers would be ten times slower than these separate searches.)"""
KEY_MARKER_SPAN = _B64_WINDOW + 8
"""The longest run of bytes `contains_private_key` judges at once."""

_MAX_DER_KEY = 64 << 10
"""DER private keys are at most a few kilobytes (RSA-16384 is under 10 KiB)."""
_PBE_OIDS = (
    bytes.fromhex("2a864886f70d0105"),  # PKCS#5 1.2.840.113549.1.5.*: PBES1, PBES2
    bytes.fromhex("2a864886f70d010c01"),  # PKCS#12 1.2.840.113549.1.12.1.*: pbeWithSHA...
)


def _b64_decode(text: bytes) -> bytes:
    """Decode base64 (standard or URL-safe) leniently: separators dropped, a ragged end cut."""
    chars = text.translate(None, _NOT_B64).replace(b"-", b"+").replace(b"_", b"/")
    try:
        return binascii.a2b_base64(chars[: len(chars) // 4 * 4])
    except binascii.Error:
        return b""


def _der_element(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(tag, content start, content end) of the DER element at `pos`; the end may lie past
    `data` when only the start of a structure is given. None when there is no DER header."""
    if pos + 2 > len(data):
        return None
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    count = first & 0x7F
    if not 1 <= count <= 3 or pos + 2 + count > len(data):
        return None
    start = pos + 2 + count
    return tag, start, start + int.from_bytes(data[pos + 2 : start], "big")


def _der_key_shape(data: bytes) -> str | None:
    """ "encrypted" or "plain" when `data` starts as a DER private key does, else None.

    Judged from the first two dozen bytes: PKCS#8 (version 0 or 1, then an algorithm),
    PKCS#1 RSA and DSA (version 0, then a big integer), SEC1 EC (version 1, then the key as
    an octet string), encrypted PKCS#8 (a password-based encryption algorithm first).
    Certificates, public keys, requests and signed data all start otherwise.
    """
    outer = _der_element(data, 0)
    if outer is None or outer[0] != 0x30:
        return None
    first = _der_element(data, outer[1])
    if first is None:
        return None
    tag, start, end = first
    if tag == 0x30:
        algorithm = _der_element(data, start)
        if algorithm is None or algorithm[0] != 0x06:
            return None
        return "encrypted" if data[algorithm[1] : algorithm[2]].startswith(_PBE_OIDS) else None
    if tag != 0x02 or end != start + 1 or end > len(data):
        return None
    version = data[start]
    second = _der_element(data, end)
    if second is None:
        return None
    if version in (0, 1) and second[0] == 0x30:
        inner = _der_element(data, second[1])
        return "plain" if inner and inner[0] == 0x06 else None
    if version == 0 and second[0] == 0x02 and second[2] - second[1] >= 64:
        return "plain"
    if version == 1 and second[0] == 0x04:
        return "plain"
    return None


def is_der_private_key(data: bytes) -> bool:
    """True when the whole of `data` (a file's bytes) is a private key in DER form.

    Only small files shaped like a key (`_der_key_shape`) are parsed; an unencrypted one must
    then load with `cryptography`, which no certificate, public key or other binary file does.
    An encrypted PKCS#8 key cannot be loaded without its password and is taken from its shape.
    """
    if not data or data[0] != 0x30 or len(data) > _MAX_DER_KEY:
        return False
    shape = _der_key_shape(data)
    outer = _der_element(data, 0)
    if shape is None or outer is None or outer[2] > len(data) or data[outer[2] :].strip():
        return False
    if shape == "encrypted":
        return True
    try:
        serialization.load_der_private_key(
            data[: outer[2]], password=None, unsafe_skip_rsa_key_validation=True
        )
    except (TypeError, _exc.UnsupportedAlgorithm):
        return True  # encrypted, or a key of an algorithm this build does not know
    except ValueError:
        return False
    return True


def key_id(key_dir: Path | None) -> str | None:
    """A stable id of a key folder for staleness checks: the hash of its public key file."""
    if key_dir is None:
        return None
    for name in (PUBLIC_KEY, PRIVATE_KEY):
        try:
            return hashlib.sha256((key_dir / name).read_bytes()).hexdigest()
        except OSError:
            continue
    return "missing"


def recipient_keys(key_dir: Path, extra: Sequence[Path]) -> list[rsa.RSAPublicKey]:
    """The vendor's own public key (pair created if absent) plus configured recipients."""
    ensure_keypair(key_dir)
    return [load_public_key(key_dir), *(load_public_key(path) for path in extra)]


def recipients_id(key_dir: Path | None, extra: Sequence[Path]) -> list[str]:
    """Ids of everyone an adaptation is encrypted for; a change means re-encrypt."""
    return sorted(str(key_id(p) if p.is_dir() else _file_id(p)) for p in [key_dir, *extra] if p)


def _file_id(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


# ---- policy: what is stored encrypted, and when ciphertext is rewritten ----


def readable_by(path: Path) -> list[str]:
    """Sorted fingerprints an encrypted file is readable by (from its header); [] when it
    is unreadable or in FlagScale's legacy format, which names no recipients."""
    try:
        with files.open_regular(path, files.MAX_PATCH) as handle:
            head = handle.read(_PREFIX + _MAX_HEADER)
            size = os.fstat(handle.fileno()).st_size
        return [] if is_legacy(head) else sorted(_parse_header(head, size, str(path))[2])
    except (OSError, OperationError, UsageError):
        return []


def seal_for_vendor(plaintext: bytes, key_dir: Path) -> bytes:
    """A patch waiting to be encrypted is kept sealed to the vendor's own key, so no
    plaintext is ever at rest, even when `encrypt` fails or is interrupted."""
    return encrypt(plaintext, [load_public_key(key_dir)])


def needs_rewrite(
    stored: Path, same_plaintext: bool, recipients: Sequence[rsa.RSAPublicKey]
) -> bool:
    """Ciphertext is rewritten only when its plaintext or its readers changed: a re-run or a
    fresh clone leaves `git status` clean."""
    wanted = sorted(fingerprint(key) for key in recipients)
    return not (stored.is_file() and same_plaintext and readable_by(stored) == wanted)
