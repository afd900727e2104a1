"""The forms an option's value takes: text in, a typed value out, or ValueError saying what is wrong.

A reason never names the option: the command line prefixes the flag (``-Z: 10 is out of range ...``),
aspera.conf the element and its line, so one form serves both.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Callable, Iterable

from fasp.options.vocabulary import CHECKSUM_SPELLINGS, CHECKSUMS, CIPHERS, POLICIES, RESUME_POLICIES

MAX_TAGS = 64 * 1024
"""Bytes of --tags JSON accepted: metadata for events and logs, not a payload."""


def integer(lo: int = 0, hi: int | None = None) -> Callable[[str], int]:
    """A decimal integer within [lo, hi]."""

    def parse(raw: str) -> int:
        try:
            value = int(raw, 10)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"{value} is out of range [{lo}, {hi if hi is not None else 'inf'}]")
        return value

    return parse


def choice(options: Iterable[str]) -> Callable[[str], str]:
    """One of ``options``, in any case."""
    allowed = tuple(options)

    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in allowed:
            raise ValueError(f"{raw!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def text(raw: str) -> str | None:
    """A path or name; empty means not given."""
    return raw or None


def boolean01(raw: str) -> bool:
    """ascp's ``0|1`` switches (-j)."""
    return choice(("0", "1"))(raw) == "1"


def cipher(raw: str) -> str:
    """A name of :data:`CIPHERS`; ``aes-128-gcm`` as ``aes128gcm``."""
    return choice(CIPHERS)(raw.replace("-", ""))


def checksum(raw: str) -> str:
    """A name of :data:`CHECKSUMS`, or one of the transfer spec's spellings of it."""
    return choice(CHECKSUMS)(CHECKSUM_SPELLINGS.get(raw.lower(), raw.lower()))


def policies(raw: str) -> tuple[str, ...] | None:
    """A comma-separated list of :data:`POLICIES`; empty means not given."""
    return tuple(choice(POLICIES)(p.strip()) for p in raw.split(",") if p.strip()) or None


_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([kmgp%]?)$", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1, "m": 1000, "g": 1_000_000}


def rate(lo: int) -> Callable[[str], tuple[int, bool]]:
    """ascp's rate forms: kbit/s, decimals allowed, with K/M/G suffixes (x1, x1000, x1000000: ``100m``,
    ``1.5G``) or P/p/% for a percent; (value, is_percent). A fraction of a kbit/s rounds to the nearest."""

    def parse(raw: str) -> tuple[int, bool]:
        match = _RATE.match(raw.strip())
        if not match:
            raise ValueError(f"{raw!r} is not a rate (kbit/s, with an optional K, M, G or % suffix)")
        number, unit = float(match.group(1)), match.group(2).lower()
        percent = unit in ("p", "%")
        value = round(number * (1 if percent else _RATE_UNITS[unit]))
        if value < lo:
            raise ValueError(f"{raw!r} is below {lo}")
        return value, percent

    return parse


def mtime_bound(raw: str) -> int:
    """ascp's MTIME: seconds since the epoch, or (negative) seconds before now, fixed when the session starts."""
    value = integer()(raw.removeprefix("-"))
    return int(time.time()) - value if raw.startswith("-") else value


def node_of_nodes(raw: str) -> tuple[int, int]:
    """-C's ``N:M``: this is session N of M."""
    node_text, _, nodes_text = raw.partition(":")
    node, nodes = integer(1)(node_text), integer(1)(nodes_text or "0")
    if node > nodes:
        raise ValueError(f"node {node} of only {nodes}")
    return node, nodes


_SIZE = re.compile(r"^(\d+)([km]?)$", re.IGNORECASE)


def size(lo: int, hi: int) -> Callable[[str], int]:
    """ascp's SIZE (-g, -G): bytes, or with a K or M suffix ("K (kilo), M (meg)"): x1024, x1024*1024, as a
    block size is counted; within [lo, hi]."""

    def parse(raw: str) -> int:
        match = _SIZE.match(raw.strip())
        if not match:
            raise ValueError(f"{raw!r} is not a size (bytes, with an optional K or M suffix)")
        return integer(lo, hi)(str(int(match.group(1)) << {"": 0, "k": 10, "m": 20}[match.group(2).lower()]))

    return parse


PROXY_PORT = 80
"""-x's port when its value names none (ascp --help: "PROXYSERVER-ADDR[:PORT] ... (default 80)")."""


def host_port(raw: str) -> tuple[str, int] | None:
    """``HOST[:PORT]`` (an IPv6 host in brackets when a port follows), port :data:`PROXY_PORT` when absent;
    empty means not given."""
    if not raw:
        return None
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{raw!r}: expected HOST[:PORT]")
        port = rest[1:]
    elif raw.count(":") == 1:
        host, _, port = raw.partition(":")
    else:  # a name, or a bare IPv6 address
        host, port = raw, ""
    if not host:
        raise ValueError(f"{raw!r}: expected HOST[:PORT]")
    return host, integer(1, 65535)(port) if port else PROXY_PORT


def file_suffix(raw: str) -> str:
    """A suffix for a file name: no '/'."""
    if "/" in raw:
        raise ValueError("may not contain '/'")
    return raw


def absolute(raw: str) -> str:
    if not os.path.isabs(raw):
        raise ValueError(f"{raw!r} is not an absolute path")
    return raw


def executable(raw: str) -> str:
    """A program we may run (checked now, so a typo fails before the transfer, not after each file)."""
    if not os.access(raw, os.X_OK) or os.path.isdir(raw):
        raise ValueError(f"{raw!r} is not an executable program")
    return raw


def base64_text(raw: str) -> str:
    """A ``*64`` option's value: standard base64 of UTF-8 text (ascli's strict_encode64)."""
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError(f"{raw!r} is not base64 of UTF-8 text") from None


def json_object(raw: str) -> dict[str, object]:
    """--tags: a JSON object of at most :data:`MAX_TAGS` bytes."""
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_TAGS:
        raise ValueError(f"more than {MAX_TAGS} bytes of JSON")
    try:
        tags = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(tags, dict):
        raise ValueError("the JSON must be an object")
    return tags


def json_object64(raw: str) -> dict[str, object]:
    """--tags64: :func:`json_object`, base64-encoded."""
    return json_object(base64_text(raw))


# aspera.conf's forms: text in, the matching flag's spelling out (None: the element leaves it unset)


def as_text(parse: Callable[[str], object], unset: str | None = None) -> Callable[[str], str | None]:
    """Checked by ``parse``, kept as the normalised text; the value ``unset`` means not set."""

    def convert(raw: str) -> str | None:
        value = parse(raw)
        return None if str(value) == unset else str(value)

    return convert


def resume_policy(raw: str) -> str:
    """aspera.conf's <resume_policy> name, as -k's level."""
    return RESUME_POLICIES[choice(RESUME_POLICIES)(raw)]
