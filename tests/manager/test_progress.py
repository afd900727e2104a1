"""The sans-IO statistics fold (faspmanager.progress): frames in, stats, events and results out."""

from __future__ import annotations

from hypothesis import given, strategies as st

import faspmanager as fm
from faspmanager.mgmt import Frame
from faspmanager.progress import Progress, snake_case, typed


def test_snake_case_names():
    assert snake_case("TransferBytes") == "transfer_bytes"
    assert snake_case("PMTU") == "pmtu"
    assert snake_case("FaspFileArgIndex") == "fasp_file_arg_index"
    assert snake_case("Elapsedusec") == "elapsedusec"
    assert snake_case("ArgTransfersPassed") == "arg_transfers_passed"
    assert snake_case("PMTU/DatagramSize") == "pmtu_datagram_size"


def test_typed_values_keep_text_fields_as_text():
    assert typed("TransferBytes", "42") == 42 and typed("Loss", "0.25") == 0.25
    assert typed("Encryption", "Yes") is True and typed("Keepalive", "No") is False
    assert typed("File", "42") == "42" and typed("Description", "Yes") == "Yes"
    assert typed("Policy", "fair") == "fair"


@given(st.text(max_size=30))
def test_typed_never_raises(text):
    typed("Anything", text)


def test_file_lifecycle_and_session_result():
    p = Progress()
    p.started()
    assert p.apply(Frame("INIT", {"SessionId": "s1", "Rate": "100", "Token": "t0p-secret"})).file_stats is None
    assert "token" not in p.session and p.session["target_rate"] == 100 and "rate" not in p.session
    start = p.apply(Frame("START", {"File": "/d/a", "Size": "10", "StartByte": "4"}))
    assert start.event_type == fm.ExtraEventType.START  # folded in; heard only on opting in (Session)
    assert start.file_stats["state"] == fm.FileState.TRANSFERRING and start.file_stats["bytes_written"] == 4
    stats = p.apply(Frame("STATS", {"File": "/d/a", "TransferBytes": "6"}))
    assert stats.file_stats["file"] == "/d/a" and stats.session_stats["transfer_bytes"] == 6
    stop = p.apply(
        Frame(
            "STOP", {"File": "/d/a", "Size": "10", "Written": "6", "FileChecksum": "ab", "FileChecksumType": "sha256"}
        )
    )
    assert stop.file_stats["state"] == fm.FileState.FINISHED and stop.file_stats["bytes_written"] == 6
    assert stop.file_stats["checksum"] == "ab" and stop.file_stats["checksum_type"] == "sha256"
    p.apply(Frame("SKIP", {"File": "/d/b", "Description": "exists"}))
    err = p.apply(Frame("FILEERROR", {"File": "/d/c", "Code": "4", "Description": "gone"}))
    assert err.file_stats["state"] == fm.FileState.FAILED and err.file_stats["error"] == 4
    assert "code" not in p.session  # a file's error is not the session's
    assert p.apply(Frame("FUTURE", {"X": "1"})) is None
    assert p.apply(Frame("STATS", {"Rate": "80"})).session_stats["rate"] == 80  # measured
    done = p.apply(Frame("DONE", {"TransferBytes": "6", "Elapsedusec": "2000"}))
    assert done.session_stats["rate"] == 24  # the average: 48 bits in 2 ms
    assert done.session_stats["state"] == fm.SessionState.FINISHED and p.concluded
    assert p.apply(Frame("ERROR", {"Code": "1"})) is None  # nothing changes a concluded session
    p.fail("too late")
    result = p.result()
    assert result.ok() and result.failed_files() == ["/d/c"] and result.reason() is None
    assert p.files["/d/b"]["state"] == fm.FileState.SKIPPED


def test_error_and_library_verdicts():
    p = Progress()
    p.started()
    p.apply(Frame("ERROR", {"Code": "19", "Description": "auth failed"}))
    assert p.result().failed() and p.result().reason() == "auth failed" and p.result().stats()["code"] == 19
    q = Progress()
    q.started()
    q.fail("program died", exit_status=3)
    assert q.result().reason() == "program died" and q.result().stats()["exit_status"] == 3


def test_snapshots_are_copies():
    p = Progress()
    event = p.apply(Frame("INIT", {"Rate": "1"}))
    event.session_stats["target_rate"] = 999
    assert p.session["target_rate"] == 1


def test_stats_move_the_file_in_flight_by_the_session_bytes_since_its_start():
    p = Progress()
    p.started()
    p.apply(Frame("STATS", {"TransferBytes": "100"}))  # an earlier file's bytes
    p.apply(Frame("START", {"File": "f", "Size": "1000", "StartByte": "50"}))
    assert p.apply(Frame("STATS", {"File": "f", "TransferBytes": "400"})).file_stats["bytes_written"] == 350
    assert p.apply(Frame("STATS", {"File": "f", "TransferBytes": "300"})).file_stats["bytes_written"] == 350
    assert p.apply(Frame("STATS", {"File": "f", "TransferBytes": "5000"})).file_stats["bytes_written"] == 1000
    stop = p.apply(Frame("STOP", {"File": "f", "Size": "1000", "Written": "950"}))
    assert stop.file_stats["bytes_written"] == 950
    assert p.apply(Frame("STATS", {"File": "f", "TransferBytes": "6000"})).file_stats["bytes_written"] == 950
