"""The control channel (sans-IO): typed messages round-trip through their JSON frames at any split, and a
hostile frame (unknown type, extra, missing or mistyped field, out-of-range value, huge or deep) only ever
raises ProtocolError, never another exception, a hang or a default."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
from hypothesis import given, settings, strategies as st

from fasp.datapath.rate import CEILING_KBPS, POLICIES, RateSettings
from fasp.errors import ProtocolError
from fasp.options.peer import JsonObject, PeerOptions
from fasp.options.vocabulary import CHECKSUMS, OVERWRITE, PRESERVE_MODES, SYMLINK_POLICIES
from fasp.session import messages
from fasp.session.control import MAX_FRAME, Decoder, frame, frame_runs
from fasp.session.messages import MESSAGES, Message, OsStr, Rate
from fasp.session.sending import PieceFailed

os_names = st.one_of(st.text(max_size=20), st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape")))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
SCALARS: dict[Any, st.SearchStrategy[Any]] = {
    int: st.integers(0, 2**63 - 1),
    float: st.floats(allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
    str: st.text(max_size=20),
    OsStr: os_names,
    bytes: st.binary(max_size=40),
    JsonObject: st.dictionaries(st.text(max_size=5), json_values, max_size=4),
}
FIELDS: dict[tuple[type, str], st.SearchStrategy[Any]] = {  # fields whose record checks their values
    (messages.Hello, "v"): st.just(messages.VERSION),
    (messages.Welcome, "v"): st.just(messages.VERSION),
    (messages.Hello, "session"): st.binary(min_size=16, max_size=16).map(bytes.hex),
    (messages.Hello, "direction"): st.sampled_from(["send", "recv"]),
    (messages.Hello, "key_bytes"): st.sampled_from([0, 16, 24, 32]),
    (messages.Hello, "udp_port"): st.integers(0, 65535),
    (Rate, "target"): st.integers(1, 2**40),
    (Rate, "policy"): st.sampled_from(POLICIES),
    (Rate, "percent"): st.integers(0, 100),
    (PeerOptions, "overwrite"): st.sampled_from(OVERWRITE),
    (PeerOptions, "checksum"): st.sampled_from(CHECKSUMS),
    (PeerOptions, "xattrs_mode"): st.sampled_from(PRESERVE_MODES),
    (PeerOptions, "acls_mode"): st.sampled_from(PRESERVE_MODES),
    (PeerOptions, "symlinks"): st.sampled_from(SYMLINK_POLICIES),
    (PeerOptions, "resume"): st.integers(0, 3),
    (PeerOptions, "node"): st.just(1),
    (PeerOptions, "nodes"): st.integers(1, 64),
    (PeerOptions, "partial_suffix"): st.sampled_from(["", ".partial"]),
    (PeerOptions, "filters"): st.lists(
        st.tuples(
            st.sampled_from(["- ", "+ "]), st.text(st.characters(codec="utf-8", exclude_characters="["), min_size=1)
        ).map("".join),
        max_size=4,
    ).map(tuple),
}


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of a message field's type (as messages.py declares them)."""
    if hint in SCALARS:
        return SCALARS[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return st.none() | strategy(next(a for a in args if a is not type(None)))
    if origin is tuple and args[1:] == (Ellipsis,):
        return st.lists(strategy(args[0]), max_size=4).map(tuple)
    if origin is tuple:
        return st.tuples(*map(strategy, args))
    return record(hint)


def record(cls: type) -> st.SearchStrategy[Any]:
    hints = get_type_hints(cls, include_extras=True)
    fields = {
        f.name: FIELDS[cls, f.name] if (cls, f.name) in FIELDS else strategy(hints[f.name])
        for f in dataclasses.fields(cls)
    }
    if cls in (messages.Piece, messages.Chunk):  # a non-empty range
        fields["end"] = st.integers(1, 2**62)
        return st.builds(
            lambda end, **kw: cls(**{**kw, "start": kw["start"] % end, "end": end}),
            **{k: v for k, v in fields.items() if k != "start"},
            start=st.integers(0, 2**62),
        )
    return st.builds(cls, **fields)


any_message = st.one_of([record(cls) for cls in MESSAGES])
per_file_message = st.one_of([record(cls) for cls in MESSAGES if cls in messages.BATCHED])
WRONG = {bool: "yes", int: True, str: 7, list: {"x": 1}, dict: [1], float: "1.5", type(None): float("nan")}
"""A value of another JSON type than the one a field has."""


def wrong(value: object) -> object:
    return WRONG[type(value)] if not (type(value) is dict and "b64" in value) else 7


def small_offers(count: int) -> list[messages.Offer]:
    return [
        messages.Offer(
            fid=i, arg=0, rel=f"small-10000x8KiB/f{i:05d}.bin", lone=False, size=8192, mtime=1.7e9 + i / 7, mode=0o644
        )
        for i in range(count)
    ]


def raw(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


@settings(max_examples=400)
@given(any_message)
def test_every_message_round_trips(msg: Message) -> None:
    assert messages.decode(messages.encode(msg)) == msg


@pytest.mark.slow
@given(st.lists(any_message, max_size=8), st.data())
def test_round_trip_at_any_split(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(frame(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = Decoder()
    out = []
    for lo, hi in zip([0, *cuts], [*cuts, len(stream)]):
        out.extend(decoder.feed(stream[lo:hi]))
    assert out == msgs and decoder.pending == 0


def test_names_that_are_not_utf8_travel_as_bytes() -> None:
    name = b"caf\xe9/\xff\xfe.bin".decode("utf-8", "surrogateescape")  # as os.fsdecode gives it
    offer = messages.Offer(fid=1, arg=0, rel=name, lone=True, size=3, mtime=0.0, mode=0o100644)
    body = messages.encode(offer)
    assert json.loads(body)["rel"] == {"b64": "Y2Fm6S///i5iaW4="}
    back = messages.decode(body)
    assert isinstance(back, messages.Offer) and back.rel.encode("utf-8", "surrogateescape") == b"caf\xe9/\xff\xfe.bin"
    assert (
        json.loads(messages.encode(messages.Keep(arg=0, top="d\u00e9j\u00e0", names=("x",), done=True)))["top"]
        == "d\u00e9j\u00e0"
    )  # UTF-8 names stay plain strings


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_raises_protocol_error_or_waits(blob: bytes) -> None:
    decoder = Decoder()
    try:
        decoder.feed(blob)
    except ProtocolError as exc:
        assert exc.code == 1
        with pytest.raises(ProtocolError):
            decoder.feed(b"more")  # out of sync for good, never a silent resync


@given(any_message, st.sampled_from(["drop", "add", "retype"]), st.data())
def test_a_changed_field_is_refused(msg: Message, how: str, data: st.DataObject) -> None:
    obj = json.loads(messages.encode(msg))
    names = [k for k in obj if k != "t"]
    if how == "add" or not names:
        obj[data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in obj))] = 0
    elif how == "drop":
        del obj[data.draw(st.sampled_from(names))]
    else:  # a value of another JSON type than the field's
        name = data.draw(st.sampled_from(names))
        obj[name] = wrong(obj[name])
    with pytest.raises(ProtocolError):
        Decoder().feed(raw(obj))


@settings(max_examples=300)
@given(st.lists(st.one_of(per_file_message, any_message), max_size=12), st.data())
def test_runs_of_per_file_messages_round_trip_in_order(msgs: list[Message], data: st.DataObject) -> None:
    """As the channel writes them: each run of one per-file type as one rows frame, any other message as its own
    frame behind the waiting ones; cut anywhere, the same messages come back in the same order."""
    stream, waiting = b"", []
    for i, msg in enumerate(msgs):
        if type(msg) in messages.BATCHED:
            prev = msgs[i - 1] if waiting and waiting[-1][0] == msg.TYPE else None
            waiting.append((msg.TYPE, messages.encode_row(msg, prev)))
        else:
            stream += frame_runs(waiting) + frame(msg)
            waiting = []
    stream += frame_runs(waiting)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    decoder, out = Decoder(), []
    for lo, hi in zip([0, *cuts], [*cuts, len(stream)]):
        out.extend(decoder.feed(stream[lo:hi]))
    assert out == msgs and decoder.pending == 0


def offer_run(offers: list[messages.Offer]) -> bytes:
    """A run of offers framed as the channel frames them: each row after the first may share with the one before."""
    return frame_runs([(o.TYPE, messages.encode_row(o, p)) for o, p in zip(offers, [None, *offers])])


def test_a_run_of_small_file_offers_costs_a_third_of_their_own_frames() -> None:
    """The bottleneck carries every offer beside the file's datagrams: 16 offers of one directory in one rows
    frame take at most 35 % of the bytes of 16 frames (the fields' names cross once, the defaults not at all, the
    directory's path once, and the fields the row before holds not again)."""
    offers = small_offers(16)
    run = offer_run(offers)
    assert len(run) <= 0.35 * sum(len(frame(o)) for o in offers)
    assert Decoder().feed(run) == offers
    rows = json.loads(run[4:])["rows"]
    assert rows[0] == [0b111111, 0, 0, "small-10000x8KiB/f00000.bin", 8192, offers[0].mtime, 0o644]  # no lone, nulls
    assert rows[1] == [0b10100, [22, "1.bin"], 142857]  # its time: the microseconds it moved


def test_a_small_files_offer_row_is_21_bytes() -> None:
    """10,000 files of 8 KiB in one directory, written a few hundred microseconds apart (version 11: 49 bytes a
    row, ``[726,0,[22,"6.bin"],8192,1764997000.124456,33188]``): a row after the first holds only its name's
    tail and the microseconds its time moved, its id, argument, size and mode being the row before's."""
    offers = [
        messages.Offer(
            fid=i,
            arg=0,
            rel=f"small-10000x8KiB/f{i:05d}.bin",
            size=8192,
            mtime=(1764997000_000000 + 137 * i) / 1e6,
            mode=33188,
        )
        for i in range(10_000)
    ]
    rows = [messages.encode_row(o, p) for o, p in zip(offers, [None, *offers])]
    assert rows[726] == b'[20,[22,"6.bin"],137]' and len(rows[726]) == 21
    assert max(map(len, rows[1:])) <= 25
    landed = [m for lo in range(0, 10_000, 500) for m in Decoder().feed(offer_run(offers[lo : lo + 500]))]
    assert [messages.encode(m) for m in landed] == [messages.encode(o) for o in offers]  # each mtime exactly


def offers_alike() -> st.SearchStrategy[list[messages.Offer]]:
    """Runs of offers whose fields often equal the row before's (or its id + 1), times often of whole
    microseconds, next to any other: streams, names that are not UTF-8, meta, extents, spans, links, sealed."""
    whole_micros = st.integers(-(2**53) + 1, 2**53 - 1).map(lambda us: us / 1e6)
    times = st.one_of(whole_micros, st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0]))

    def alike(offer: messages.Offer, before: messages.Offer, take: list[str], step: int) -> messages.Offer:
        taken = {name: getattr(before, name) for name in take} | ({"fid": before.fid + 1} if step else {})
        return dataclasses.replace(offer, **taken) if before.fid < 2**63 - 1 else offer

    @st.composite
    def run(draw: st.DrawFn) -> list[messages.Offer]:
        offers = [dataclasses.replace(draw(record(messages.Offer)), mtime=draw(times))]
        for _ in range(draw(st.integers(0, 7))):
            offer = dataclasses.replace(draw(record(messages.Offer)), mtime=draw(times))
            names = [f.name for f in dataclasses.fields(messages.Offer) if f.name != "fid"]
            offers.append(alike(offer, offers[-1], draw(st.lists(st.sampled_from(names))), draw(st.integers(0, 1))))
        return offers

    return run()


@settings(max_examples=300)
@given(offers_alike())
def test_offers_round_trip_exactly_as_rows(offers: list[messages.Offer]) -> None:
    """Whatever a row leaves out or steps, each offer lands as its own frame would: every field of the same type
    and value (-0.0 stays -0.0, a time to the last bit), its name byte for byte."""
    landed = Decoder().feed(offer_run(offers))
    assert [os.fsencode(o.rel) for o in landed] == [os.fsencode(o.rel) for o in offers]
    exact = [messages.encode(dataclasses.replace(o, rel="")) for o in offers]
    assert [messages.encode(dataclasses.replace(o, rel="")) for o in landed] == exact


@given(os_names, st.lists(os_names, min_size=1, max_size=6))
def test_names_sharing_a_prefix_land_byte_for_byte(base: str, tails: list[str]) -> None:
    """Names that share a directory, or a part of a character's bytes that are not UTF-8, land byte for byte,
    whatever str spells them (two escaped bytes of one UTF-8 character arrive as that character: the prefix is
    counted on what arrives)."""
    offers = [
        messages.Offer(fid=i, arg=0, rel=base + tail, size=1, mtime=0.0, mode=0o644, lone=i % 2 == 0)
        for i, tail in enumerate(tails)
    ]
    landed = Decoder().feed(offer_run(offers))
    assert [dataclasses.replace(o, rel="") for o in landed] == [dataclasses.replace(o, rel="") for o in offers]
    assert [os.fsencode(o.rel) for o in landed] == [os.fsencode(o.rel) for o in offers]


@pytest.mark.parametrize(
    "second, match",
    [
        ([0b100, [3, "x"]], r"file\[1\].rel shares 3 of the 2 characters before"),
        ([0b100, [0, "x"]], r"file\[1\].rel shares 0 of the 2 characters before"),
        ([0b100, [1]], r"file\[1\].rel is no \[shared, rest\]"),
        ([0b100, [1, "x", 2]], r"file\[1\].rel is no \[shared, rest\]"),
        ([0b100, [True, "x"]], r"file\[1\].rel is no \[shared, rest\]"),
        ([0b100, [1, 7]], r"file\[1\].rel has the wrong type"),
        ([0b100, "b", 1], r"file\[1\] holds 2 fields, its mask 1"),
        ([0b110, "b"], r"file\[1\] holds 1 fields, its mask 2"),
        ([1 << 12, 1], r"file\[1\] opens with no mask of 12 fields"),
        ([-1], r"file\[1\] opens with no mask"),
        ([True], r"file\[1\] opens with no mask"),
        ([4.0, "b"], r"file\[1\] opens with no mask"),
        ([], r"file\[1\] opens with no mask"),
        ({"0": 1}, r"file\[1\] opens with no mask"),
        ([0b10000, 2**53], r"file\[1\].mtime steps 9007199254740992 µs from no whole microseconds"),
        ([0b10000, -(2**53)], r"file\[1\].mtime steps -9007199254740992 µs"),
        ([0b10000, True], r"file\[1\].mtime is not a finite number"),
        ([0b10000, "1"], r"file\[1\].mtime is not a finite number"),
        ([0b1000, -1], r"file\[1\].size is out of range"),
        ([0b1000, 1.0], r"file\[1\].size has the wrong type"),
        ([0b1, 2**63], r"file\[1\].fid is out of range"),
        ([0b100000000000, 1], r"file\[1\].sealed has the wrong type"),
    ],
)
def test_a_forged_offer_row_is_refused(second: object, match: str) -> None:
    """A shared prefix longer than the row before, empty or malformed, a mask that is none or does not count the
    fields the row holds, a time stepped out of range, a mistyped field: each is a protocol error naming the row."""
    first = [0b111111, 0, 0, "ab", 1, 0.0, 420]
    with pytest.raises(ProtocolError, match=match):
        Decoder().feed(raw({"t": "rows", "of": "file", "rows": [first, second]}))


@pytest.mark.parametrize(
    "first, match",
    [
        ([0b111110, 0, "ab", 1, 0.0, 420], r"file\[0\].fid is left out of a frame's first row"),  # no id to count
        ([0b111011, 0, 0, 1, 0.0, 420], r"file\[0\].rel is left out of a frame's first row"),
        ([0b011111, 0, 0, "ab", 1, 0.0], r"file\[0\].mode is left out of a frame's first row"),
        ([0b111111, 0, 0, [1, "x"], 1, 0.0, 420], r"file\[0\].rel is no \[shared, rest\] after a row"),
        ([0b111111, 0, 0, "ab", 1, 5, 420], r"file\[0\].mtime steps 5 µs from no whole microseconds"),
    ],
)
def test_a_first_row_has_no_row_before_to_take_from(first: list[object], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        Decoder().feed(raw({"t": "rows", "of": "file", "rows": [first]}))


def test_a_counted_id_past_the_last_is_refused() -> None:
    """The id a row leaves out is the row before's + 1: after the largest id it would be out of range."""
    last = [0b111111, 2**63 - 1, 0, "ab", 1, 0.0, 420]
    with pytest.raises(ProtocolError, match=r"file\[1\].fid is out of range \(9223372036854775808\)"):
        Decoder().feed(raw({"t": "rows", "of": "file", "rows": [last, [0b100, "c"]]}))


def test_a_time_steps_only_from_whole_microseconds() -> None:
    """A step from a time that is no whole microseconds has no exact result: refused, not rounded."""
    first = [0b111111, 0, 0, "ab", 1, 0.1234567, 420]
    with pytest.raises(ProtocolError, match=r"file\[1\].mtime steps 1 µs from no whole microseconds"):
        Decoder().feed(raw({"t": "rows", "of": "file", "rows": [first, [0b10100, "c", 1]]}))
    first[5] = 0.123456
    assert Decoder().feed(raw({"t": "rows", "of": "file", "rows": [first, [0b10100, "c", 1]]}))[1].mtime == 0.123457


def test_a_row_may_spell_out_what_it_could_leave_out() -> None:
    """Leaving fields out is the sender's saving, not a rule a full row breaks."""
    offer = small_offers(1)[0]
    row = [0b11111111111, 0, 0, offer.rel, 8192, offer.mtime, 0o644, False, None, None, None, None]
    assert Decoder().feed(raw({"t": "rows", "of": "file", "rows": [row, [0b1, 0]]})) == [offer, offer]


@given(per_file_message, st.sampled_from(["drop", "add", "retype"]), st.data())
def test_a_changed_row_is_refused(msg: Message, how: str, data: st.DataObject) -> None:
    """A row whose fields do not match its mask, or one of them of another type, is refused, naming the row."""
    row = json.loads(messages.encode_row(msg))
    at = data.draw(st.integers(0, len(row) - 1))
    if how == "drop":
        del row[at]
    elif how == "add":
        row.insert(at + 1, 0)
    else:
        row[at] = wrong(row[at])
    good = json.loads(messages.encode_row(msg))
    with pytest.raises(ProtocolError, match=rf"{msg.TYPE}\[1\]"):  # the first row passes, the second is named
        Decoder().feed(raw({"t": "rows", "of": msg.TYPE, "rows": [good, row]}))


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"t": "teleport"}, "unknown control message type 'teleport'"),
        ({"t": "failed", "error": "x"}, "unknown control message type 'failed'"),  # a local event, never a message
        ({"t": "welcome", "v": 2, "share": "00", "udp_port": 1, "rate": {}}, "the peer speaks control version 2"),
        ({"t": "piece", "pid": 1, "start": 0, "end": 1}, "lacks field 'fid'"),
        ({"t": "piece", "fid": 1, "pid": 1, "start": 0, "end": 1, "x": 0}, "unknown field 'x'"),
        ({"t": "verified", "fid": 1, "ok": 1}, r"verified.ok has the wrong type"),
        ({"t": "eof", "fid": -1, "size": 0}, r"eof.fid is out of range"),
        ({"t": "eof", "fid": 1, "size": 2**63}, r"eof.size is out of range"),
        ({"t": "piece", "fid": 1, "pid": 1, "start": 5, "end": 5}, "empty piece"),
        ({"t": "keep", "arg": 0, "top": "\ud800", "names": [], "done": True}, "keep.top is not UTF-8 text"),
        ({"t": "keep", "arg": 0, "top": {"b64": "!!"}, "names": [], "done": True}, "keep.top is not base64"),
        ({"t": "keep", "arg": 0, "top": {"b64": "", "x": 1}, "names": [], "done": True}, "keep.top has the wrong type"),
        ({"t": "capacity", "kbps": 1.0}, "capacity.kbps has the wrong type"),
        (
            {
                "t": "rate",
                "seq": 1,
                "rate": {"target": 1, "min": 0, "policy": "greedy", "percent": 0, "start_at_target": False},
            },
            "rate.rate is out of range: unknown policy",
        ),
        (
            {
                "t": "file",
                "fid": 1,
                "arg": 0,
                "rel": "a",
                "lone": False,
                "size": 1,
                "mtime": "NaN",
                "mode": 0,
                "meta": None,
                "extents": None,
                "span": None,
                "link": None,
                "sealed": False,
            },
            "file.mtime is not a finite number",
        ),
        (
            {
                "t": "file",
                "fid": 1,
                "arg": 0,
                "rel": "a",
                "lone": False,
                "size": 1,
                "mtime": 0,
                "mode": 0,
                "meta": None,
                "extents": [[0]],
                "span": None,
                "link": None,
                "sealed": False,
            },
            r"file.extents\[0\] is not an array of 2",
        ),
        (  # version 4's offer: its atime no longer travels (meta carries what -p keeps)
            {"t": "file", "fid": 1, "arg": 0, "rel": "a", "lone": False, "size": 1, "mtime": 0, "atime": 0, "mode": 0}
            | {"meta": None, "extents": None, "span": None, "link": None, "sealed": False},
            "file has an unknown field 'atime'",
        ),
        ([1, 2], "not an object with a type"),
        ({"t": "rows", "of": "hello", "rows": [[1]]}, "rows frame of 'hello', not a per-file message type"),
        ({"t": "rows", "of": "rows", "rows": [[1]]}, "rows frame of 'rows', not a per-file message type"),
        ({"t": "rows", "of": 7, "rows": [[1]]}, "rows frame of 7, not a per-file message type"),
        ({"t": "rows", "of": "piece", "rows": []}, "rows frame holds no array of rows"),
        ({"t": "rows", "of": "piece", "rows": {"0": [1, 1, 0, 1]}}, "rows frame holds no array of rows"),
        ({"t": "rows", "of": "piece"}, "rows frame lacks a field or has an unknown one"),
        ({"t": "rows", "of": "piece", "rows": [[1, 1, 0, 1]], "x": 0}, "rows frame lacks a field or has an unknown"),
        ({"t": "rows", "of": "piece", "rows": [[15, 1, 1, 0]]}, r"piece\[0\] holds 3 fields, its mask 4"),
        ({"t": "rows", "of": "piece", "rows": [[15, 1, 1, 0, 1], [12, 5, 5]]}, r"piece\[1\] is out of range: empty"),
        ({"t": "rows", "of": "verified", "rows": [[3, 1, 1]]}, r"verified\[0\].ok has the wrong type"),
    ],
)
def test_hostile_frames_name_their_fault(obj: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        Decoder().feed(raw(obj))


def test_peer_options_are_decoded_strictly() -> None:
    hello = messages.Hello(
        v=messages.VERSION,
        session="ab" * 16,
        share=b"k" * 32,
        key_bytes=16,
        direction="send",
        dest="/d",
        datagram_size=1400,
        udp_port=0,
        rate=Rate(1000, 0, "fair"),
        opts=PeerOptions(resume=2),
    )
    obj = json.loads(messages.encode(hello))
    for change, match in (
        ({"resumee": 2}, "hello.opts has an unknown field 'resumee'"),  # a misspelt key
        ({"resume": "2"}, "hello.opts.resume has the wrong type"),
        ({"resume": 7}, "hello.opts is out of range: resume 7"),
        ({"symlinks": "teleport"}, "hello.opts is out of range: symlinks"),
    ):
        with pytest.raises(ProtocolError, match=match):
            Decoder().feed(raw({**obj, "opts": {**obj["opts"], **change}}))
    missing = dict(obj["opts"])
    del missing["overwrite"]
    with pytest.raises(ProtocolError, match="hello.opts lacks field 'overwrite'"):  # never a default
        Decoder().feed(raw({**obj, "opts": missing}))


def test_limits_and_bad_encodings() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        Decoder().feed(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        frame(messages.Keep(arg=0, top="t", names=("n" * 1000,) * 1100, done=True))
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        Decoder().feed(struct.pack(">I", 3) + b"\xff\xfe{")
    for hostile in (b"[" * 50_000, b'{"t":"eof","fid":1,"size":' + b"9" * 5000 + b"}"):  # too deep, too long
        with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
            Decoder().feed(struct.pack(">I", len(hostile)) + hostile)
    with pytest.raises(ProtocolError, match="cannot encode"):
        messages.encode(messages.Offer(fid=1, arg=0, rel="a", lone=False, size=1, mtime=float("inf"), mode=0))
    with pytest.raises(ProtocolError, match="cannot encode"):
        messages.encode(PieceFailed(OSError(), 0))  # type: ignore[arg-type]  # a local event has no wire form
    partial = Decoder()
    assert partial.feed(frame(messages.Bye())[:3]) == [] and partial.pending == 3


def test_rate_settings_travel_as_one_record() -> None:
    for wanted in (
        RateSettings(5000, 100, "fair"),
        RateSettings(CEILING_KBPS, 0, "fixed", percent=40),
        RateSettings(500_000, 0, "high", start_at_target=True),
    ):
        change = messages.decode(messages.encode(messages.RateChange(seq=1, rate=Rate.of(wanted))))
        assert isinstance(change, messages.RateChange) and change.rate.settings() == wanted
    for bad in (
        {"target": 1},
        {"target": "x", "min": 0, "policy": "fair", "percent": 0, "start_at_target": False},
        None,
        {"target": 1, "min": 0, "policy": "fair", "percent": 101, "start_at_target": False},
        {"target": 0, "min": 0, "policy": "fair", "percent": 0, "start_at_target": False},
        {"target": 1, "min": 0, "policy": "fair", "percent": 0, "start_at_target": 1},  # a bool, not an int
        {"target": 1, "min": 0, "policy": "fair", "percent": 0},  # an older peer's: no field takes a default
    ):
        with pytest.raises(ProtocolError, match=r"^\[1\] rate\.rate"):
            Decoder().feed(raw({"t": "rate", "seq": 1, "rate": bad}))


def test_a_frame_of_shared_prefixes_cannot_expand_past_a_frames_size() -> None:
    """A forger repeats a long name by reference: 5,000 rows of ``[4, [60000, "x"]]`` after one 60,000-character name
    are a 160 KB frame that would decode into 300 MB of names. The prefixes a frame shares may add at most
    ``SHARED_MAX`` characters in all, refused before any name is built."""
    long = "d" * 60_000
    rows = [[0b111111, 0, 0, long, 1, 0.0, 420]] + [[0b100, [60_000, f"{i}"]] for i in range(1, 5001)]
    frame_ = raw({"t": "rows", "of": "file", "rows": rows})
    assert len(frame_) < MAX_FRAME
    with pytest.raises(ProtocolError, match="rows frame shares 300000000 characters"):
        Decoder().feed(frame_)
    fits = rows[: messages.SHARED_MAX // 60_000 + 1]
    assert len(Decoder().feed(raw({"t": "rows", "of": "file", "rows": fits}))) == len(fits)
