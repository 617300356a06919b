"""The backup file's encryption: a header that says how the file key is protected, then the
archive in AES-256-GCM chunks (a STREAM construction: each nonce carries the chunk's number
and whether it is the last, so reordered, dropped or truncated chunks fail to open).

The file key is either derived from a passphrase (scrypt, N=2^17, r=8, p=1) or random and
sealed to a recipient's X25519 public key with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-256-GCM). With a recipient key the machine that makes backups cannot read
them: the private key can stay offline until a restore."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway.errors import UsageError

MAGIC = b"CMRGWBK1"
CHUNK = 1 << 16
PREFIX_BYTES = 7
HPKE_INFO = b"cmr-gateway backup v1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1
MIN_PASSPHRASE = 12
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


class BackupUnreadable(UsageError):
    code = "backup_unreadable"
    title = "The backup cannot be opened"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise BackupUnreadable("the backup's header is damaged")
    return base64.b64decode(text)


def read_passphrase(path: Path) -> bytes:
    try:
        value = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    if len(value) < MIN_PASSPHRASE:
        raise UsageError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    return value


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def generate_recipient_key(private_out: Path) -> Path:
    """An X25519 key pair for backups: the private key (PEM, 0600) and `<file>.pub`."""
    if private_out.exists():
        raise UsageError(f"{private_out} exists: choose another name")
    key = X25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_out = private_out.with_name(private_out.name + ".pub")
    public_out.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_out


def _load_public(path: Path) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read a public key from {path}: {exc}") from None
    if not isinstance(key, X25519PublicKey):
        raise UsageError(f"{path} is not an X25519 public key (see `cmr-gateway backup-keygen`)")
    return key


def _load_private(path: Path) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot read a private key from {path}: {exc}") from None
    if not isinstance(key, X25519PrivateKey):
        raise UsageError(f"{path} is not an X25519 private key")
    return key


def _fingerprint(key: X25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Protection:
    """How to make or open a backup: with a passphrase, or a recipient's key."""

    passphrase: bytes | None = None
    recipient: Path | None = None  # public key, to make a backup
    identity: Path | None = None  # private key, to open one

    def seal_header(self) -> tuple[dict[str, Any], bytes]:
        if self.passphrase is not None:
            salt = os.urandom(16)
            header: dict[str, Any] = {"method": "passphrase", "kdf": "scrypt"}
            header |= {"salt": _b64(salt), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
            return header, _scrypt(self.passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        if self.recipient is not None:
            public = _load_public(self.recipient)
            file_key = os.urandom(32)
            sealed = _SUITE.encrypt(file_key, public, info=HPKE_INFO)
            header = {
                "method": "recipient",
                "suite": "HPKE-DHKEM-X25519-HKDF-SHA256-AES-256-GCM",
                "recipient": _fingerprint(public),
                "sealed_key": _b64(sealed),
            }
            return header, file_key
        raise UsageError("give --passphrase-file or --recipient")

    def open_header(self, header: dict[str, Any]) -> bytes:
        method = header.get("method")
        if method == "passphrase":
            if self.passphrase is None:
                raise UsageError("this backup is protected by a passphrase: give --passphrase-file")
            n, r, p = header.get("n"), header.get("r"), header.get("p")
            if not all(isinstance(v, int) and 0 < v <= 1 << 20 for v in (n, r, p)):
                raise BackupUnreadable("the backup's header is damaged")
            return _scrypt(self.passphrase, _unb64(header.get("salt")), n, r, p)  # type: ignore[arg-type]
        if method == "recipient":
            if self.identity is None:
                raise UsageError(
                    f"this backup is sealed to key {header.get('recipient')}: give --identity"
                )
            private = _load_private(self.identity)
            try:
                return _SUITE.decrypt(_unb64(header.get("sealed_key")), private, info=HPKE_INFO)
            except Exception:
                raise BackupUnreadable("this backup was sealed to another key") from None
        raise BackupUnreadable("not a backup of this gateway, or of a newer version")


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


class EncryptingWriter:
    """A write-only file object: what is written lands encrypted in `out`."""

    def __init__(self, out: IO[bytes], protection: Protection) -> None:
        header, key = protection.seal_header()
        self._prefix = os.urandom(PREFIX_BYTES)
        header = {"version": 1, **header, "chunk": CHUNK, "nonce_prefix": _b64(self._prefix)}
        self._header = json.dumps(header, sort_keys=True).encode()
        self._aead = AESGCM(key)
        self._out = out
        self._buf = bytearray()
        self._counter = 0
        self._closed = False
        out.write(MAGIC + struct.pack(">I", len(self._header)) + self._header)

    def _emit(self, data: bytes, last: bool) -> None:
        nonce = _nonce(self._prefix, self._counter, last)
        sealed = self._aead.encrypt(nonce, data, self._header)
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._counter += 1

    def write(self, data: bytes) -> int:
        self._buf.extend(data)
        # Strictly more than a chunk: the last chunk is written by close(), never empty-handed.
        while len(self._buf) > CHUNK:
            self._emit(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._emit(bytes(self._buf), last=True)
            self._buf.clear()
            self._closed = True

    def flush(self) -> None:
        pass


class DecryptingReader:
    """A read-only file object over an encrypted backup; raises BackupUnreadable on any
    tampering or truncation."""

    def __init__(self, src: IO[bytes], protection: Protection) -> None:
        self._src = src
        if src.read(len(MAGIC)) != MAGIC:
            raise BackupUnreadable("not a backup of this gateway")
        (length,) = struct.unpack(">I", self._exact(4))
        if length > 1 << 16:
            raise BackupUnreadable("the backup's header is damaged")
        self._header = self._exact(length)
        try:
            header = json.loads(self._header)
        except ValueError:
            raise BackupUnreadable("the backup's header is damaged") from None
        if not isinstance(header, dict) or header.get("version") != 1:
            raise BackupUnreadable("not a backup of this gateway, or of a newer version")
        self.header: dict[str, Any] = header
        self._aead = AESGCM(protection.open_header(header))
        self._prefix = _unb64(header.get("nonce_prefix"))
        self._chunk_limit = int(header.get("chunk", CHUNK)) + 16
        self._counter = 0
        self._buf = bytearray()
        self._pending = self._read_sealed()
        self._done = False

    def _exact(self, n: int) -> bytes:
        data = self._src.read(n)
        if len(data) != n:
            raise BackupUnreadable("the backup is truncated")
        return data

    def _read_sealed(self) -> bytes | None:
        raw = self._src.read(4)
        if not raw:
            return None
        if len(raw) != 4:
            raise BackupUnreadable("the backup is truncated")
        (length,) = struct.unpack(">I", raw)
        if length > self._chunk_limit:
            raise BackupUnreadable("the backup is damaged")
        return self._exact(length)

    def _next_chunk(self) -> None:
        if self._pending is None:
            raise BackupUnreadable("the backup is truncated")
        following = self._read_sealed()
        last = following is None
        try:
            plain = self._aead.decrypt(
                _nonce(self._prefix, self._counter, last), self._pending, self._header
            )
        except InvalidTag:
            if self._counter == 0 and self.header.get("method") == "passphrase":
                raise BackupUnreadable("wrong passphrase, or the backup is damaged") from None
            raise BackupUnreadable("the backup is damaged or truncated") from None
        self._counter += 1
        self._buf.extend(plain)
        self._pending = following
        self._done = last

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            self._next_chunk()
        if n < 0:
            n = len(self._buf)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out
