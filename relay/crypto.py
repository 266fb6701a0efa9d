"""Secrets at rest: webhook signing secrets are stored encrypted with Fernet (AES-128-CBC +
HMAC-SHA256) under RELAY_ENCRYPTION_KEYS. The first key encrypts; every key decrypts, so a new key
can be put first and ``relay keys rotate`` re-encrypts everything under it."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from relay.errors import SecretUndecryptable

PREFIX = "fernet:"
OPENED_KEEP = 1024
UNDECRYPTABLE = (
    "no key in RELAY_ENCRYPTION_KEYS decrypts a stored webhook secret: put the key it was stored "
    "under back in RELAY_ENCRYPTION_KEYS (after the current one) and restart"
)


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        # Stored token -> plaintext. The worker opens the same project's secret for every delivery;
        # a Fernet decrypt (HMAC check + AES) each time was a few percent of a delivery's CPU.
        self._opened: dict[str, str] = {}

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, stored: str) -> str:
        opened = self._opened.get(stored)
        if opened is not None:
            return opened
        if not stored.startswith(PREFIX):
            raise SecretUndecryptable("a stored webhook secret is not encrypted")
        try:
            opened = self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretUndecryptable(UNDECRYPTABLE) from None
        if len(self._opened) >= OPENED_KEEP:
            self._opened.clear()
        self._opened[stored] = opened
        return opened

    def rotate(self, stored: str) -> str:
        """The same secret, encrypted under the first key."""
        try:
            token = self._fernet.rotate(stored.removeprefix(PREFIX).encode())
        except InvalidToken:
            raise SecretUndecryptable(UNDECRYPTABLE) from None
        return PREFIX + token.decode()


def generate_key() -> str:
    return Fernet.generate_key().decode()
