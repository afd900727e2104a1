"""Whether to trust the peer's SSH host key: known_hosts as OpenSSH reads it, or a --check-sshfp pin.

A refused key is code 51 with a message that names the host, the key it offered and why it is not trusted
(not listed, CHANGED, not the pinned one), so an operator can tell a new host from an impersonated one.
"""

from __future__ import annotations

import os
import re
from typing import Any

import asyncssh
from asyncssh.public_key import get_default_certificate_algs, get_default_public_key_algs

from fasp.options.flags import Endpoint
from faspmanager.codes import EngineError, ErrorCode

KNOWN_HOSTS_ENV = "FASP_KNOWN_HOSTS"
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")


def known_hosts_files() -> list[str]:
    """Where trusted host keys are listed: $FASP_KNOWN_HOSTS alone if set, else OpenSSH's user and system files."""
    explicit = os.environ.get(KNOWN_HOSTS_ENV)
    return [explicit] if explicit else [os.path.expanduser(path) for path in DEFAULT_KNOWN_HOSTS]


def _read_known_hosts(files: list[str]) -> asyncssh.SSHKnownHosts:
    """The entries of every readable file (a missing one is empty, as for ssh); a malformed file is code 51."""
    text = b""
    for path in files:
        try:
            with open(path, "rb") as handle:
                text += handle.read() + b"\n"
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise EngineError(ErrorCode.INSECURE_CONNECTION, f"cannot read {path}: {exc.strerror}") from None
    try:
        return asyncssh.import_known_hosts(text.decode("utf-8", "replace"))
    except (ValueError, asyncssh.KeyImportError) as exc:
        raise EngineError(ErrorCode.INSECURE_CONNECTION, f"malformed known_hosts ({', '.join(files)}): {exc}") from None


_HEX32 = re.compile(r"[0-9a-f]{32}\Z")


def sshfp_matches(key: asyncssh.SSHKey, pin: str) -> bool:
    """Whether ``key`` has the fingerprint ``pin``: SHA256:base64 (with or without the prefix), or MD5 hex (with or
    without colons and the MD5: prefix; 32 hex digits are never a SHA256, whose base64 is 43 characters)."""
    want = pin.strip()
    md5 = want.lower().removeprefix("md5:").replace(":", "")
    if want.upper().startswith("MD5:") or (":" in want and not want.upper().startswith("SHA256:")) or _HEX32.match(md5):
        return key.get_fingerprint("md5").lower().removeprefix("md5:").replace(":", "") == md5
    got = key.get_fingerprint("sha256").removeprefix("SHA256:")
    return got.rstrip("=") == want.removeprefix("SHA256:").removeprefix("sha256:").rstrip("=")


class _HostKeyCheck(asyncssh.SSHClient):
    """asyncssh asks this about a host key that known_hosts does not list (with a pin, nothing is listed):
    it is trusted only if it has the --check-sshfp fingerprint; otherwise it is kept for the error message.
    asyncssh decides during the key exchange, so a refused server never sees an authentication request."""

    def __init__(self, pin: str | None) -> None:
        self.pin = pin
        self.refused: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        if self.pin is not None and sshfp_matches(key, self.pin):
            return True
        self.refused = key
        return False


def _listed_keys(known: asyncssh.SSHKnownHosts | None, remote: Endpoint) -> list[asyncssh.SSHKey]:
    """The keys known_hosts lists for the peer (``[host]:port``, else ``host``, as asyncssh matches)."""
    return list(known.match(remote.host, "", remote.port if remote.port != 22 else None)[0]) if known else []


def _host_key_algs(listed: list[asyncssh.SSHKey]) -> list[str]:
    """The listed keys' algorithms first, then every other one (as OpenSSH orders them): asyncssh alone would
    offer only the listed ones, so a server whose key changed type would fail the key exchange, not code 51."""
    algs = [alg for key in listed for alg in key.sig_algorithms]
    algs += get_default_certificate_algs() + get_default_public_key_algs()
    return [alg.decode() for alg in dict.fromkeys(algs)]


class HostKeyPolicy:
    """How one connection checks the peer's host key: the asyncssh options that enforce it, and the error
    that explains a refusal. Reading known_hosts happens here, before any connection (a bad file is code 51)."""

    def __init__(self, remote: Endpoint) -> None:
        self._remote = remote
        self._files = known_hosts_files()
        self._check = _HostKeyCheck(None if remote.ignore_host_key else remote.check_sshfp)
        self._known = None if remote.ignore_host_key or remote.check_sshfp else _read_known_hosts(self._files)

    def connect_options(self) -> dict[str, Any]:
        """asyncssh.connect options: --ignore-host-key alone skips the check."""
        if self._remote.ignore_host_key:
            return {"known_hosts": None}
        if self._known is None:  # a pin: nothing is listed, so every key goes to the check
            return {"known_hosts": ([], [], []), "client_factory": lambda: self._check}
        return {
            "known_hosts": self._known,
            "client_factory": lambda: self._check,
            "server_host_key_algs": _host_key_algs(_listed_keys(self._known, self._remote)),
        }

    def refusal(self, reason: str) -> EngineError:
        """Code 51 naming the host, the key it offered and why it is not trusted."""
        remote, check, files = self._remote, self._check, self._files
        name = remote.host if remote.port == 22 else f"[{remote.host}]:{remote.port}"
        key = check.refused
        offered = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}" if key is not None else "its host key"
        if key is None:  # refused before asking us: a revoked key or a certificate known_hosts does not trust
            why = f"is not trusted: {reason}"
        elif check.pin is not None:
            why = f"does not match --check-sshfp {check.pin}"
        elif _listed_keys(self._known, remote):
            why = (
                f"is NOT the key listed for it in {', '.join(files)}: the host key has CHANGED "
                f"(or someone is impersonating the host)"
            )
        else:
            why = (
                f"is not in {', '.join(files)} (add it, pin it with --check-sshfp, "
                f"or skip the check with --ignore-host-key)"
            )
        return EngineError(ErrorCode.INSECURE_CONNECTION, f"host key of {name}: {offered} {why}")
