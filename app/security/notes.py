"""Envelope encryption of confidential notes (AES-256-GCM from `cryptography`).

Each note gets its own data key; the data key is wrapped by a master key named by `key_id`
(stored per row), and both layers bind the row's id as associated data, so a ciphertext
copied onto another row does not decrypt. Rotation: add a new master key, make it current,
and re-wrap the data keys (`peerlink notes rewrap`); the note ciphertexts are not touched.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.config import DEV_NOTE_KEY_FILE, Settings


class NoteKeyError(Exception):
    """A note cannot be decrypted (unknown key id, or it was tampered with)."""


@dataclass
class NoteCipher:
    keys: dict[str, bytes]
    current: str

    @classmethod
    def from_settings(cls, settings: Settings) -> NoteCipher:
        keys = {kid: base64.b64decode(v.get_secret_value()) for kid, v in settings.note_keys.items()}
        current = settings.note_key_id
        if not keys:
            if settings.mode == "production":
                raise ValueError("production mode needs PEERLINK_NOTE_KEYS")
            keys, current = {"dev": _dev_key()}, "dev"
        if current not in keys:
            raise ValueError("PEERLINK_NOTE_KEY_ID must name one of PEERLINK_NOTE_KEYS")
        if any(len(k) != 32 for k in keys.values()):
            raise ValueError("note keys are 32 random bytes, base64-encoded")
        return cls(keys=keys, current=current)  # type: ignore[arg-type]

    def encrypt(self, text: str, row_id: bytes) -> tuple[bytes, bytes, str]:
        dek = AESGCM.generate_key(bit_length=256)
        n1, n2 = os.urandom(12), os.urandom(12)
        ciphertext = n1 + AESGCM(dek).encrypt(n1, text.encode(), row_id)
        wrapped = n2 + AESGCM(self.keys[self.current]).encrypt(n2, dek, row_id)
        return ciphertext, wrapped, self.current

    def decrypt(self, ciphertext: bytes, wrapped: bytes, key_id: str, row_id: bytes) -> str:
        master = self.keys.get(key_id)
        if master is None:
            raise NoteKeyError("unknown note key id")
        try:
            dek = AESGCM(master).decrypt(wrapped[:12], wrapped[12:], row_id)
            return AESGCM(dek).decrypt(ciphertext[:12], ciphertext[12:], row_id).decode()
        except InvalidTag as exc:
            raise NoteKeyError("note does not authenticate") from exc

    def rewrap(self, wrapped: bytes, key_id: str, row_id: bytes) -> tuple[bytes, str]:
        master = self.keys.get(key_id)
        if master is None:
            raise NoteKeyError("unknown note key id")
        dek = AESGCM(master).decrypt(wrapped[:12], wrapped[12:], row_id)
        n = os.urandom(12)
        return n + AESGCM(self.keys[self.current]).encrypt(n, dek, row_id), self.current


def _dev_key() -> bytes:
    if DEV_NOTE_KEY_FILE.exists():
        return base64.b64decode(DEV_NOTE_KEY_FILE.read_text())
    DEV_NOTE_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(DEV_NOTE_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(key))
    finally:
        os.close(fd)
    return key
