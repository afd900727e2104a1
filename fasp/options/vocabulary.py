"""The words the ascp command line, aspera.conf, the rate controller and fasp-server's users file share.

Each set is defined here once (rate policies, checksums, ciphers, overwrite rules, ...), with the
``[user@]host:path`` form, so those modules read one definition and none imports another for it.
Imports nothing of the engine.
"""

from __future__ import annotations

import os
import re

POLICIES = ("fixed", "high", "fair", "low")
"""Rate policies: --policy, aspera.conf's <policy>, fasp-server's allowed_policies, the rate controller."""

CHECKSUMS = ("md5", "sha1", "sha256", "sha384", "sha512", "none")
CHECKSUM_SPELLINGS = {"sha-1": "sha1", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}
"""The transfer spec's spellings (IBM's file_checksum enum), as ascli passes them."""

OVERWRITE = ("always", "never", "diff", "older", "diff+older")
PRESERVE_MODES = ("none", "native", "metafile")
SYMLINK_POLICIES = ("follow", "copy", "copy+force", "skip")
RESUME_POLICIES = {"none": "0", "attributes": "1", "sparse_checksum": "2", "full_checksum": "3"}
"""aspera.conf's <resume_policy> names for -k's levels."""

CIPHERS = {
    "aes128": 16,
    "aes-128": 16,
    "aes192": 24,
    "aes-192": 24,
    "aes256": 32,
    "aes-256": 32,
    "aes128gcm": 16,
    "aes192gcm": 24,
    "aes256gcm": 32,
    "none": 0,
    "aes128cfb": 16,
    "aes192cfb": 24,
    "aes256cfb": 32,
}
"""-c values: every spelling of IBM's cipher enum, with and without the hyphens ascli removes. The key size
is honoured; the data is always sealed with this engine's own AEAD, so a CFB name gets a note on stderr."""

DEFAULT_TARGET_KBPS = 1_000_000
"""Target rate when -l is absent: high, the rate controller finds the real capacity."""

_REMOTE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/@\s]+):(?P<path>.*)$")


def split_remote(arg: str) -> tuple[str | None, str | None, str]:
    """``[user@]host:path`` -> (user, host, path); a local path -> (None, None, path)."""
    match = _REMOTE.match(arg)
    if not match or os.path.exists(arg):
        return None, None, arg
    return match.group("user"), match.group("host").strip("[]"), match.group("path")
