"""The shared key of clients and workers, and what is derived from it.

Clients and workers share one secret (FASPQ_SECRET_KEY or FASPQ_SECRET_KEY_FILE).
Nothing uses it directly: HKDF derives one key per purpose, so a key that
authenticates orders never encrypts, and the control MAC key is neither:

* the order MAC (HMAC-SHA256 over the whole stored order, tasks/schema.py);
* sealing of secrets (AES-256-GCM whose associated data is the transfer id and
  field name: a sealed value opens only in the order and field it was sealed
  for, so copying it into another order gets nothing);
* the control MAC (tasks/store/control.py).

Redis, the broker and the result backend thus never hold a secret in clear,
and nobody without the shared key can write an order a worker will run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_BYTES = 16
_SEAL_PREFIX = "g1."  # AES-GCM, version 1 of the sealed form
_NONCE = 12


class SecretKeyError(RuntimeError):
    """No usable shared key, or a sealed value that this key cannot open."""


NO_KEY = (
    "no shared key: set FASPQ_SECRET_KEY (e.g. from `python -c 'import secrets; "
    "print(secrets.token_urlsafe(32))'`) or FASPQ_SECRET_KEY_FILE, the same on every client and worker"
)


def derive(secret: bytes | None, purpose: str) -> bytes:
    """A 32-byte key for one ``purpose``, derived from the shared secret with HKDF-SHA256."""
    if not secret:
        raise SecretKeyError(NO_KEY)
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretKeyError(f"FASPQ_SECRET_KEY is too short ({len(secret)} bytes; at least {MIN_SECRET_BYTES})")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"faspq-v2", info=purpose.encode()).derive(secret)


def mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def mac_ok(key: bytes, data: bytes, given: object) -> bool:
    if isinstance(given, str):
        given = given.encode("utf-8", "replace")
    return isinstance(given, bytes) and hmac.compare_digest(mac(key, data).encode(), given)


class Sealer:
    """Seals secrets of one deployment; ``context`` (transfer id + field) is authenticated, not secret."""

    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(derive(key, "faspq seal"))

    def seal(self, secret: str, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return _SEAL_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> str:
        """The secret, or SecretKeyError when the key, the context or the bytes differ from sealing."""
        if not isinstance(sealed, str) or not sealed.startswith(_SEAL_PREFIX):
            raise SecretKeyError("a sealed secret of an unknown form (sealed by an older version?)")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_SEAL_PREFIX) :])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (InvalidTag, ValueError):
            raise SecretKeyError(
                "a sealed secret does not open here: another key, or sealed for another transfer or field"
            ) from None


def generate_key() -> bytes:
    """A fresh shared secret (URL-safe text, 32 random bytes)."""
    return base64.urlsafe_b64encode(os.urandom(32))
