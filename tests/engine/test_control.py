"""The control-channel codec (sans-IO): round trips, any split, garbage only ever raises ProtocolError."""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings, strategies as st

from fasp.session import control
from fasp.session.control import ProtocolError, Decoder, encode

names = st.text(min_size=0, max_size=40)
ints = st.integers(min_value=0, max_value=2**63)

messages = st.one_of(
    st.builds(lambda fid, arg, rel, size: ("file", dict(fid=fid, arg=arg, rel=rel, lone=False, size=size,
                                                         mtime=1.5, atime=2.0, mode=0o100644)),
              ints, ints, names, st.one_of(st.none(), ints)),
    st.builds(lambda fid, pid, a, b: ("piece", dict(fid=fid, pid=pid, start=a, end=b)), ints, ints, ints, ints),
    st.builds(lambda code, desc: ("error", dict(code=code, desc=desc)), st.integers(0, 99), names),
    st.builds(lambda fid, ok: ("verified", dict(fid=fid, ok=ok)), ints, st.booleans()),
    st.builds(lambda t, m, p: ("rate", dict(target=t, min=m, policy=p)), ints, ints, st.sampled_from(["fair", "low"])),
    st.just(("bye", {})),
    st.just(("cancel", {})),
)


@pytest.mark.slow
@given(st.lists(messages, max_size=8), st.data())
def test_round_trip_at_any_split(msgs, data):
    stream = b"".join(encode(t, **f) for t, f in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = Decoder()
    out = []
    for lo, hi in zip([0, *cuts], [*cuts, len(stream)]):
        out.extend(decoder.feed(stream[lo:hi]))
    assert [(m.pop("t"), m) for m in out] == [(t, f) for t, f in msgs]
    assert decoder.pending == 0


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_raises_control_error_or_waits(blob):
    decoder = Decoder()
    try:
        decoder.feed(blob)
    except ProtocolError as exc:
        assert exc.code == 1
        with pytest.raises(ProtocolError):
            decoder.feed(b"more")  # out of sync for good, never a silent resync


@given(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=5),
       st.sampled_from(sorted(control.SCHEMA)))
def test_wrong_or_missing_fields_are_refused(fields, msg_type):
    body = json.dumps({"t": msg_type, **fields}).encode()
    frame = struct.pack(">I", len(body)) + body
    try:
        [msg] = Decoder().feed(frame)
    except ProtocolError:
        return
    for name, types in control.SCHEMA[msg_type].items():
        assert isinstance(msg[name], types)


def test_limits_and_clear_messages():
    with pytest.raises(ProtocolError, match="exceeds"):
        Decoder().feed(struct.pack(">I", control.MAX_FRAME + 1))
    with pytest.raises(ProtocolError, match="unknown control message type"):
        encode("teleport")
    with pytest.raises(ProtocolError, match="lacks field 'fid'"):
        body = b'{"t":"piece","pid":1,"start":0,"end":1}'
        Decoder().feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        Decoder().feed(struct.pack(">I", 3) + b"\xff\xfe{")
    with pytest.raises(ProtocolError, match="wrong type"):
        body = b'{"t":"verified","fid":1,"ok":1}'
        Decoder().feed(struct.pack(">I", len(body)) + body)
    partial = Decoder()
    assert partial.feed(encode("bye")[:3]) == [] and partial.pending == 3
