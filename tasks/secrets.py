"""Sealing of secrets (passwords, passphrases, tokens) before they reach Redis.

Clients and workers share one Fernet key (FASPQ_SECRET_KEY or
FASPQ_SECRET_KEY_FILE); a sealed value is authenticated ciphertext, so Redis,
the broker and the result backend never hold a secret in clear.
"""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class SecretKeyError(RuntimeError):
    """No usable shared key, or a sealed value that this key cannot open."""


class Sealer:
    def __init__(self, key: bytes | None):
        if not key:
            raise SecretKeyError("orders carrying secrets need a shared key: set FASPQ_SECRET_KEY "
                                 "(e.g. from `python -c 'import cryptography.fernet as f; "
                                 "print(f.Fernet.generate_key().decode())'`) or FASPQ_SECRET_KEY_FILE")
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(f"FASPQ_SECRET_KEY is not a Fernet key: {exc}") from None

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a sealed secret cannot be opened with this FASPQ_SECRET_KEY") from None


def generate_key() -> bytes:
    return Fernet.generate_key()
