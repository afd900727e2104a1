"""Property tests for the FASPMGR 2 codec (faspmanager.mgmt)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from faspmanager import mgmt
from faspmanager.mgmt import Decoder, Frame, MgmtProtocolError, encode

pytestmark = pytest.mark.timeout(120)  # a decoder that hangs fails instead of stalling the run

_name_chars = st.characters(blacklist_characters=":\r\n\0", blacklist_categories=("Cs",))
names = st.text(_name_chars, min_size=1, max_size=20).filter(lambda s: s == s.strip() and s != "Type")
values = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)), max_size=40)
types = st.sampled_from(["INIT", "SESSION", "STATS", "STOP", "DONE", "ERROR", "RATE", "PUT", "FUTURE_TYPE"])


@st.composite
def frames(draw):
    ftype = draw(st.one_of(types, st.just("WRITE")))
    fields = draw(st.dictionaries(names.filter(lambda n: n != "Size"), values, max_size=6))
    payload = draw(st.binary(max_size=300)) if ftype == "WRITE" else b""
    return Frame(ftype, fields, payload)


def _expected(frame: Frame) -> Frame:
    fields = dict(frame.fields)
    if frame.type == "WRITE":
        fields["Size"] = str(len(frame.payload))
    return Frame(frame.type, fields, frame.payload)


@pytest.mark.slow
@given(st.lists(frames(), max_size=5))
def test_round_trip(batch):
    wire = b"".join(f.encode() for f in batch)
    assert Decoder().feed(wire) == [_expected(f) for f in batch]


@pytest.mark.slow
@settings(max_examples=60)
@given(frames(), frames())
def test_split_at_every_byte_boundary(first, second):
    wire = first.encode() + second.encode()
    for cut in range(len(wire) + 1):
        dec = Decoder()
        got = dec.feed(wire[:cut]) + dec.feed(wire[cut:])
        assert got == [_expected(first), _expected(second)]


@pytest.mark.slow
@given(frames())
def test_byte_at_a_time(frame):
    dec = Decoder()
    got = []
    for i in range(len(frame.encode())):
        got += dec.feed(frame.encode()[i : i + 1])
    assert got == [_expected(frame)]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_arbitrary_bytes_never_crash(chunks):
    dec = Decoder()
    try:
        for chunk in chunks:
            for frame in dec.feed(chunk):
                assert isinstance(frame, Frame)
    except MgmtProtocolError:
        pass


@settings(max_examples=100)
@given(st.binary(max_size=200))
def test_garbage_after_valid_header_never_crashes(tail):
    try:
        Decoder().feed(b"FASPMGR 2\nType: STATS\n" + tail)
    except MgmtProtocolError:
        pass


def test_typed_values_and_accessors():
    wire = encode("STATS", {"Bytes": 12, "On": True, "Off": False, "Loss": 0.5, "Skip": None})
    assert b"Skip" not in wire
    (frame,) = Decoder().feed(wire)
    assert frame.fields == {"Bytes": "12", "On": "Yes", "Off": "No", "Loss": "0.5"}
    assert frame.int("Bytes") == 12 and frame.int("Missing", 7) == 7
    assert frame.bool("On") is True and frame.bool("Off") is False and frame.bool("Missing") is None
    assert frame.float("Loss") == 0.5
    with pytest.raises(MgmtProtocolError, match="not an integer"):
        frame.int("On")
    with pytest.raises(MgmtProtocolError, match="Yes/No"):
        frame.bool("Bytes")


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_refuses_line_breaks_and_nul(bad):
    with pytest.raises(MgmtProtocolError):
        encode("START", {"Source": bad})
    with pytest.raises(MgmtProtocolError):
        encode("START", {bad: "x"})
    with pytest.raises(MgmtProtocolError):
        encode(bad)


def test_payload_only_for_write_and_size_is_computed():
    with pytest.raises(MgmtProtocolError, match="only WRITE"):
        encode("PUT", {}, b"x")
    with pytest.raises(MgmtProtocolError, match="Size"):
        encode("WRITE", {"Size": 3}, b"abc")
    assert encode("WRITE", {}, b"").endswith(b"Size: 0\n\n")


def test_unknown_types_and_fields_are_kept():
    wire = b"FASPMGR 2\nType: NEWTHING\nFutureField: 1\nColon: a:b\n\n"
    (frame,) = Decoder().feed(wire)
    assert frame.type == "NEWTHING" and frame.fields == {"FutureField": "1", "Colon": "a:b"}


@pytest.mark.parametrize(
    "wire, message",
    [
        (b"HELLO\n", "FASPMGR 2"),
        (b"FASPMGR 2\nno colon here\n", "Name: value"),
        (b"FASPMGR 2\nField: 1\n\n", "no Type"),
        (b"FASPMGR 2\nType: WRITE\nSize: -1\n\n", "non-negative"),
        (b"FASPMGR 2\nType: WRITE\n\n", "non-negative"),
        (b"FASPMGR 2\nType: STATS\nX: \xff\n", "UTF-8"),
    ],
)
def test_malformed_input_is_a_clear_error(wire, message):
    dec = Decoder()
    with pytest.raises(MgmtProtocolError, match=message):
        dec.feed(wire)
    with pytest.raises(MgmtProtocolError):  # the stream stays failed
        dec.feed(encode("STATS"))


@pytest.mark.timeout(20)
def test_header_size_is_bounded():
    dec = Decoder()
    with pytest.raises(MgmtProtocolError, match="longer than"):
        for _ in range(mgmt.MAX_HEADER_BYTES // 1000 + 2):
            dec.feed(b"x" * 1000)
    dec = Decoder()
    with pytest.raises(MgmtProtocolError, match="longer than"):
        dec.feed(b"FASPMGR 2\n" + b"A: b\n" * (mgmt.MAX_HEADER_BYTES // 5 + 1))
    with pytest.raises(MgmtProtocolError, match="exceeds"):
        Decoder().feed(b"FASPMGR 2\nType: WRITE\nSize: %d\n\n" % (mgmt.MAX_PAYLOAD_BYTES + 1))


def test_blank_lines_between_frames_and_crlf_tolerated():
    wire = b"\n" + encode("DONE") + b"\n" + b"FASPMGR 2\r\nType: STATS\r\nA: 1\r\n\r\n"
    got = Decoder().feed(wire)
    assert [f.type for f in got] == ["DONE", "STATS"] and got[1].fields == {"A": "1"}


any_text = st.text(
    st.characters().filter(lambda c: not ("\ud800" <= c < "\udc80" or "\udd00" <= c <= "\udfff")), max_size=40
)
"""Controls, line separators, and the surrogates os.fsdecode makes of undecodable bytes."""
plain_names = names.filter(
    lambda n: n not in ("Size", mgmt.ESCAPED_FIELDS) and "," not in n and not mgmt.needs_escape(n)
)


@pytest.mark.slow
@given(st.dictionaries(plain_names, any_text, max_size=6))
def test_escaped_values_round_trip_and_the_wire_stays_one_line_each(fields):
    wire = encode("START", fields, escape=True)
    (frame,) = Decoder().feed(wire)
    assert frame.fields == fields
    for line in wire.decode("utf-8").split("\n"):
        assert not any(mgmt.needs_escape(c) for c in line)


def test_escape_leaves_plain_values_verbatim_and_lists_the_escaped_ones():
    wire = encode("STOP", {"File": "a\nb%c", "Description": "100% done", "Size": 3}, escape=True)
    assert wire == (b"FASPMGR 2\nType: STOP\nFile: a%0Ab%25c\nDescription: 100% done\nSize: 3\nEscapedFields: File\n\n")
    assert encode("STOP", {"File": "plain"}, escape=True) == encode("STOP", {"File": "plain"})
    (frame,) = Decoder().feed(b"FASPMGR 2\nType: STOP\nFile: 100%0A\n\n")  # not listed: never decoded
    assert frame.get("File") == "100%0A"
    with pytest.raises(MgmtProtocolError, match="set by the codec"):
        encode("STOP", {mgmt.ESCAPED_FIELDS: "File"}, escape=True)
    with pytest.raises(MgmtProtocolError, match="UTF-8"):
        encode("STOP", {"File": "bad\udcff"})  # without escape an undecodable name is refused, as a newline is
    assert Decoder().feed(encode("STOP", {"File": "bad\udcff"}, escape=True))[0].get("File") == "bad\udcff"
    with pytest.raises(MgmtProtocolError, match="surrogate"):
        encode("STOP", {"File": "\ud800"}, escape=True)
