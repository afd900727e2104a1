"""``-f FILE``: the subset of IBM's aspera.conf that our engine honours, read as command-line defaults.

The file is XML, ``<CONF version="2">``. Only ``<default>`` is read; other top-level sections (``<server>``,
``<users>``, ...) are skipped with a warning on stderr. Inside ``<default>`` the elements read are those the flag
table's entries name (:class:`fasp.options.table.Conf`; listed in docs/ascp-options.md), so a typo is a usage
error (8) naming the element and its line, never a silent no-op. Each value is checked as its flag's value is,
and kept spelled as the flag takes it; per-direction elements (``<in>``: this host receives, a client's
download; ``<out>``: it sends) are picked by the command line's direction.

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

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn
from xml.parsers import expat

from fasp.options.table import FLAGS, Flag
from fasp.options.vocabulary import split_remote
from faspmanager.codes import EngineError, ErrorCode

MAX_BYTES = 1 << 20
"""Bigger than any real aspera.conf; bounds what a hostile or mistaken -f makes us parse."""

Schema = dict[str, "Schema | str"]
"""Elements under a section: a dict is a section, a string names the setting it holds."""


def _error(message: str) -> EngineError:
    return EngineError(ErrorCode.USAGE, message)


def _converter(flag: Flag) -> Callable[[str], str | None]:
    """The element's text as the flag takes it: the entry's own conversion, else its aliases and then
    the flag's value form as a check (the text itself is kept; the flag's parser reads it again)."""
    assert flag.conf is not None
    if flag.conf.convert is not None:
        return flag.conf.convert
    aliases, parse = flag.conf.aliases, flag.parse

    def convert(text: str) -> str | None:
        if text.lower() in aliases:
            return aliases[text.lower()]
        if parse is not None:
            try:
                parse(text)
            except ValueError as exc:
                raise ValueError(f"{exc}{' (or ' + ', '.join(aliases) + ')' if aliases else ''}") from None
        return text

    return convert


def _schema() -> tuple[Schema, dict[str, Callable[[str], str | None]]]:
    """The elements read under ``<default>`` and each setting's conversion, from the flag table's ``conf``;
    a per-direction element (``{side}``) gives one setting per side, ``in.KEY`` and ``out.KEY``."""
    schema: Schema = {}
    convert: dict[str, Callable[[str], str | None]] = {}
    for flag in FLAGS:
        if flag.conf is None:
            continue
        sides = ("in", "out") if "{side}" in flag.conf.path else ("",)
        for side in sides:
            *sections, leaf = flag.conf.path.format(side=side).split("/")
            setting = f"{side}.{flag.key}" if side else flag.key
            node = schema
            for name in sections:
                sub = node.setdefault(name, {})
                assert isinstance(sub, dict)
                node = sub
            node[leaf] = setting
            convert[setting] = _converter(flag)
    return schema, convert


SCHEMA, CONVERT = _schema()


@dataclass
class _Node:
    name: str
    line: int
    attrs: dict[str, str]
    text: str = ""
    children: list[_Node] = field(default_factory=list)


@dataclass(frozen=True)
class AsperaConf:
    """The settings one file holds, validated; values are spelled as the matching flag takes them."""

    path: str
    settings: dict[str, str]

    def defaults(self, values: Mapping[str, object], positional: list[str]) -> dict[str, str]:
        """Flag-key defaults for a command line (``values``/``positional`` as tokenize yields them).

        Server mode gets the docroot and the rate cap; a client gets the rest, with ``<in>`` or
        ``<out>`` picked by its direction, its local docroot as ``local_docroot`` and its
        ``<cap>`` as ``target_cap`` (keys no client flag has: a ceiling for -l, not a default).
        """
        get = self.settings.get
        if values.get("server"):
            caps = {get("in.rate_cap"), get("out.rate_cap")} - {None}
            if len(caps) > 1:
                raise _error(
                    f"-f {self.path}: <in> and <out> <cap> differ, and server mode has one rate cap for both directions"
                )
            return {
                k: v for k, v in (("docroot", get("docroot")), ("rate_cap", next(iter(caps), None))) if v is not None
            }
        side = "in" if _receiving(values, positional) else "out"
        out = {key: value for key, value in self.settings.items() if "." not in key and key != "docroot"}
        out.update({key.partition(".")[2]: value for key, value in self.settings.items() if key.startswith(side + ".")})
        if "rate_cap" in out:
            out["target_cap"] = out.pop("rate_cap")
        if get("docroot") is not None:
            out["local_docroot"] = self.settings["docroot"]
        return out


def _receiving(values: Mapping[str, object], positional: list[str]) -> bool:
    """Whether the client downloads, judged as flags._place will: a remote source or --mode=recv."""
    if positional and split_remote(positional[-1])[1] is not None:
        return False
    return any(split_remote(p)[1] is not None for p in positional[:-1]) or str(values.get("mode", "")).lower() == "recv"


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
        raise _error(f'-f {path}:{root.line}: the root element must be <CONF version="2">')
    settings: dict[str, str] = {}
    seen: set[str] = set()
    for child in root.children:
        if child.name == "default":
            if child.attrs or child.text.strip():
                raise _error(f"-f {path}:{child.line}: <default> takes neither attributes nor text")
            _walk(path, child, SCHEMA, settings, seen)
        else:
            print(
                f"fasp-ascp: -f {path}:{child.line}: <{child.name}> skipped (only <default> is read)", file=sys.stderr
            )
    return AsperaConf(path, settings)


def _parse_xml(path: str, data: bytes) -> _Node:
    """A tree of _Node with line numbers; no DTD, so no entity can expand or reach outside the file."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = [_Node("", 0, {})]

    def refuse(*_args: object) -> NoReturn:
        raise _error(f"-f {path}:{parser.CurrentLineNumber}: DTDs and entities are not allowed")

    def start(name: str, attrs: dict[str, str]) -> None:
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
        raise _error(
            f"-f {path}:{exc.lineno}:{exc.offset}: not well-formed XML: {expat.ErrorString(exc.code)}"
        ) from None
    except (ValueError, LookupError) as exc:  # e.g. an encoding expat does not know
        raise _error(f"-f {path}: not readable XML: {exc}") from None
    return stack[0].children[0]


def _walk(path: str, node: _Node, schema: Schema, settings: dict[str, str], seen: set[str]) -> None:
    """Check ``node``'s children against ``schema`` and store the settings they hold."""
    for child in node.children:
        where = f"-f {path}:{child.line}: <{child.name}>"
        sub = schema.get(child.name)
        if sub is None:
            raise _error(f"{where} is not a setting we read inside <{node.name}> (known: {', '.join(sorted(schema))})")
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
