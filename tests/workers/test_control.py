"""The control-message codec: what is accepted, and that everything else is refused with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from tasks.store.control import MAX_KBPS, Control, ControlError, Sender, Sequencer, decode, encode

KEY = b"k" * 44


def _fields(control, key=KEY, sender=None):
    return {k.encode(): v for k, v in encode("t1", control, key, sender or Sender()).items()}


def _roundtrip(control, kind="PersistentUpload", tid="t1", key=KEY):
    return decode("1-0", _fields(control, key), tid, kind, key)


@given(st.integers(1, 10**9))
def test_set_rate_round_trip(kbps):
    assert _roundtrip(Control("set_rate", {"kbps": kbps})).args == {"kbps": kbps}


@pytest.mark.slow
@given(st.binary(max_size=4096))
def test_write_carries_raw_bytes(data):
    got = _roundtrip(Control("write", {}, data), kind="StreamUpload")
    assert (got.op, got.data, got.id) == ("write", data, "1-0")


def test_add_source_offsets():
    got = _roundtrip(Control("add_source", {"source_path": "a", "dest_path": "b", "start_offset": 5}))
    assert got.args == {"source_path": "a", "dest_path": "b", "start_offset": 5}


@pytest.mark.parametrize(
    "control",
    [
        Control("explode"),
        Control("set_rate", {"kbps": -1}),
        Control("set_rate", {"kbps": "9"}),
        Control("set_rate", {"kbps": True}),
        Control("add_source", {"source_path": "a"}),
        Control("add_source", {"source_path": "a", "dest_path": "b", "start_offset": -2}),
        Control("set_rate", {"kbps": 2**63}),  # the engine's control protocol cannot carry it: the session died
        Control("set_rate", {"kbps": MAX_KBPS + 1}),
        Control("add_source", {"source_path": "a", "dest_path": "b", "start_offset": 2**63}),
        Control("add_source", {"source_path": "a", "dest_path": "b", "end_offset": 2**64}),
        Control("add_source", {"source_path": "a", "dest_path": "b", "start_offset": 500, "end_offset": 100}),
        Control("cancel", {"why": 1}),
        Control("cancel", {}, b"data"),
    ],
)
def test_malformed_messages_refused_before_sending(control):
    with pytest.raises(ControlError):
        encode("t1", control, KEY, Sender())


def test_no_key_no_control():
    with pytest.raises(ControlError, match="shared key"):
        encode("t1", Control("cancel"), None, Sender())
    with pytest.raises(ControlError, match="shared key"):
        decode("1-0", _fields(Control("cancel")), "t1", "FileUpload", None)


def test_each_sender_sequence_only_increases():
    sender, other = Sender("a"), Sender("b")
    first, second = _fields(Control("cancel"), sender=sender), _fields(Control("finish"), sender=sender)
    third = _fields(Control("set_rate", {"kbps": 1}), sender=other)
    sequencer = Sequencer()
    for fields in (first, second, third):
        sequencer.take(decode("1-0", fields, "t1", "PersistentUpload", KEY))
    for replayed in (first, second):  # a copy added to the stream again, and an old one
        with pytest.raises(ControlError, match="replayed"):
            sequencer.take(decode("2-0", replayed, "t1", "PersistentUpload", KEY))


def test_forged_misrouted_or_misapplied_messages_rejected():
    fields = _fields(Control("set_rate", {"kbps": 5}))
    with pytest.raises(ControlError, match="MAC"):
        decode("1-0", fields, "t1", "FileUpload", b"other" * 9)
    with pytest.raises(ControlError, match="MAC"):
        decode("1-0", {**fields, b"m": fields[b"m"].replace(b"5", b"6")}, "t1", "FileUpload", KEY)
    with pytest.raises(ControlError, match="sent to"):
        decode("1-0", fields, "t2", "FileUpload", KEY)
    add = _fields(Control("add_source", {"source_path": "a", "dest_path": "b"}))
    with pytest.raises(ControlError, match="does not apply"):
        decode("1-0", add, "t1", "FileUpload", KEY)


@pytest.mark.slow
@given(st.dictionaries(st.sampled_from([b"m", b"d", b"mac", b"x"]), st.binary(max_size=64)))
def test_garbage_never_escapes_as_anything_but_control_error(fields):
    for key in (KEY, None):
        try:
            decode("1-0", fields, "t1", "StreamUpload", key)
        except ControlError:
            pass
