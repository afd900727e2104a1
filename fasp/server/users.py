"""The transfer server's users file: who may log in, how, and what they may touch.

A TOML file, one table per user::

    [users.alice]
    password_hash = "scrypt$131072$8$1$<salt>$<hash>"   # optional: no hash, no password login
    authorized_keys = ["ssh-ed25519 AAAA... alice@laptop"] # OpenSSH public key lines
    docroot = "/srv/fasp/alice"                           # every client path is confined here
    rate_cap_kbps = 100000                                # optional ceiling for the user's sessions
    allowed_policies = ["fair", "low"]                    # optional; default: all policies
    max_sessions = 4                                      # optional concurrent sessions; default: fasp-server's
                                                          # --max-sessions (16)

Only salted scrypt hashes are stored, never a clear password. New hashes use
scrypt N=2^17, r=8, p=1 (128 MiB, about 0.3 s); a hash with a lower cost still
verifies and is replaced by a new one at that user's next successful login.
``python -m fasp.server.users`` adds a user or prints a hash, reading the password from
stdin or an environment variable so that it never shows in a process listing;
it refuses a weak password (see :func:`password_weakness`), as fasp-server does.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh

from fasp.options.vocabulary import POLICIES

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2**17, 8, 1, 32
MIN_PASSWORD_LENGTH = 8
PASSWORD_RULE = f"at least {MIN_PASSWORD_LENGTH} characters, not one of the most common passwords"
COMMON_PASSWORDS = frozenset(
    """
password password1 password12 password123 passw0rd 12345678 123456789 1234567890 11111111 00000000
87654321 qwertyui qwerty123 qwertyuiop 1q2w3e4r 1qaz2wsx iloveyou sunshine princess football baseball
welcome1 letmein1 admin123 administrator changeme trustno1 abc12345 monkey123 dragon12 superman
""".split()
)


class UsersFileError(ValueError):
    """The users file cannot be read or says something invalid."""


@dataclass(frozen=True)
class User:
    name: str
    docroot: str
    password_hash: str | None = None
    authorized_keys: tuple[str, ...] = ()
    rate_cap_kbps: int | None = None
    allowed_policies: tuple[str, ...] | None = None
    max_sessions: int | None = None  # None: the server's default

    def __post_init__(self) -> None:
        if not self.name:
            raise UsersFileError("a user needs a name")
        if not self.docroot:
            raise UsersFileError(f"user {self.name!r}: docroot is required")
        if self.rate_cap_kbps is not None and (type(self.rate_cap_kbps) is not int or self.rate_cap_kbps <= 0):
            raise UsersFileError(f"user {self.name!r}: rate_cap_kbps must be a positive integer")
        if self.max_sessions is not None and (type(self.max_sessions) is not int or self.max_sessions <= 0):
            raise UsersFileError(f"user {self.name!r}: max_sessions must be a positive integer")
        for key in self.authorized_keys:
            try:
                if not isinstance(key, str):
                    raise TypeError(key)
                asyncssh.import_authorized_keys(key)
            except (TypeError, ValueError):
                raise UsersFileError(f"user {self.name!r}: not an OpenSSH public key line: {key!r:.60}") from None
        if self.allowed_policies is not None:
            unknown = set(self.allowed_policies) - set(POLICIES)
            if unknown or not self.allowed_policies:
                raise UsersFileError(f"user {self.name!r}: allowed_policies must be a non-empty subset of {POLICIES}")
        if self.password_hash is not None:
            _parse_hash(self.password_hash)


def password_weakness(password: str) -> str | None:
    """Why ``password`` is too weak to configure (None: it is not): empty, shorter than
    MIN_PASSWORD_LENGTH characters, or one of COMMON_PASSWORDS (case-insensitive)."""
    if not password:
        return "the password is empty"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password is shorter than {MIN_PASSWORD_LENGTH} characters"
    if password.lower() in COMMON_PASSWORDS:
        return "the password is one of the most common passwords"
    return None


def hash_password(password: str, *, n: int = _SCRYPT_N) -> str:
    """A salted scrypt hash of ``password``, self-describing so the cost can change later
    (``n`` lower than the default only to build old hashes in tests)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN)
    return "$".join(["scrypt", str(n), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (constant-time comparison)."""
    n, r, p, salt, digest = _parse_hash(password_hash)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


def needs_rehash(password_hash: str) -> bool:
    """Whether a (verified) hash was made with a lower cost than new hashes get."""
    n, r, p, _, _ = _parse_hash(password_hash)
    return n < _SCRYPT_N or r < _SCRYPT_R or p < _SCRYPT_P


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # hashlib's default maxmem (32 MiB) is below what N=2^17, r=8 needs (128 MiB)
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=128 * r * n * p + 2**24)


def _parse_hash(password_hash: str) -> tuple[int, int, int, bytes, bytes]:
    parts = password_hash.split("$")
    try:
        scheme, n, r, p, salt, digest = parts
        if scheme != "scrypt":
            raise ValueError(scheme)
        return int(n), int(r), int(p), base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True)
    except ValueError:
        raise UsersFileError("password_hash is not a scrypt$N$r$p$salt$hash string") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_users(text: str) -> dict[str, User]:
    """Users by name from the TOML text of a users file."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsersFileError(f"users file is not valid TOML: {exc}") from None
    tables = doc.get("users", {})
    if not isinstance(tables, dict):
        raise UsersFileError("[users] must be a table of user tables")
    users = {}
    for name, entry in tables.items():
        if not isinstance(entry, dict):
            raise UsersFileError(f"users.{name} must be a table")
        known = {"password_hash", "authorized_keys", "docroot", "rate_cap_kbps", "allowed_policies", "max_sessions"}
        if unknown := set(entry) - known:
            raise UsersFileError(f"user {name!r}: unknown fields {sorted(unknown)}")
        policies = entry.get("allowed_policies")
        users[name] = User(
            name=name,
            docroot=entry.get("docroot", ""),
            password_hash=entry.get("password_hash"),
            authorized_keys=tuple(entry.get("authorized_keys", ())),
            rate_cap_kbps=entry.get("rate_cap_kbps"),
            allowed_policies=None if policies is None else tuple(policies),
            max_sessions=entry.get("max_sessions"),
        )
    return users


def load_users(path: str | os.PathLike) -> dict[str, User]:
    """Users by name from a users file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc.strerror}") from None
    return parse_users(text)


def format_users(users: dict[str, User]) -> str:
    """The TOML text of a users file (tomllib reads TOML but cannot write it)."""
    lines = []
    for user in users.values():
        lines.append(f"[users.{_toml_str(user.name)}]")
        lines.append(f"docroot = {_toml_str(user.docroot)}")
        if user.password_hash is not None:
            lines.append(f"password_hash = {_toml_str(user.password_hash)}")
        lines.append(f"authorized_keys = [{', '.join(map(_toml_str, user.authorized_keys))}]")
        if user.rate_cap_kbps is not None:
            lines.append(f"rate_cap_kbps = {user.rate_cap_kbps}")
        if user.allowed_policies is not None:
            lines.append(f"allowed_policies = [{', '.join(map(_toml_str, user.allowed_policies))}]")
        if user.max_sessions is not None:
            lines.append(f"max_sessions = {user.max_sessions}")
        lines.append("")
    return "\n".join(lines)


def _toml_str(value: str) -> str:
    """A TOML basic string: JSON escapes control characters as TOML does, except DEL (and must keep
    other characters raw: TOML has no surrogate-pair escapes)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def save_users(path: str | os.PathLike, users: dict[str, User]) -> None:
    """Write the users file atomically, readable by its owner only (it holds hashes)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(format_users(users))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def replace_hash(path: str | os.PathLike, name: str, old_hash: str, new_hash: str) -> bool:
    """In the users file, ``name``'s ``old_hash`` becomes ``new_hash`` (atomically); False, changing
    nothing, when the file no longer holds that user with that hash (an operator edited it meanwhile)."""
    users = load_users(path)
    user = users.get(name)
    if user is None or user.password_hash != old_hash:
        return False
    users[name] = replace(user, password_hash=new_hash)
    save_users(path, users)
    return True


def read_public_keys(text: str) -> tuple[str, ...]:
    """The key lines of an authorized_keys text (blank lines and comments dropped)."""
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _read_password(args: argparse.Namespace) -> str:
    if args.password_env:
        try:
            password = os.environ[args.password_env]
        except KeyError:
            raise SystemExit(f"environment variable {args.password_env} is not set") from None
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if weakness := password_weakness(password):
        raise SystemExit(f"refused: {weakness} ({PASSWORD_RULE})")
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fasp.server.users", description="Manage the fasp-server users file."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    hasher = sub.add_parser("hash", help="print the hash of a password read from stdin or --password-env")
    hasher.add_argument("--password-env", metavar="VAR")
    add = sub.add_parser("add", help="add or replace a user")
    add.add_argument("--file", required=True, help="users file (created if missing)")
    add.add_argument("--user", required=True)
    add.add_argument("--docroot", required=True)
    password = add.add_mutually_exclusive_group()
    password.add_argument("--password-env", metavar="VAR", help="read the password from this variable")
    password.add_argument("--password-stdin", action="store_true", help="read it from the first line of stdin")
    add.add_argument("--authorized-keys", metavar="FILE", help="OpenSSH authorized_keys file to copy keys from")
    add.add_argument("--rate-cap", type=int, metavar="KBPS")
    add.add_argument("--allowed-policies", metavar="LIST", help="comma-separated, e.g. fair,low")
    add.add_argument("--max-sessions", type=int, metavar="N", help="concurrent sessions (default: the server's)")
    args = parser.parse_args(argv)

    try:
        if args.command == "hash":
            print(hash_password(_read_password(args)))
            return 0
        path = Path(args.file)
        users = load_users(path) if path.exists() else {}
        wants_password = args.password_env or args.password_stdin
        users[args.user] = User(
            name=args.user,
            docroot=os.path.abspath(args.docroot),
            password_hash=hash_password(_read_password(args)) if wants_password else None,
            authorized_keys=read_public_keys(Path(args.authorized_keys).read_text()) if args.authorized_keys else (),
            rate_cap_kbps=args.rate_cap,
            allowed_policies=tuple(args.allowed_policies.split(",")) if args.allowed_policies else None,
            max_sessions=args.max_sessions,
        )
        save_users(path, users)
    except (UsersFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
