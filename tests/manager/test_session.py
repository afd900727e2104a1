"""Session behaviour against a real child process (every backend: the stand-in, and the real engine)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

import faspmanager as fm
from fasp.files.envelope import SUFFIX, Envelope, SealedSource, open_in_place, sealed_size
from faspmanager.codes import ErrorCode
from tests.manager.spec_table import CLASSES
from tests.support.files import sha256
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(90)


def test_file_upload_delivers_bytes_and_reports_events(backend, sample_files):
    events = []
    order = fm.FileUpload(
        [str(p) for p in sample_files], **backend.up(options=backend.options(destination_root=backend.upload_root()))
    )
    with fm.session(order, ascp_path=backend.ascp_path, listener=events.append) as s:
        assert type(s) is fm.Session and s.state() == fm.SessionState.NOTSTARTED
        s.start()
        result = s.finish()
        assert result.ok() and not result.failed() and result.reason() is None, result.reason()
        assert s.finish() is result
        assert s.state() == fm.SessionState.FINISHED
        for path in sample_files:
            landed = backend.remote_root / path.name
            assert landed.stat().st_size == path.stat().st_size and sha256(landed) == sha256(path)
        stats = s.stats()
        assert stats["state"] == fm.SessionState.FINISHED
        assert isinstance(stats["transfer_bytes"], int) and stats["transfer_bytes"] >= sum(
            p.stat().st_size for p in sample_files
        )
        assert isinstance(stats["encryption"], bool)
        files = s.file_stats()
        assert len(files) == len(sample_files) and s.failed_files() == []
        for name, file_stats in files.items():
            assert file_stats["state"] == fm.FileState.FINISHED
            source = next(p for p in sample_files if name.endswith(p.name))
            assert file_stats["bytes_written"] == source.stat().st_size
            assert s.file_stats(name) == file_stats
        assert s.file_stats("no-such-file") is None
    types = [e.event_type for e in events]
    assert types[0] == fm.TransferEventType.INIT and types[-1] == fm.TransferEventType.DONE
    for wanted in (fm.TransferEventType.SESSION, fm.TransferEventType.STOP):
        assert wanted in types
    assert all(isinstance(e, fm.TransferEvent) for e in events)
    stop = next(e for e in events if e.event_type == fm.TransferEventType.STOP)
    assert stop.file_stats["state"] == fm.FileState.FINISHED
    assert next(e for e in events if e.event_type == fm.TransferEventType.INIT).file_stats is None
    assert result.stats()["state"] == fm.SessionState.FINISHED


def test_file_checksums_are_reported(backend, sample_files):
    options = backend.options(destination_root=backend.upload_root(), file_checksum=fm.FileChecksumType.SHA_256)
    order = fm.FileUpload([str(p) for p in sample_files], **backend.up(options=options))
    with fm.session(order, ascp_path=backend.ascp_path) as s:
        s.start()
        result = s.finish()
        assert result.ok(), result.reason()
        for name, file_stats in s.file_stats().items():
            source = next(p for p in sample_files if name.endswith(p.name))
            assert sha256(backend.remote_root / source.name) == sha256(source)
            assert file_stats["checksum"] == sha256(source) and file_stats["checksum_type"] == "sha256"


def test_file_download_with_destination_pairs(backend):
    payloads = {"one.bin": os.urandom(100_000), "two.bin": os.urandom(7)}
    for name, data in payloads.items():
        (backend.remote_root / name).write_bytes(data)
    order = fm.FileDownload(
        [backend.remote(n) for n in payloads],
        **backend.down(
            dest_paths=["first.bin", "second.bin"], options=backend.options(destination_root=str(backend.local_root))
        ),
    )
    with fm.session(order, ascp_path=backend.ascp_path) as s:
        s.start()
        result = s.finish()
    assert result.ok(), result.reason()
    for local, data in zip(["first.bin", "second.bin"], payloads.values()):
        landed = backend.local_root / local
        assert landed.read_bytes() == data


def test_persistent_upload_with_offsets(backend, sample_files):
    big = sample_files[0]
    order = fm.PersistentUpload(**backend.up(options=backend.options(destination_root=backend.upload_root())))
    s = fm.session(order, ascp_path=backend.ascp_path)
    with pytest.raises(fm.SessionStateError):
        s.add_source(str(big), "x")
    with s:
        assert type(s) is fm.PersistentSession
        s.start()
        s.add_source(str(big), "whole.bin")
        s.add_source(str(big), "part.bin", start_offset=1000, end_offset=5000)
        result = s.finish()
        assert result.ok(), result.reason()
        with pytest.raises(fm.SessionStateError):
            s.add_source(str(big), "late.bin")
        assert s.finish() is result
    assert sha256(backend.remote_root / "whole.bin") == sha256(big)
    assert (backend.remote_root / "part.bin").read_bytes()[-4000:] == big.read_bytes()[1000:5000]
    assert not (backend.remote_root / "late.bin").exists()


@pytest.mark.parametrize("backend", ["engine"], indirect=True)  # (the fake ascp copies spans without checks)
def test_persistent_upload_of_a_span_past_the_end_fails_that_file(backend, sample_files):
    """A start offset past the end of the file is not a file of zeros: that file fails, saying why; the
    session's other files go on."""
    big = sample_files[0]
    size = big.stat().st_size
    order = fm.PersistentUpload(**backend.up(options=backend.options(destination_root=backend.upload_root())))
    with fm.session(order, ascp_path=backend.ascp_path) as s:
        s.start()
        s.add_source(str(big), "past.bin", start_offset=size + 1_000_000)
        s.add_source(str(big), "whole.bin")
        result = s.finish()
    assert not result.ok()
    assert result.stats()["transfers_failed"] == 1 and result.stats()["transfers_passed"] == 1, result.stats()
    assert f"start offset {size + 1_000_000} is past the end of the file ({size} bytes)" in result.reason()
    assert not (backend.remote_root / "past.bin").exists()
    assert sha256(backend.remote_root / "whole.bin") == sha256(big)


PASS = "correct horse"


def _opened(envelope: Path, tmp_path: Path) -> str:
    """The sha256 of what ``envelope`` decrypts to (opened in a copy: the stored one stays as it came)."""
    copy = tmp_path / "opened" / envelope.name
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(envelope.read_bytes())
    plain = open_in_place(str(copy), PASS)
    assert plain is not None
    return sha256(Path(plain))


def _ranges_fail(s: fm.PersistentSession, source: str, size: int) -> None:
    """Two START ranges of ``source`` to part.bin (together all of its ``size`` bytes), then all of it to
    whole.bin: both ranges fail (USAGE, saying why), the whole file passes."""
    s.start()
    for start, end in ((0, size // 3), (size // 3, size)):
        s.add_source(source, "part.bin", start_offset=start, end_offset=end)
    s.add_source(source, "whole.bin")
    result = s.finish()
    assert result.stats()["transfers_failed"] == 2 and result.stats()["transfers_passed"] == 1, result.stats()
    assert "a byte range of a protected file cannot travel" in (result.reason() or "")
    assert [stats["error"] for stats in s.file_stats().values() if stats["error"]] == [ErrorCode.USAGE]


@pytest.mark.parametrize("backend", ["engine"], indirect=True)
def test_persistent_sealed_upload_of_a_byte_range_fails_that_file(backend, tmp_path):
    """--file-crypt seals a file whole under this session's own key: a START range of it stored part of an
    envelope that never opens, and two ranges that cover the file ended 0 with it. Each range fails (USAGE,
    saying why), nothing of it is stored; the session's whole file arrives sealed and opens to the source."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))
    options = backend.options(destination_root=backend.upload_root(), content_protection_passphrase=PASS)
    with fm.session(fm.PersistentUpload(**backend.up(options=options)), ascp_path=backend.ascp_path) as s:
        _ranges_fail(s, str(big), 300_000)
    assert not list(backend.remote_root.glob("part.bin*"))
    stored = backend.remote_root / f"whole.bin{SUFFIX}"
    assert stored.stat().st_size == sealed_size(300_000) and _opened(stored, tmp_path) == sha256(big)


@pytest.mark.parametrize("backend", ["engine"], indirect=True)
def test_persistent_decrypting_download_of_a_byte_range_fails_that_file(backend, tmp_path):
    """--file-crypt=decrypt opens an envelope only whole: a START range of one landed as bytes that never
    decrypt, reported ok. Each range fails (USAGE, saying why) and lands nothing; the whole one is opened."""
    plain = os.urandom(300_000)
    (tmp_path / "plain.bin").write_bytes(plain)
    fd = os.open(tmp_path / "plain.bin", os.O_RDONLY)
    try:
        sealed = SealedSource(fd, len(plain), Envelope.new(PASS, len(plain)))
        (backend.remote_root / f"big.bin{SUFFIX}").write_bytes(sealed.read(sealed.size, 0))
    finally:
        os.close(fd)
    options = backend.options(destination_root=str(backend.local_root), content_protection_passphrase=PASS)
    with fm.session(fm.PersistentDownload(**backend.down(options=options)), ascp_path=backend.ascp_path) as s:
        _ranges_fail(s, backend.remote(f"big.bin{SUFFIX}"), sealed.size)
    assert sorted(p.name for p in backend.local_root.iterdir()) == ["whole.bin"]  # opened in place, no part.bin
    assert (backend.local_root / "whole.bin").read_bytes() == plain


def test_persistent_download(backend):
    data = os.urandom(250_000)
    (backend.remote_root / "served.bin").write_bytes(data)
    order = fm.PersistentDownload(**backend.down(options=backend.options(destination_root=str(backend.local_root))))
    with fm.session(order, ascp_path=backend.ascp_path) as s:
        s.start()
        s.add_source(backend.remote("served.bin"), "copy1.bin")
        s.add_source(backend.remote("served.bin"), "copy2.bin")
        result = s.finish()
    assert result.ok(), result.reason()
    for name in ("copy1.bin", "copy2.bin"):
        assert sha256(backend.local_root / name) == hashlib.sha256(data).hexdigest()


def test_stream_upload_writes_every_byte_in_order(backend):
    data = os.urandom(1_000_003)
    order = fm.StreamUpload(
        **backend.up(options=backend.options(destination_root=backend.upload_root(), chunk_size=10_000))
    )
    s = fm.session(order, ascp_path=backend.ascp_path)
    assert type(s) is fm.StreamSession and s.chunk_size == 10_000
    with pytest.raises(fm.SessionStateError):
        s.open_stream("early.bin")
    with s:
        s.start()
        stream = s.open_stream("streamed.bin")
        with pytest.raises(fm.StreamStateError):
            s.open_stream("second.bin")
        for offset in range(0, len(data), 77_777):
            stream.send(data[offset : offset + 77_777])
        stream.close()
        stream.close()  # a second close does nothing
        with pytest.raises(fm.StreamStateError):
            stream.send(b"late")
        text = s.open_stream("text.txt")
        text.send("héllo\n")
        text.close()
        result = s.finish()
        assert result.ok(), result.reason()
        with pytest.raises(fm.SessionStateError):
            s.open_stream("after-finish.bin")
    landed = backend.remote_root / "streamed.bin"
    assert landed.stat().st_size == len(data) and landed.read_bytes() == data
    assert (backend.remote_root / "text.txt").read_bytes() == "héllo\n".encode()


@pytest.mark.parametrize("backend", ["engine"], indirect=True)  # (the fake ascp seals nothing)
def test_a_protected_stream_lands_as_an_envelope_that_decrypts(backend):
    """content_protection_passphrase on a stream: the server stores NAME.aspera-env, never the streamed bytes,
    and a decrypting download gives them back exactly: longer than a 1 MiB segment and cut mid-block, a
    whole number of 64 KiB blocks (the last one still flagged last), and an empty stream."""
    streams = {"odd.bin": os.urandom(1_000_003), "blocks.bin": os.urandom(2 * 65536), "empty.bin": b""}
    passphrase = "stream-SECRET-4"
    options = backend.options(
        destination_root=backend.upload_root(), chunk_size=10_000, content_protection_passphrase=passphrase
    )
    with fm.session(fm.StreamUpload(**backend.up(options=options)), ascp_path=backend.ascp_path) as s:
        s.start()
        for name, data in streams.items():
            stream = s.open_stream(name)
            for offset in range(0, len(data), 77_777):
                stream.send(data[offset : offset + 77_777])
            stream.close()
        result = s.finish()
    assert result.ok(), result.reason()
    for name, data in streams.items():
        assert not (backend.remote_root / name).exists()
        stored = (backend.remote_root / (name + ".aspera-env")).read_bytes()
        assert stored.startswith(b"FASPENV") and len(stored) > len(data)
        assert not any(data[i : i + 32] in stored for i in range(0, len(data), 4096))
    options = backend.options(destination_root=str(backend.local_root), content_protection_passphrase=passphrase)
    order = fm.FileDownload([backend.remote(n + ".aspera-env") for n in streams], **backend.down(options=options))
    with fm.session(order, ascp_path=backend.ascp_path) as s:
        s.start()
        result = s.finish()
    assert result.ok(), result.reason()
    for name, data in streams.items():
        assert sha256(backend.local_root / name) == hashlib.sha256(data).hexdigest()
        assert not (backend.local_root / (name + ".aspera-env")).exists()


def test_set_rate_and_cancel_steer_a_running_transfer(backend, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4_000_000))
    options = backend.options(destination_root=backend.upload_root())
    backend.slow(options)
    order = fm.FileUpload(str(big), **backend.up(options=options))
    s = fm.session(order, ascp_path=backend.ascp_path)
    with pytest.raises(fm.SessionStateError):
        s.set_rate(100)
    with pytest.raises(fm.SessionStateError):
        s.cancel()
    with pytest.raises(fm.SessionStateError):
        s.finish()
    with s:
        s.start()
        with pytest.raises(fm.SessionStateError):
            s.start()
        assert wait_until(lambda: s.stats().get("transfer_bytes", 0) > 0, 20)
        assert s.set_rate(1234) is True
        assert wait_until(lambda: s.stats().get("target_rate") == 1234, 20), s.stats()
        assert s.state() == fm.SessionState.RUNNING
        assert s.cancel() is True
        result = s.finish()
        assert result.failed() and not result.ok()
        assert result.stats()["code"] == 28 and result.reason()
        assert s.set_rate(10) is False and s.cancel() is False


def test_close_mid_transfer_ends_the_program(backend, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4_000_000))
    options = backend.options(destination_root=backend.upload_root())
    backend.slow(options)
    s = fm.session(fm.FileUpload(str(big), **backend.up(options=options)), ascp_path=backend.ascp_path)
    s.start()
    pid = s.pid
    assert wait_until(lambda: s.stats().get("transfer_bytes", 0) > 0, 20)
    s.close()
    s.close()
    assert not s._reader.is_alive()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert s.finish().failed()
    assert s.cancel() is False


def test_listener_never_blocks_the_reader(backend, sample_files):
    release = threading.Event()
    seen = []

    def slow_listener(event):
        seen.append(event.event_type)
        release.wait(30)

    order = fm.FileUpload(
        [str(p) for p in sample_files], **backend.up(options=backend.options(destination_root=backend.upload_root()))
    )
    with fm.session(order, ascp_path=backend.ascp_path, listener=slow_listener) as s:
        s.start()
        result = s.finish()  # completes while the listener is still stuck on the first event
        assert result.ok(), result.reason()
        assert wait_until(lambda: seen, 20) and seen == [fm.TransferEventType.INIT]
        release.set()
        assert wait_until(lambda: fm.TransferEventType.DONE in seen, 20)
    assert not s._reader.is_alive() and not s._dispatcher.is_alive()


def test_secrets_travel_in_the_environment_never_argv(backend, sample_files, tmp_path):
    secrets = {
        "ASPERA_SCP_TOKEN": "tok-SECRET-1",
        "ASPERA_SCP_COOKIE": "cookie-SECRET-2",
        "ASPERA_SCP_FILEPASS": "filepass-SECRET-3",
    }
    if backend.password:
        secrets["ASPERA_SCP_PASS"] = backend.password
    options = backend.options(
        destination_root=backend.upload_root(),
        token=secrets["ASPERA_SCP_TOKEN"],
        cookie=secrets["ASPERA_SCP_COOKIE"],
        content_protection_passphrase=secrets["ASPERA_SCP_FILEPASS"],
    )
    backend.slow(options)
    events = []
    order = fm.FileUpload([str(p) for p in sample_files], **backend.up(options=options))
    # the environment as the program got it (the engine blanks its secrets in /proc/PID/environ once read)
    wrapper = tmp_path / "env-dump" / Path(backend.ascp_path).name  # same name: the same management rules
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncat /proc/$$/environ > "{tmp_path}/environ"\nexec "{backend.ascp_path}" "$@"\n')
    wrapper.chmod(0o755)
    with fm.session(order, ascp_path=str(wrapper), listener=events.append) as s:
        s.start()
        cmdline = Path(f"/proc/{s.pid}/cmdline").read_bytes()
        s.finish()
    environ = (tmp_path / "environ").read_bytes().split(b"\0")
    for variable, secret in secrets.items():
        assert secret.encode() not in cmdline
        assert f"{variable}={secret}".encode() in environ
    assert backend.password or not any(item.startswith(b"ASPERA_SCP_PASS=") for item in environ)
    shown = repr([(e.session_stats, e.file_stats) for e in events]) + repr(order) + repr(options)
    for variable in ("ASPERA_SCP_PASS", "ASPERA_SCP_TOKEN", "ASPERA_SCP_FILEPASS"):
        assert variable not in secrets or secrets[variable] not in shown


@pytest.mark.parametrize("backend", ["engine"], indirect=True)
def test_a_rate_under_1_is_refused_and_a_malformed_rate_leaves_the_transfer_running(backend, tmp_path):
    """set_rate(0) is a ValueError in the library; a malformed RATE from any manager is ignored by the engine
    (logged), never the end of the transfer (it was usage error 8)."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2_000_000))
    options = backend.options(destination_root=backend.upload_root())
    backend.slow(options)
    with pytest.raises(ValueError, match="target_rate_kbps"):
        options.target_rate_kbps = 0
    with fm.session(fm.FileUpload(str(big), **backend.up(options=options)), ascp_path=backend.ascp_path) as s:
        s.start()
        for bad in (0, -5):
            with pytest.raises(ValueError, match="at least 1"):
                s.set_rate(bad)
        assert wait_until(lambda: s.stats().get("transfer_bytes", 0) > 0, 20)
        for fields in ({"Rate": 0}, {"Rate": "fast"}, {"MinRate": -1}, {"Policy": "warp"}):
            s._connection().send("RATE", fields)  # what another manager might send: the library refuses these
        assert s.set_rate(8000) is True
        result = s.finish()
        assert result.ok(), result.reason()
    landed = backend.remote_root / big.name
    assert landed.stat().st_size == big.stat().st_size and sha256(landed) == sha256(big)


@pytest.mark.parametrize("backend", ["engine"], indirect=True)
def test_a_bad_option_found_at_start_leaves_the_session_startable(backend, sample_files):
    """The command line is built before the session counts as started: fix the option and start again."""
    options = backend.options(destination_root=backend.upload_root(), target_rate_kbps=50_000, min_rate_kbps=20_000)
    order = fm.FileUpload([str(p) for p in sample_files], **backend.up(options=options))
    with fm.session(order, ascp_path=backend.ascp_path) as s:
        options.target_rate_kbps = 10_000  # below the minimum: ascp would refuse it (usage error 8)
        with pytest.raises(ValueError, match="min_rate_kbps"):
            s.start()
        assert s.state() == fm.SessionState.NOTSTARTED and s.pid is None
        options.min_rate_kbps = 1000
        s.start()
        result = s.finish()
        assert result.ok(), result.reason()
    for path in sample_files:
        landed = backend.remote_root / path.name
        assert landed.stat().st_size == path.stat().st_size and sha256(landed) == sha256(path)


@pytest.mark.parametrize("backend", ["engine"], indirect=True)  # the naming is the engine's
def test_download_names_every_file_by_its_local_destination(backend):
    """A download's per-file events all name a file where it lands locally, whatever its outcome, so
    file_stats() and failed_files() share one key; a failed file's remote source is in ``source``."""
    data = os.urandom(300_000)
    (backend.remote_root / "good.bin").write_bytes(data)
    local = backend.local_root
    order = fm.FileDownload(
        [backend.remote("good.bin"), backend.remote("missing.bin")],
        **backend.down(options=backend.options(destination_root=str(local), file_checksum="sha256")),
    )
    with fm.session(order, ascp_path=backend.ascp_path) as s:
        s.start()
        result = s.finish()
    good, missing = str(local / "good.bin"), str(local / "missing.bin")
    assert result.failed() and result.failed_files() == [missing]
    assert sorted(s.file_stats()) == [good, missing]
    assert s.file_stats(good)["state"] == fm.FileState.FINISHED
    assert s.file_stats(missing)["state"] == fm.FileState.FAILED
    assert s.file_stats(missing)["source"] == backend.remote("missing.bin")
    assert (local / "good.bin").stat().st_size == len(data)
    assert sha256(local / "good.bin") == s.file_stats(good)["checksum"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("backend", ["engine"], indirect=True)  # INIT's Rate is the engine's -l
def test_rate_is_measured_and_the_target_has_its_own_key(backend, sample_files):
    """``rate`` is only ever a measured rate (a STATS frame's, at the end the session's average), never INIT's
    configured -l: that one is ``target_rate`` (and ``min_rate``), from INIT on."""
    big = sample_files[0]
    options = backend.options(destination_root=backend.upload_root(), target_rate_kbps=500_000, min_rate_kbps=1000)
    events, result, _ = _upload_with_events(backend, big, options)
    assert sha256(backend.remote_root / big.name) == sha256(big)
    init = next(e.session_stats for e in events if e.event_type == fm.TransferEventType.INIT)
    assert init["target_rate"] == 500_000 and init["min_rate"] == 1000 and "rate" not in init
    stats = result.stats()
    assert stats["target_rate"] == 500_000
    average = stats["transfer_bytes"] * 8 * 1000 // stats["elapsedusec"]
    assert stats["transfer_bytes"] == big.stat().st_size and stats["rate"] == average


@pytest.mark.parametrize("backend", ["engine"], indirect=True)  # the byte counts are the engine's
def test_upload_progress_moves_as_the_receiver_acknowledges_bytes(backend, tmp_path):
    """An upload's TransferBytes moves as the receiver confirms bytes, not in whole 512 KiB pieces: a
    progress bar moves smoothly and a cancelled upload does not report 0 bytes for what landed."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2_000_000))
    options = backend.options(destination_root=backend.upload_root(), file_checksum="sha256")
    backend.slow(options)  # 4 Mbit/s: about 4 s, a STATS at least once a second
    events, _, s = _upload_with_events(backend, big, options)
    assert (backend.remote_root / "big.bin").stat().st_size == 2_000_000
    assert sha256(backend.remote_root / "big.bin") == sha256(big) == s.file_stats()[str(big)]["checksum"]
    moved = [e.session_stats["transfer_bytes"] for e in events if e.event_type == fm.TransferEventType.STATS]
    assert any(0 < n < 2_000_000 and n % (512 * 1024) for n in moved), moved


@pytest.mark.parametrize("backend", ["fake", "engine"], indirect=True)
def test_retry_timeout_reaches_our_engine_and_what_monitoring_sees(backend, sample_files, tmp_path, monkeypatch):
    """retry_timeout "informs any monitoring applications how long you intend to retry": our engine is handed
    --retry-timeout and reports it in INIT, so the listener's INIT and the result's stats carry it. IBM's ascp
    documents no such flag, so a program that is not ours (the stand-in, as IBM's would be) is never handed it."""
    record = tmp_path / "argv.json"
    monkeypatch.setenv("FAKEASCP_RECORD", str(record))
    src = sample_files[0]
    options = backend.options(destination_root=backend.upload_root(), retry_timeout=120)
    events, result, _ = _upload_with_events(backend, src, options)
    landed = backend.remote_root / src.name
    assert landed.stat().st_size == src.stat().st_size and sha256(landed) == sha256(src)
    init = next(e.session_stats for e in events if e.event_type == fm.TransferEventType.INIT)
    if backend.name == "fake":
        assert not any(a.startswith("--retry-timeout") for a in json.loads(record.read_text())["argv"])
    else:
        assert init["retry_timeout"] == 120 and result.stats()["retry_timeout"] == 120


@pytest.mark.parametrize("backend", ["fake", "engine"], indirect=True)
def test_a_listener_hears_only_the_documented_event_types_unless_the_session_opts_in(backend, sample_files):
    """A listener written from the reference dispatches over its nine TransferEventType members: by default no
    other type reaches it. START (per file) and NOTIFICATION (precalculate_job_size's totals; our engine sends
    it) reach it only from a session with extended_events set, as ExtraEventType members."""
    documented = set(CLASSES["TransferEventType"]["class_vars"])  # the reference's names
    for extended in (False, True):
        options = backend.options(
            destination_root=backend.upload_root(), precalculate_job_size=True, overwrite_policy="always"
        )  # always: the second round transfers (and STARTs) the files again, not skips them
        order = fm.FileUpload([str(p) for p in sample_files], **backend.up(options=options))
        heard: list[fm.TransferEvent] = []
        with fm.session(order, ascp_path=backend.ascp_path, listener=heard.append) as s:
            s.extended_events = extended
            s.start()
            result = s.finish()
        assert result.ok(), result.reason()
        for src in sample_files:
            landed = backend.remote_root / src.name
            assert landed.stat().st_size == src.stat().st_size and sha256(landed) == sha256(src)
        types = {e.event_type for e in heard}
        extra = types - documented
        if not extended:
            assert not extra and {fm.TransferEventType.INIT, fm.TransferEventType.STOP} <= types, types
        else:
            wanted = {"START", "NOTIFICATION"} if backend.name == "engine" else {"START"}
            assert extra == wanted and all(isinstance(t, fm.ExtraEventType) for t in extra), types
        if backend.name == "engine":  # NOTIFICATION's totals are in the stats whether or not it is heard
            assert s.stats()["pre_transfer_bytes"] == sum(p.stat().st_size for p in sample_files)


def _upload_with_events(backend, src, options) -> tuple[list[fm.TransferEvent], fm.SessionResult, fm.Session]:
    """``src`` uploaded with ``options``, every event kept: the events, the (ok) result and the session."""
    events: list[fm.TransferEvent] = []
    order = fm.FileUpload(str(src), **backend.up(options=options))
    with fm.session(order, ascp_path=backend.ascp_path, listener=events.append) as s:
        s.start()
        result = s.finish()
    assert result.ok(), result.reason()
    return events, result, s


def _slow_to_connect(backend, tmp_path) -> str:
    """The engine, starting 1.5 s late: start() is still connecting for a while."""
    program = tmp_path / "late" / "fasp-ascp"
    program.parent.mkdir()
    program.write_text(f'#!/bin/sh\nsleep 1.5\nexec "{backend.ascp_path}" "$@"\n')
    program.chmod(0o755)
    return str(program)


@pytest.mark.parametrize("backend", ["engine"], indirect=True)
def test_set_rate_while_start_connects_is_applied_once_connected(backend, tmp_path):
    """start() on one thread, set_rate on another meanwhile: the session is RUNNING, not NOTSTARTED, and the
    new target reaches the program once it connected."""
    src = tmp_path / "six.bin"
    src.write_bytes(os.urandom(600_000))
    options = backend.options(destination_root=backend.upload_root(), file_checksum="sha256")
    backend.slow(options)  # 4 Mbit/s, fixed: slowed to 2 Mbit/s below, about 2.4 s
    with fm.session(
        fm.FileUpload(str(src), **backend.up(options=options)), ascp_path=_slow_to_connect(backend, tmp_path)
    ) as s:
        starting = threading.Thread(target=s.start)
        starting.start()
        assert wait_until(lambda: s.pid is not None, 10)
        assert s.state() == fm.SessionState.RUNNING
        assert s.set_rate(2000) is True
        starting.join()
        result = s.finish()
    assert result.ok(), result.reason()
    assert result.stats()["target_rate"] == 2000
    assert (backend.remote_root / "six.bin").stat().st_size == 600_000
    assert sha256(backend.remote_root / "six.bin") == sha256(src) == s.file_stats()[str(src)]["checksum"]


@pytest.mark.parametrize("backend", ["engine"], indirect=True)
def test_cancel_while_start_connects_ends_the_session_as_cancelled(backend, tmp_path, sample_files):
    """A session stuck connecting can be cancelled from another thread: start() gives up at once and the
    session fails with 28, as a cancel after connecting does."""
    options = backend.options(destination_root=backend.upload_root())
    order = fm.FileUpload(str(sample_files[0]), **backend.up(options=options))
    with fm.session(order, ascp_path=_slow_to_connect(backend, tmp_path)) as s:
        failure: list[BaseException] = []
        starting = threading.Thread(target=lambda: failure.extend(_raised(s.start)))
        starting.start()
        assert wait_until(lambda: s.pid is not None, 10)
        assert s.cancel() is True
        starting.join(5)
        assert not starting.is_alive() and isinstance(failure[0], fm.SessionStartError)
        result = s.finish()
        assert s._process.poll() is not None
    assert result.failed() and result.stats()["code"] == 28, result.stats()
    assert not (backend.remote_root / sample_files[0].name).exists()


def _raised(call) -> list[BaseException]:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 (the test looks at what it was)
        return [exc]
    return []
