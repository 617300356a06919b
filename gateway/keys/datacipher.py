"""Encryption at rest of personal data: AES-256-GCM with the key id stored beside each value.
The associated data binds a ciphertext to its row, so a value copied to another row won't open."""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class DataCipher:
    def __init__(self, current_kid: Callable[[], str], key_for: Callable[[str], bytes]) -> None:
        self._current_kid = current_kid
        self._key_for = key_for
        self._aead: dict[str, AESGCM] = {}

    def _cipher(self, kid: str) -> AESGCM:
        aead = self._aead.get(kid)
        if aead is None:
            aead = self._aead[kid] = AESGCM(self._key_for(kid))
        return aead

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        kid = self._current_kid()
        nonce = os.urandom(NONCE_BYTES)
        return kid, nonce + self._cipher(kid).encrypt(nonce, plaintext, aad)

    def decrypt(self, kid: str, blob: bytes, aad: bytes) -> bytes:
        return self._cipher(kid).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
