"""``-f FILE``: the subset of IBM's aspera.conf that our engine honours, read as command-line defaults.

The file is XML, ``<CONF version="2">``. Only ``<default>`` is read; other
top-level sections (``<server>``, ``<users>``, ...) are skipped with a warning
on stderr. Inside ``<default>`` every element must be one of these, so a typo
is a usage error (8) naming the element and its line, never a silent no-op::

    <default>
      <file_system>
        <access><paths><path><absolute>DIR</absolute></path></paths></access>
            client: the local docroot for --apply-local-docroot; server mode: the docroot
        <overwrite>allow|deny</overwrite>          deny = --overwrite=never; also any --overwrite value (ours)
        <partial_file_suffix>SUFFIX</partial_file_suffix>          --partial-file-suffix
        <file_checksum>any|none|md5|sha1|sha256|sha384|sha512</file_checksum>   any = none
        <read_block_size>BYTES</read_block_size>   -g (0 = the datapath's choice)
        <write_block_size>BYTES</write_block_size> -G (0 = the datapath's choice)
      </file_system>
      <transfer>
        <in> / <out>   (in: this host receives, a client's download; out: this host sends, an upload)
          <bandwidth><flow>
            <target_rate><default>KBPS</default><cap>KBPS</cap></target_rate>
            <min_rate><default>KBPS</default></min_rate>
            <policy><default>fixed|high|fair|low</default></policy>
          </flow></bandwidth>
        </in>
        <protocol_options><datagram_size>BYTES</datagram_size></protocol_options>   -Z (ours)
        <encryption><cipher>aes128|...|none</cipher></encryption>                 -c (ours)
        <resume_policy>none|attributes|sparse_checksum|full_checksum</resume_policy>   -k 0..3 (ours)
      </transfer>
      <logging><log_dir>DIR</log_dir></logging>                                  -L (ours)
    </default>

An empty element means "not set", as in IBM's own examples (``<cap></cap>``).
A ``<cap>`` is a ceiling, not a default: the client's target rate (from the
file or -l) never exceeds it, and in server mode it is the session's rate cap
(one cap for both directions, so ``<in>`` and ``<out>`` caps must agree there).
In server mode only the docroot and ``<cap>`` apply; the other settings are the client's.
Attributes other than the root's ``version`` are refused (e.g. IBM's
``peer_ip``), as are DTDs and entity declarations; the file may hold at most
:data:`MAX_BYTES`.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.parsers import expat

from faspmanager.codes import EngineError, ErrorCode
from fasp.options.flags import CHECKSUMS, CIPHERS, OVERWRITE, POLICIES, split_remote

MAX_BYTES = 1 << 20
"""Bigger than any real aspera.conf; bounds what a hostile or mistaken -f makes us parse."""

RESUME_POLICIES = {"none": "0", "attributes": "1", "sparse_checksum": "2", "full_checksum": "3"}


def _error(message: str) -> EngineError:
    return EngineError(ErrorCode.USAGE, message)


def _int(lo: int, hi: int | None = None, unset_at: int | None = None) -> Callable[[str], str | None]:
    def convert(text: str) -> str | None:
        try:
            value = int(text, 10)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"{value} is out of range [{lo}, {hi if hi is not None else 'inf'}]")
        return None if value == unset_at else str(value)
    return convert


def _choice(choices, aliases: dict[str, str | None] | None = None) -> Callable[[str], str | None]:
    aliases = aliases or {}

    def convert(text: str) -> str | None:
        value = text.lower()
        if value in aliases:
            return aliases[value]
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join([*aliases, *choices])}")
        return value
    return convert


def _absolute(text: str) -> str:
    if not os.path.isabs(text):
        raise ValueError(f"{text!r} is not an absolute path")
    return text


def _suffix(text: str) -> str:
    if "/" in text:
        raise ValueError("may not contain '/'")
    return text


def _flow(side: str) -> dict:
    return {"bandwidth": {"flow": {
        "target_rate": {"default": f"{side}.target_rate", "cap": f"{side}.target_cap"},
        "min_rate": {"default": f"{side}.min_rate"},
        "policy": {"default": f"{side}.policy"},
    }}}


SCHEMA: dict = {
    "file_system": {
        "access": {"paths": {"path": {"absolute": "docroot"}}},
        "overwrite": "overwrite",
        "partial_file_suffix": "partial_file_suffix",
        "file_checksum": "file_checksum",
        "read_block_size": "read_size",
        "write_block_size": "write_size",
    },
    "transfer": {
        "in": _flow("in"),
        "out": _flow("out"),
        "protocol_options": {"datagram_size": "datagram_size"},
        "encryption": {"cipher": "cipher"},
        "resume_policy": "resume",
    },
    "logging": {"log_dir": "local_log_dir"},
}
"""The elements read under ``<default>``: a dict is a section, a string names the setting it holds."""

CONVERT: dict[str, Callable[[str], str | None]] = {
    "docroot": _absolute,
    "overwrite": _choice(OVERWRITE, {"allow": None, "deny": "never"}),
    "partial_file_suffix": _suffix,
    "file_checksum": _choice(CHECKSUMS, {"any": None}),
    "read_size": _int(0, 1 << 30, unset_at=0),
    "write_size": _int(0, 1 << 30, unset_at=0),
    "datagram_size": _int(296, 65000),
    "cipher": _choice(CIPHERS),
    "resume": _choice((), RESUME_POLICIES),
    "local_log_dir": str,
    **{f"{side}.{what}": convert for side in ("in", "out") for what, convert in (
        ("target_rate", _int(1)), ("target_cap", _int(1)), ("min_rate", _int(0)), ("policy", _choice(POLICIES)))},
}


@dataclass
class _Node:
    name: str
    line: int
    attrs: dict
    text: str = ""
    children: list[_Node] = field(default_factory=list)


@dataclass(frozen=True)
class AsperaConf:
    """The settings one file holds, validated; values are spelled as the matching flag takes them."""

    path: str
    settings: dict[str, str]

    def defaults(self, values: dict, positional: list[str]) -> dict[str, str]:
        """Flag-key defaults for a command line (``values``/``positional`` as tokenize yields them).

        Server mode gets the docroot and the rate cap; a client gets the rest, with ``<in>`` or
        ``<out>`` picked by its direction, its local docroot as ``local_docroot`` and its
        ``<cap>`` as ``target_cap`` (keys no flag has).
        """
        get = self.settings.get
        if values.get("server"):
            caps = {get("in.target_cap"), get("out.target_cap")} - {None}
            if len(caps) > 1:
                raise _error(f"-f {self.path}: <in> and <out> <cap> differ, and server mode has one "
                             "rate cap for both directions")
            return {k: v for k, v in (("docroot", get("docroot")), ("rate_cap", next(iter(caps), None)))
                    if v is not None}
        side = "in" if _receiving(values, positional) else "out"
        out = {key: value for key, value in self.settings.items() if "." not in key and key != "docroot"}
        out.update({key.partition(".")[2]: value for key, value in self.settings.items()
                    if key.startswith(side + ".")})
        if get("docroot") is not None:
            out["local_docroot"] = self.settings["docroot"]
        return out


def _receiving(values: dict, positional: list[str]) -> bool:
    """Whether the client downloads, judged as options._place will: a remote source or --mode=recv."""
    if positional and split_remote(positional[-1])[1] is not None:
        return False
    return any(split_remote(p)[1] is not None for p in positional[:-1]) or \
        str(values.get("mode", "")).lower() == "recv"


def load(path: str) -> AsperaConf:
    """The validated subset of the aspera.conf at ``path``; EngineError 8 (4 if unreadable) otherwise."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise EngineError(ErrorCode.NO_SUCH_FILE, f"-f {path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise _error(f"-f {path}: larger than {MAX_BYTES} bytes, not an aspera.conf")
    root = _parse_xml(path, data)
    if root.name != "CONF" or set(root.attrs) - {"version"} or root.attrs.get("version", "2") != "2":
        raise _error(f"-f {path}:{root.line}: the root element must be <CONF version=\"2\">")
    settings: dict[str, str] = {}
    seen: set[str] = set()
    for child in root.children:
        if child.name == "default":
            if child.attrs or child.text.strip():
                raise _error(f"-f {path}:{child.line}: <default> takes neither attributes nor text")
            _walk(path, child, SCHEMA, settings, seen)
        else:
            print(f"fasp-ascp: -f {path}:{child.line}: <{child.name}> skipped (only <default> is read)",
                  file=sys.stderr)
    return AsperaConf(path, settings)


def _parse_xml(path: str, data: bytes) -> _Node:
    """A tree of _Node with line numbers; no DTD, so no entity can expand or reach outside the file."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = [_Node("", 0, {})]

    def refuse(*_args) -> None:
        raise _error(f"-f {path}:{parser.CurrentLineNumber}: DTDs and entities are not allowed")

    def start(name: str, attrs: dict) -> None:
        node = _Node(name, parser.CurrentLineNumber, attrs)
        stack[-1].children.append(node)
        stack.append(node)

    def text(data: str) -> None:
        stack[-1].text += data

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = lambda _name: stack.pop()
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise _error(f"-f {path}:{exc.lineno}:{exc.offset}: not well-formed XML: "
                     f"{expat.ErrorString(exc.code)}") from None
    except (ValueError, LookupError) as exc:   # e.g. an encoding expat does not know
        raise _error(f"-f {path}: not readable XML: {exc}") from None
    return stack[0].children[0]


def _walk(path: str, node: _Node, schema: dict, settings: dict[str, str], seen: set[str]) -> None:
    """Check ``node``'s children against ``schema`` and store the settings they hold."""
    for child in node.children:
        where = f"-f {path}:{child.line}: <{child.name}>"
        sub = schema.get(child.name)
        if sub is None:
            raise _error(f"{where} is not a setting we read inside <{node.name}> "
                         f"(known: {', '.join(sorted(schema))})")
        if child.attrs:
            raise _error(f"{where}: attributes are not supported ({', '.join(child.attrs)})")
        if isinstance(sub, dict):
            if child.text.strip():
                raise _error(f"{where} is a section and holds elements, not text")
            _walk(path, child, sub, settings, seen)
            continue
        if child.children:
            raise _error(f"{where} holds a value, not elements")
        if sub in seen:
            raise _error(f"{where} is given twice")
        seen.add(sub)
        value = child.text.strip()
        if not value:
            continue
        try:
            converted = CONVERT[sub](value)
        except ValueError as exc:
            raise _error(f"{where}: {exc}") from None
        if converted is not None:
            settings[sub] = converted
