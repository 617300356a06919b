"""The gateway's keys, kept as files in the data directory's keys/ folder.

keyring.json lists the key ids and their lifetimes (no key material); each private key is a file
of its own, mode 0600. The keyring is re-read when keyring.json changes, so a `keys rotate` run
beside a serving gateway takes effect without a restart."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, OKPKey

from gateway.clock import Clock
from gateway.errors import SettingsError

KEYRING_FILE = "keyring.json"
ENC_ALG = "ECDH-ES+A256KW"
SIG_ALG = "Ed25519"


@dataclass(frozen=True)
class KeyEntry:
    kid: str
    created_at: datetime
    retired_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "created_at": self.created_at.isoformat(),
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> KeyEntry:
        retired = raw.get("retired_at")
        return cls(
            kid=str(raw["kid"]),
            created_at=datetime.fromisoformat(raw["created_at"]),
            retired_at=datetime.fromisoformat(retired) if retired else None,
        )


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _new_enc_key() -> OKPKey:
    key = OKPKey.generate_key("X25519", private=True)
    key.ensure_kid()
    return key


def _new_sig_key() -> OKPKey:
    key = OKPKey.generate_key("Ed25519", private=True)
    key.ensure_kid()
    return key


class Keyring:
    def __init__(self, keys_dir: Path, clock: Clock, overlap: timedelta) -> None:
        self.dir = keys_dir
        self.clock = clock
        self.overlap = overlap
        self._mtime_ns = -1
        self._enc: list[KeyEntry] = []
        self._sig: list[KeyEntry] = []
        self._data: list[KeyEntry] = []
        self._enc_keys: dict[str, OKPKey | ECKey] = {}
        self._sig_keys: dict[str, OKPKey] = {}
        self._data_keys: dict[str, bytes] = {}
        self.reload()

    # -- creation and rotation (command line) -------------------------------------------------

    @staticmethod
    def exists(keys_dir: Path) -> bool:
        return (keys_dir / KEYRING_FILE).exists()

    @classmethod
    def create(cls, keys_dir: Path, clock: Clock) -> None:
        """Make a first set of keys; does nothing if a keyring is already there."""
        if cls.exists(keys_dir):
            return
        keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        now = clock.now()
        enc, sig = _new_enc_key(), _new_sig_key()
        _write_private(
            keys_dir / f"enc-{enc.kid}.jwk", json.dumps(enc.as_dict(private=True)).encode()
        )
        _write_private(
            keys_dir / f"sig-{sig.kid}.jwk", json.dumps(sig.as_dict(private=True)).encode()
        )
        data_kid = "dk-" + secrets.token_hex(8)
        _write_private(keys_dir / f"{data_kid}.key", base64.b64encode(secrets.token_bytes(32)))
        cls._write_index(
            keys_dir,
            enc=[KeyEntry(str(enc.kid), now)],
            sig=[KeyEntry(str(sig.kid), now)],
            data=[KeyEntry(data_kid, now)],
        )

    @staticmethod
    def _write_index(
        keys_dir: Path, enc: list[KeyEntry], sig: list[KeyEntry], data: list[KeyEntry]
    ) -> None:
        index = {
            "enc": [e.as_dict() for e in enc],
            "sig": [e.as_dict() for e in sig],
            "data": [e.as_dict() for e in data],
        }
        _write_private(keys_dir / KEYRING_FILE, json.dumps(index, indent=2).encode())

    def rotate_encryption_key(self) -> str:
        now = self.clock.now()
        key = _new_enc_key()
        _write_private(
            self.dir / f"enc-{key.kid}.jwk", json.dumps(key.as_dict(private=True)).encode()
        )
        retired = [e if e.retired_at else KeyEntry(e.kid, e.created_at, now) for e in self._enc]
        self._write_index(self.dir, [KeyEntry(str(key.kid), now), *retired], self._sig, self._data)
        self.reload()
        return str(key.kid)

    # -- loading --------------------------------------------------------------------------------

    def reload_if_changed(self) -> None:
        try:
            mtime = (self.dir / KEYRING_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != self._mtime_ns:
            self.reload()

    def reload(self) -> None:
        index_path = self.dir / KEYRING_FILE
        try:
            mtime = index_path.stat().st_mtime_ns
            index = json.loads(index_path.read_text())
            enc = [KeyEntry.from_dict(e) for e in index["enc"]]
            sig = [KeyEntry.from_dict(e) for e in index["sig"]]
            data = [KeyEntry.from_dict(e) for e in index["data"]]
            enc_keys: dict[str, OKPKey | ECKey] = {}
            for e in enc:
                raw = json.loads((self.dir / f"enc-{e.kid}.jwk").read_text())
                enc_keys[e.kid] = (
                    OKPKey.import_key(raw) if raw["kty"] == "OKP" else ECKey.import_key(raw)
                )
            sig_keys = {
                e.kid: OKPKey.import_key(json.loads((self.dir / f"sig-{e.kid}.jwk").read_text()))
                for e in sig
            }
            data_keys = {
                e.kid: base64.b64decode((self.dir / f"{e.kid}.key").read_bytes()) for e in data
            }
        except FileNotFoundError as exc:
            raise SettingsError(
                f"the gateway keys are missing ({exc.filename}); run `cmr-gateway init`"
            ) from None
        except (KeyError, ValueError) as exc:
            raise SettingsError(f"the keyring in {self.dir} is damaged: {exc}") from None
        if not enc or not sig or not data:
            raise SettingsError(f"the keyring in {self.dir} has no current key")
        if any(len(k) != 32 for k in data_keys.values()):
            raise SettingsError(f"a data key in {self.dir} is not 256 bits")
        self._enc, self._sig, self._data = enc, sig, data
        self._enc_keys, self._sig_keys, self._data_keys = enc_keys, sig_keys, data_keys
        self._mtime_ns = mtime

    # -- use ------------------------------------------------------------------------------------

    def _enc_usable(self, entry: KeyEntry, now: datetime) -> bool:
        return entry.retired_at is None or now < entry.retired_at + self.overlap

    def decryption_key(self, kid: str) -> OKPKey | ECKey | None:
        """The private key for `kid`, or None when it is unknown or past its overlap."""
        now = self.clock.now()
        for entry in self._enc:
            if entry.kid == kid:
                return self._enc_keys[kid] if self._enc_usable(entry, now) else None
        return None

    @property
    def current_encryption_kid(self) -> str:
        return self._enc[0].kid

    @property
    def signing_key(self) -> OKPKey:
        return self._sig_keys[self._sig[0].kid]

    def verification_keys(self) -> dict[str, OKPKey]:
        return dict(self._sig_keys)

    @property
    def current_data_kid(self) -> str:
        return self._data[0].kid

    def data_key(self, kid: str) -> bytes:
        try:
            return self._data_keys[kid]
        except KeyError:
            raise SettingsError(f"data key {kid} is not in the keyring") from None

    def data_keys(self) -> dict[str, bytes]:
        return dict(self._data_keys)

    def jwks(self) -> dict[str, Any]:
        """Public keys only: the usable encryption keys, current first, then the signing keys."""
        now = self.clock.now()
        keys: list[dict[str, Any]] = []
        for entry in self._enc:
            if self._enc_usable(entry, now):
                pub = self._enc_keys[entry.kid].as_dict(private=False)
                keys.append({**pub, "kid": entry.kid, "use": "enc", "alg": ENC_ALG})
        for entry in self._sig:
            pub = self._sig_keys[entry.kid].as_dict(private=False)
            keys.append({**pub, "kid": entry.kid, "use": "sig", "alg": SIG_ALG})
        return {"keys": keys}
