"""The control messages between two engines: one frozen dataclass per message type, checked field by field.

A message travels as a JSON object: ``t`` names its type, then exactly the class's fields, each of its
declared type. :func:`decode` refuses anything else with :class:`ProtocolError` (code 11): an unknown
type, a missing, extra or mistyped field, a value out of range. A peer that sends a field we do not know is
not one of ours, so no field ever quietly takes a default (a row of a ``rows`` frame leaves out fields the
row before it, or their declared defaults, give: :data:`BATCHED` says how). Field types and their JSON forms:

- ``int``: an integer in [0, 2**63) (never a boolean); ``float``: a finite number; ``bool``; ``str``: text
- :data:`OsStr`: a name or text from the file system (``os.fsdecode``: bytes that are not UTF-8 are surrogate
  escapes): a JSON string when it is UTF-8, else ``{"b64": <base64 of its bytes>}``, so it lands byte for byte
- ``bytes``: hex; ``X | None``: null or X; ``tuple[X, ...]`` and ``tuple[X, Y]``: arrays
- a nested record (:class:`Rate`, :class:`fasp.options.peer.PeerOptions`): an object, by the same rules
- ``dict[str, object]``: any JSON object, checked by its reader (a file's ``meta``: ``fasp.files.attrs``)

:data:`VERSION` changes whenever the wire does; ``hello``/``welcome`` refuse another. The framing (length
prefix, size limit) is :mod:`fasp.session.control`; the order messages come in is docs/architecture.md.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin, get_type_hints

from fasp.datapath.rate import RateSettings
from fasp.errors import ProtocolError
from fasp.options.peer import JsonObject, PeerOptions

VERSION = 12
"""12: a row of a ``rows`` frame opens with a mask of the fields it holds; one it leaves out is the row before's
(``fid`` the row before's + 1; in a frame's first row its declared default), and an offer's ``mtime`` may travel
as the whole microseconds it moved from the row before's (:data:`BATCHED`): a small file's offer row is 21 bytes,
not 49; and the data channel's DATA datagrams lost their ``ts`` (datagram wire version 3): an engine of 11 would
drop every one of ours, so the hello refuses it instead;
11: ``rel`` in ``ferror`` (a source never offered: where it would have landed, so the client names it as it names
the files that landed);
10: the hello's options carry ``filters`` (-E and -N in order, ``"- PATTERN"``/``"+ PATTERN"``) instead
of ``exclude`` (-E patterns only);
9: ``sealed`` in ``file`` (a prefix an earlier session sealed is under another key: sent again whole);
8: a row leaves out its trailing fields that hold their defaults, an offer's ``lone`` is among them (it moved
after ``mode``), and an offer's ``rel`` may name the part it shares with the row before it (:data:`BATCHED`):
a small file's offer row is 46 bytes, not 89;
7: a run of one per-file type travels as one ``rows`` frame (:data:`BATCHED`): a small file's offer is half
the bytes; 6: ``start_at_target`` in ``rate`` (a target the client set is FAIR's and HIGH's initial rate);
5: no ``atime`` in ``file`` (no receiver read it; ``meta`` carries the times -p keeps), and ``meta`` holds only
what the session's options apply (``null`` when nothing): a small file's offer is 40 % smaller;
4: no ``begin`` for a file landing from 0 whose first piece starts there (its first ``piece`` says so);
3: every field always present and typed, file names as bytes when not UTF-8, rate changes and capacity
reports as their own messages (2: key shares in hello/welcome)."""

OsStr = Annotated[str, "os"]
"""A str from (or for) the OS: may hold ``surrogateescape`` escapes, and travels losslessly."""
MAX_INT = 1 << 63


class Message:
    """A control message; ``TYPE`` is its ``t`` on the wire."""

    __slots__ = ()
    TYPE: ClassVar[str]


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate setting as the peers exchange it (kbit/s; ``percent`` of the measured capacity when not 0)."""

    target: int
    min: int
    policy: str
    percent: int = 0
    start_at_target: bool = False  # the client set its target: FAIR and HIGH start at it (a sending server too)

    def __post_init__(self) -> None:
        self.settings()  # ValueError for what the data path would refuse

    def settings(self) -> RateSettings:
        return RateSettings(self.target, self.min, self.policy, self.percent, self.start_at_target)

    @classmethod
    def of(cls, settings: RateSettings) -> Rate:
        s = settings
        return cls(s.target_kbps, s.min_kbps, s.policy, s.percent, s.start_at_target)


# ---- session setup ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Client -> server, first: who we are, what we do, our key share (SSH encrypts it), our rules."""

    TYPE: ClassVar[str] = "hello"
    v: int
    session: str
    share: bytes = dataclasses.field(repr=False)  # secrets never in a log line, whatever prints a message
    key_bytes: int
    direction: str
    dest: OsStr
    datagram_size: int
    udp_port: int
    rate: Rate
    opts: PeerOptions
    token: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        bytes.fromhex(self.session)  # ValueError unless hex: it becomes the data channel's session id
        if self.direction not in ("send", "recv") or self.key_bytes not in (0, 16, 24, 32) or self.udp_port > 0xFFFF:
            raise ValueError("direction, key size or UDP port out of range")


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """Server -> client: its key share, its UDP port, the rate within the user's caps."""

    TYPE: ClassVar[str] = "welcome"
    v: int
    share: bytes = dataclasses.field(repr=False)
    udp_port: int
    rate: Rate


@dataclass(frozen=True, slots=True)
class Fallback(Message):
    """Client -> server: UDP could not pass (-y 1); expect us on the HTTP fallback port."""

    TYPE: ClassVar[str] = "fallback"
    jpeg: bool


@dataclass(frozen=True, slots=True)
class FallbackReady(Message):
    """Server -> client: the one-time token to present on the fallback port."""

    TYPE: ClassVar[str] = "fallback_ok"
    token: str = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class Get(Message):
    """Client -> server in a download: send source argument ``arg`` (a byte range of it for a START)."""

    TYPE: ClassVar[str] = "get"
    arg: int
    source: OsStr
    start: int | None = None
    end: int | None = None
    rel: OsStr | None = None
    lone: bool = False


@dataclass(frozen=True, slots=True)
class Listed(Message):
    """Server -> client: what a download source holds (--precalculate-job-size)."""

    TYPE: ClassVar[str] = "listed"
    arg: int
    files: int
    dirs: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class ArgDone(Message):
    """Sender -> receiver: every file of source argument ``arg`` was offered and ended."""

    TYPE: ClassVar[str] = "argdone"
    arg: int


@dataclass(frozen=True, slots=True)
class RateChange(Message):
    """Client -> server: a new rate (numbered); the server answers with the same ``seq`` and the rate capped."""

    TYPE: ClassVar[str] = "rate"
    seq: int
    rate: Rate


@dataclass(frozen=True, slots=True)
class Capacity(Message):
    """Server -> client in a download with --auto-detect-capacity: the path capacity its sender measured."""

    TYPE: ClassVar[str] = "capacity"
    kbps: int


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Either way: the session ends now (the manager's CANCEL, a failure)."""

    TYPE: ClassVar[str] = "cancel"


@dataclass(frozen=True, slots=True)
class Bye(Message):
    """Client -> server: the work is done; the server answers bye once its roles are idle."""

    TYPE: ClassVar[str] = "bye"


@dataclass(frozen=True, slots=True)
class SessionFailed(Message):
    """Server -> client: the session ends with this ascp error."""

    TYPE: ClassVar[str] = "error"
    code: int
    desc: OsStr


# ---- per file ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileMessage(Message):
    """About file ``fid`` (numbered by its sender): routed to that file's task."""

    COUNTED: ClassVar[frozenset[str]] = frozenset({"fid"})  # in a rows frame: left out, the row before's + 1
    fid: int


@dataclass(frozen=True, slots=True)
class Offer(FileMessage):
    """Sender -> receiver: a file, directory or link (``mode`` says which); ``size`` None for a stream."""

    TYPE: ClassVar[str] = "file"
    PREFIXED: ClassVar[frozenset[str]] = frozenset({"rel"})  # in a rows frame: shared with the row before (BATCHED)
    STEPPED: ClassVar[frozenset[str]] = frozenset({"mtime"})  # in a rows frame: microseconds from the row before's
    arg: int
    rel: OsStr
    size: int | None
    mtime: float  # the resume rules' (-k, --overwrite=older): seconds
    mode: int
    lone: bool = False  # a single plain file source: DEST may name the file itself (fasp.files.jobs)
    meta: JsonObject | None = dataclasses.field(default=None, hash=False)
    extents: tuple[tuple[int, int], ...] | None = None  # the parts holding data (a sparse file)
    span: tuple[int, int] | None = None  # only [start, end) of the file travels (-C ranges, START ranges)
    link: OsStr | None = None  # a copied link's target text
    sealed: bool = False  # a --file-crypt envelope sealed under this session's own header: never resumed into


@dataclass(frozen=True, slots=True)
class Verify(FileMessage):
    """Receiver -> sender: I hold ``have`` bytes with this digest; do yours match (resume)?"""

    TYPE: ClassVar[str] = "verify"
    have: int
    digest: str


@dataclass(frozen=True, slots=True)
class Verified(FileMessage):
    TYPE: ClassVar[str] = "verified"
    ok: bool


@dataclass(frozen=True, slots=True)
class Begin(FileMessage):
    """Receiver -> sender: the file starts landing at ``start``. Not sent when ``start`` is 0 and the first piece
    starts at 0: that piece says it (one message fewer per small file, a quarter of its control messages)."""

    TYPE: ClassVar[str] = "begin"
    start: int


@dataclass(frozen=True, slots=True)
class Piece(FileMessage):
    """Receiver -> sender: bytes [start, end) are registered as data-channel file ``pid``: send them."""

    TYPE: ClassVar[str] = "piece"
    pid: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError(f"empty piece [{self.start}, {self.end})")


@dataclass(frozen=True, slots=True)
class Chunk(FileMessage):
    """Sender -> receiver in a stream: bytes [start, end) are ready; register them (answered by piece)."""

    TYPE: ClassVar[str] = "chunk"
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError(f"empty chunk [{self.start}, {self.end})")


@dataclass(frozen=True, slots=True)
class Eof(FileMessage):
    """Sender -> receiver: the stream ended at ``size`` bytes."""

    TYPE: ClassVar[str] = "eof"
    size: int


@dataclass(frozen=True, slots=True)
class Abort(FileMessage):
    """Sender -> receiver: the source failed to read (35): this file fails, the session goes on."""

    TYPE: ClassVar[str] = "abort"
    desc: OsStr


@dataclass(frozen=True, slots=True)
class FileDone(FileMessage):
    """Receiver -> sender: the file landed whole."""

    TYPE: ClassVar[str] = "fdone"
    written: int
    checksum: str | None


@dataclass(frozen=True, slots=True)
class Skip(FileMessage):
    """Receiver -> sender: the file is not sent (overwrite rules, a complete copy...)."""

    TYPE: ClassVar[str] = "skip"
    reason: str


@dataclass(frozen=True, slots=True)
class FileError(Message):
    """Either way: a file failed (``fid``), or a source could not even be offered (``fid`` None)."""

    TYPE: ClassVar[str] = "ferror"
    fid: int | None
    arg: int
    path: OsStr
    code: int
    desc: OsStr
    skip: bool = False
    rel: OsStr | None = None  # fid None: the source's name below the destination (its events name it by that)


@dataclass(frozen=True, slots=True)
class Keep(Message):
    """Sender -> receiver (--delete-before-transfer): names below ``top`` to keep, in batches until ``done``."""

    TYPE: ClassVar[str] = "keep"
    arg: int
    top: OsStr
    names: tuple[OsStr, ...]
    done: bool


@dataclass(frozen=True, slots=True)
class Kept(Message):
    """Receiver -> sender: everything else below the top is deleted."""

    TYPE: ClassVar[str] = "kept"
    arg: int
    deleted: int


# ---- the codec ---------------------------------------------------------------------------------------

Decode = Callable[[Any, str], Any]
Encode = Callable[[Any], Any]


def _fail(where: str, what: str) -> ProtocolError:
    return ProtocolError(f"{where} {what}")


def _text(value: Any, where: str) -> str:
    if type(value) is not str:
        raise _fail(where, f"has the wrong type ({type(value).__name__}, not a string)")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(where, "is not UTF-8 text") from None
    return value


def _os_text(value: Any, where: str) -> str:
    if type(value) is dict and value.keys() == {"b64"} and type(value["b64"]) is str:
        try:
            return base64.b64decode(value["b64"], validate=True).decode("utf-8", "surrogateescape")
        except binascii.Error:
            raise _fail(where, "is not base64") from None
    return _text(value, where)


def _encode_os_text(value: str) -> object:
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return {"b64": base64.b64encode(value.encode("utf-8", "surrogateescape")).decode()}


def _integer(value: Any, where: str) -> int:
    if type(value) is not int:
        raise _fail(where, f"has the wrong type ({type(value).__name__}, not an integer)")
    if not 0 <= value < MAX_INT:
        raise _fail(where, f"is out of range ({value})")
    return value


def _number(value: Any, where: str) -> float:
    if type(value) is int and -MAX_INT < value < MAX_INT or type(value) is float and math.isfinite(value):
        return float(value)
    raise _fail(where, f"is not a finite number ({type(value).__name__})")


def _boolean(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise _fail(where, f"has the wrong type ({type(value).__name__}, not a boolean)")
    return value


def _hex(value: Any, where: str) -> bytes:
    try:
        return bytes.fromhex(_text(value, where))
    except ValueError:
        raise _fail(where, "is not hex") from None


def _object(value: Any, where: str) -> dict[str, object]:
    if type(value) is not dict:
        raise _fail(where, f"has the wrong type ({type(value).__name__}, not an object)")
    return value


_SCALARS: dict[object, tuple[Decode, Encode]] = {
    int: (_integer, int),
    float: (_number, float),
    bool: (_boolean, bool),
    str: (_text, str),
    OsStr: (_os_text, _encode_os_text),
    bytes: (_hex, bytes.hex),
    JsonObject: (_object, dict),
}


def _codec(hint: Any) -> tuple[Decode, Encode]:
    """The decoder and encoder of one field type (see the module docstring)."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        dec, enc = _codec(next(a for a in args if a is not type(None)))
        return (lambda v, where: None if v is None else dec(v, where)), (lambda v: None if v is None else enc(v))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        dec, enc = _codec(args[0])

        def items(value: Any, where: str) -> tuple[Any, ...]:
            if type(value) is not list:
                raise _fail(where, f"has the wrong type ({type(value).__name__}, not an array)")
            return tuple(dec(v, f"{where}[{i}]") for i, v in enumerate(value))

        return items, lambda v: [enc(x) for x in v]
    if origin is tuple:
        codecs = [_codec(a) for a in args]

        def fixed(value: Any, where: str) -> tuple[Any, ...]:
            if type(value) is not list or len(value) != len(codecs):
                raise _fail(where, f"is not an array of {len(codecs)}")
            return tuple(dec(v, f"{where}[{i}]") for (dec, _), (i, v) in zip(codecs, enumerate(value)))

        return fixed, lambda v: [enc(x) for (_, enc), x in zip(codecs, v)]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        record = _Record(hint)
        return record.decode, record.encode
    raise TypeError(f"no wire form for {hint!r}")


class _Record:
    """The codec of one dataclass: its fields' codecs, computed once."""

    def __init__(self, cls: type, tag: str | None = None) -> None:
        hints = get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)
        self.cls, self.tag = cls, tag
        self.fields = [(f.name, *_codec(hints[f.name])) for f in fields]
        self.keys = frozenset(f.name for f in fields) | ({"t"} if tag else set())
        self.defaults = [f.default for f in fields]  # a frame's first row leaves out only what has one
        self.prefixed: frozenset[str] = getattr(cls, "PREFIXED", frozenset())
        self.prefixed_at = [i for i, (name, _, _) in enumerate(self.fields) if name in self.prefixed]
        self.counted: frozenset[str] = getattr(cls, "COUNTED", frozenset())
        self.stepped: frozenset[str] = getattr(cls, "STEPPED", frozenset())

    def decode(self, value: Any, where: str) -> Any:
        obj = _object(value, where)
        if obj.keys() != self.keys:
            missing, extra = sorted(self.keys - obj.keys()), sorted(obj.keys() - self.keys)
            raise _fail(where, f"lacks field {missing[0]!r}" if missing else f"has an unknown field {extra[0]!r}")
        return self._built({name: dec(obj[name], f"{where}.{name}") for name, dec, _ in self.fields}, where)

    def _built(self, values: dict[str, Any], where: str) -> Any:
        try:
            return self.cls(**values)
        except ValueError as exc:  # the record's own checks (ranges, choices)
            raise _fail(where, f"is out of range: {exc}") from None

    def encode(self, value: Any) -> dict[str, object]:
        out: dict[str, object] = {"t": self.tag} if self.tag else {}
        for name, _, enc in self.fields:
            out[name] = enc(getattr(value, name))
        return out

    def layout(self, value: Any, where: str) -> dict[int, Any]:
        """A row of a ``rows`` frame (:data:`BATCHED`) by field: its mask's fields, each the item it holds."""
        if (
            type(value) is not list
            or not value
            or type(value[0]) is not int
            or not 0 <= value[0] < 1 << len(self.fields)
        ):
            raise _fail(where, f"opens with no mask of {len(self.fields)} fields")
        held = [i for i in range(len(self.fields)) if value[0] >> i & 1]
        if len(value) != 1 + len(held):
            raise _fail(where, f"holds {len(value) - 1} fields, its mask {len(held)}")
        return dict(zip(held, value[1:]))

    def shared(self, items: dict[int, Any]) -> int:
        """Characters a row's ``[shared, rest]`` fields take from the row before it (what a malformed one claims
        counts for nothing here: :meth:`decode_row` refuses it)."""
        claims = (items[i] for i in self.prefixed_at if i in items)
        return sum(c[0] for c in claims if type(c) is list and c and type(c[0]) is int and c[0] > 0)

    def decode_row(self, items: dict[int, Any], where: str, prev: Any = None) -> Any:
        """A row of a ``rows`` frame from its :meth:`layout`, checked as :meth:`decode` checks a message; ``prev``:
        the message of the row before it in the frame, which gives the fields the row leaves out."""
        values: dict[str, Any] = {}
        for i, (name, dec, _) in enumerate(self.fields):
            at = f"{where}.{name}"
            item = items.get(i, _LEFT_OUT)
            if item is _LEFT_OUT:
                item = self._given(i, prev)
                if item is _LEFT_OUT:
                    raise _fail(at, "is left out of a frame's first row")
                values[name] = _integer(item, at) if name in self.counted else item
            elif name in self.prefixed and type(item) is list:
                shared = getattr(prev, name, None)
                if len(item) != 2 or type(item[0]) is not int or type(shared) is not str:
                    raise _fail(at, "is no [shared, rest] after a row it could share with")
                if not 0 < item[0] <= len(shared):
                    raise _fail(at, f"shares {item[0]} of the {len(shared)} characters before")
                values[name] = _arrives_as(shared[: item[0]] + dec(item[1], at))
            elif name in self.stepped and type(item) is int:
                base = _micros(getattr(prev, name)) if prev is not None else None
                if base is None or not -_MICROS_MAX < base + item < _MICROS_MAX:
                    raise _fail(at, f"steps {item} µs from no whole microseconds before it")
                values[name] = (base + item) / 1e6
            else:
                values[name] = dec(item, at)
        return self._built(values, where)

    def _given(self, i: int, prev: Any) -> Any:
        """What field ``i`` is when a row leaves it out (:data:`BATCHED`), unchecked; :data:`_LEFT_OUT` if nothing."""
        name = self.fields[i][0]
        if prev is None:
            return _LEFT_OUT if self.defaults[i] is dataclasses.MISSING else self.defaults[i]
        return getattr(prev, name) + 1 if name in self.counted else getattr(prev, name)

    def encode_row(self, value: Any, prev: Any = None) -> list[object]:
        row: list[object] = [0]
        mask = 0
        for i, (name, _, enc) in enumerate(self.fields):
            item = getattr(value, name)
            given = self._given(i, prev)
            if given is not _LEFT_OUT and _same(item, given, enc):
                continue
            mask |= 1 << i
            shared = 0
            if name in self.prefixed and prev is not None:
                item = _arrives_as(item)  # shared with the name the receiver holds, not ours
                shared = len(os.path.commonprefix((_arrives_as(getattr(prev, name)), item)))
            if shared >= PREFIX_MIN:
                row.append([shared, enc(item[shared:])])
            elif name in self.stepped and prev is not None:
                row.append(_step(getattr(prev, name), item))
            else:
                row.append(enc(item))
        row[0] = mask
        return row


_LEFT_OUT = object()
_MICROS_MAX = 1 << 53
"""Microseconds an offer's stepped time may count (either sign): each a float exactly, 285 years from 1970."""


def _micros(seconds: float) -> int | None:
    """``seconds`` as whole microseconds, when that is what they are (a file system's times mostly are)."""
    if not abs(seconds) < _MICROS_MAX / 1e6:
        return None
    micros = round(seconds * 1e6)
    exact = micros / 1e6  # as the peer computes it: never -0.0
    return micros if exact == seconds and math.copysign(1.0, exact) == math.copysign(1.0, seconds) else None


def _step(before: float, seconds: float) -> float | int:
    """A ``STEPPED`` time's wire form in a row: the microseconds it moved from the row before's when
    that is shorter than the number, the number itself when not (a float, as the first row's)."""
    base, micros = _micros(before), _micros(seconds)
    if base is None or micros is None or len(str(micros - base)) >= len(repr(seconds)):
        return float(seconds)
    return micros - base


def _same(a: object, b: object, enc: Encode) -> bool:
    """Whether two values of a field travel alike (in Python 1 == True and 0.0 == -0.0; not on the wire)."""
    return type(a) is type(b) and a == b and (type(a) in _PLAIN or _JSON.encode(enc(a)) == _JSON.encode(enc(b)))


_PLAIN = (int, str, bool, type(None))


PREFIX_MIN = 4
"""Characters a :data:`PREFIXED` field must share with the row before it to travel as ``[shared, rest]``."""
SHARED_MAX = 1 << 20
"""Characters the shared prefixes of one ``rows`` frame may add in all, as much as the frame itself may hold
(:data:`fasp.session.control.MAX_FRAME`): a name repeated by reference must not decode into gigabytes (5,000 rows
of ``[60000, "x"]``, a 160 KB frame, were 300 MB of names)."""


def shares_at_most(message: Message) -> int:
    """The most characters a row of ``message`` may take from the row before it (its ``PREFIXED`` fields' lengths):
    what a writer counts against a frame's room so that no frame it writes shares more than :data:`SHARED_MAX`."""
    return sum(len(getattr(message, name)) for name in getattr(message, "PREFIXED", ()))


def _arrives_as(name: str) -> str:
    """An :data:`OsStr` as the peer decodes it: its bytes, decoded again (``"\\udcc3\\udca9"`` arrives as "é")."""
    return name if name.isascii() else name.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")


MESSAGES: tuple[type[Message], ...] = (
    Hello,
    Welcome,
    Fallback,
    FallbackReady,
    Get,
    Listed,
    ArgDone,
    RateChange,
    Capacity,
    Cancel,
    Bye,
    SessionFailed,
    Offer,
    Verify,
    Verified,
    Begin,
    Piece,
    Chunk,
    Eof,
    Abort,
    FileDone,
    Skip,
    FileError,
    Keep,
    Kept,
)
_BY_TYPE = {cls.TYPE: _Record(cls, cls.TYPE) for cls in MESSAGES}
_BY_CLASS = {record.cls: record for record in _BY_TYPE.values()}

BATCHED: frozenset[type[Message]] = frozenset({Offer, Begin, Piece, Verify, Verified, FileDone, Skip, FileError})
"""Per-file messages: many of one type leave together (:mod:`fasp.session.channel`), as one ``rows`` frame:
``{"t": "rows", "of": TYPE, "rows": [[mask, the fields it names, in order], ...]}``. The names of the fields travel
once, not once per file, and a row holds only the fields its mask names (bit ``i``: field ``i``); one it leaves
out is the row before's in the frame (a ``COUNTED`` field's, ``fid``, + 1), in a frame's first row its declared
default (a field with none is never left out of it). A field a class names in ``PREFIXED`` (an offer's ``rel``)
may travel as ``[shared, rest]``: the first ``shared`` characters of the row before's, then ``rest`` (an
:data:`OsStr`'s wire form); one it names in ``STEPPED`` (an offer's ``mtime``) as an integer: the microseconds it
moved from the row before's, both whole microseconds (the float ``(before + step) / 1e6``, exact both ways).
Files of one directory share its path, its arguments, sizes and modes, and were written microseconds apart: a
small file's offer row is 21 bytes, not 49 (version 11) or 186 (6), and the engine's control bytes on the link
are its part of a small file's cost (8 KiB files: 0.5 % of the link at 49 bytes, rsync's whole overhead 4.5)."""
ROWS = "rows"
_ROWS_KEYS = frozenset({"t", "of", "rows"})
_ROWED = {cls.TYPE: _BY_CLASS[cls] for cls in BATCHED}


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""One encoder for every message: json.dumps with options builds a new one per call, half of its time."""


def decode(body: bytes) -> Message:
    """The message a frame's body holds, or ProtocolError naming the first fault."""
    return _decode(_object_of(body))


def decode_frame(body: bytes) -> list[Message]:
    """The messages a frame's body holds: one, or a ``rows`` frame's, in order (ProtocolError as :func:`decode`)."""
    obj = _object_of(body)
    if obj["t"] != ROWS:
        return [_decode(obj)]
    if obj.keys() != _ROWS_KEYS:
        raise ProtocolError("rows frame lacks a field or has an unknown one")
    record = _ROWED.get(obj["of"]) if type(obj["of"]) is str else None
    if record is None:
        raise ProtocolError(f"rows frame of {obj['of']!r}, not a per-file message type")
    rows = obj["rows"]
    if type(rows) is not list or not rows:
        raise ProtocolError("rows frame holds no array of rows")
    layouts = [record.layout(row, f"{record.tag}[{i}]") for i, row in enumerate(rows)]
    shared = sum(record.shared(items) for items in layouts)
    if shared > SHARED_MAX:  # before a name is built
        raise ProtocolError(f"rows frame shares {shared} characters of names, more than {SHARED_MAX}")
    out: list[Message] = []
    for i, items in enumerate(layouts):
        out.append(record.decode_row(items, f"{record.tag}[{i}]", out[-1] if out else None))
    return out


def _object_of(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: also a 5,000-digit number
        raise ProtocolError(f"control frame is not UTF-8 JSON: {exc}") from None
    if type(obj) is not dict or type(obj.get("t")) is not str:
        raise ProtocolError("control message is not an object with a type")
    return obj


def _decode(obj: dict[str, Any]) -> Message:
    record = _BY_TYPE.get(obj["t"])
    if record is None:
        raise ProtocolError(f"unknown control message type {obj['t']!r}")
    if record.cls in (Hello, Welcome) and obj.get("v") != VERSION:  # before its fields: another version's differ
        raise ProtocolError(f"the peer speaks control version {obj.get('v')!r}, this engine {VERSION}")
    message: Message = record.decode(obj, obj["t"])
    return message


def encode(message: Message) -> bytes:
    """A message's body (JSON, UTF-8); ProtocolError for a value that has no wire form."""
    return _encoded(message, lambda: _BY_CLASS[type(message)].encode(message))


def encode_row(message: Message, prev: Message | None = None) -> bytes:
    """A :data:`BATCHED` message as a row of a ``rows`` frame (JSON array, UTF-8; ProtocolError as :func:`encode`);
    ``prev``: the message of the row before it in the same frame (None for a frame's first row)."""
    return _encoded(message, lambda: _ROWED[message.TYPE].encode_row(message, prev))


def _encoded(message: Message, wire_form: Callable[[], object]) -> bytes:
    try:
        return _JSON.encode(wire_form()).encode()
    except (KeyError, ValueError, TypeError) as exc:
        raise ProtocolError(f"cannot encode {message!r}: {exc}") from None


def rows_body(type_: str, rows: list[bytes]) -> bytes:
    """The body of a ``rows`` frame of ``type_`` from rows :func:`encode_row` made."""
    return b'{"t":"%s","of":"%s","rows":[%s]}' % (ROWS.encode(), type_.encode(), b",".join(rows))
