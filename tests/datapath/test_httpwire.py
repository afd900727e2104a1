"""HTTP fallback codec (heads and frames round trip, split anywhere, garbage raises a typed error, JPEG frames
are images) and its driver over a socket pair (bytes intact, pacing, set_rate, forged frames refused)."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import tempfile
import time

import pytest
from hypothesis import given, settings, strategies as st

from fasp.datapath import httpframes
from fasp.datapath.httpchannel import FallbackTransport
from fasp.datapath.httpframes import FrameDecoder, HttpWireError, encode_frame
from fasp.datapath.rate import RateSettings
from fasp.datapath.seal import Seal, SessionKey
from faspmanager.codes import EngineError, ErrorCode

from .conftest import CLEAR, DEFAULT_KEY, session_key

payloads = st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=6)
big = st.binary(min_size=1, max_size=200_000)


def _feed_in_pieces(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list[bytes]:
    out, last = [], 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        out += decoder.feed(stream[last:cut])
        last = max(last, cut)
    return out


@given(frames=payloads, jpeg=st.booleans(), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_frames_round_trip_split_anywhere(frames, jpeg, cuts):
    stream = b"".join(encode_frame(f, jpeg) for f in frames)
    decoder = FrameDecoder(jpeg)
    assert _feed_in_pieces(decoder, stream, cuts) == frames
    assert decoder.pending == 0


@settings(max_examples=20)
@given(payload=big)
def test_large_jpeg_frame_spans_several_segments(payload):
    frame = encode_frame(payload, True)
    assert frame.startswith(b"\xff\xd8") and frame.endswith(b"\xff\xd9")
    assert FrameDecoder(True).feed(frame) == [payload]


def test_jpeg_frame_is_an_image_decoders_accept():
    pil = pytest.importorskip("PIL.Image")
    image = pil.open(io.BytesIO(encode_frame(b"x" * 100_000, True)))
    image.load()
    assert (image.format, image.size) == ("JPEG", (1, 1))


@given(garbage=st.binary(min_size=1, max_size=400), jpeg=st.booleans())
def test_garbage_raises_typed_error_or_waits(garbage, jpeg):
    decoder = FrameDecoder(jpeg)
    try:
        frames = decoder.feed(garbage)
    except HttpWireError as exc:
        assert exc.code == ErrorCode.CONNECTION_ERROR_HTTP
        with pytest.raises(HttpWireError):  # out of sync for good
            decoder.feed(b"")
    else:  # an honest prefix of a frame, or frames with bounded sizes
        assert all(0 < len(f) <= httpframes.MAX_FRAME for f in frames)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x00",  # empty plain frame
        (httpframes.MAX_FRAME + 1).to_bytes(4, "big"),  # oversized plain frame
    ],
)
def test_plain_length_bounds(data):
    with pytest.raises(HttpWireError):
        FrameDecoder(False).feed(data)


def test_jpeg_decoder_refuses_a_plain_frame_and_a_foreign_jpeg():
    with pytest.raises(HttpWireError):
        FrameDecoder(True).feed(encode_frame(b"abc", False))
    with pytest.raises(HttpWireError):  # a JPEG without our COM segments
        FrameDecoder(True).feed(httpframes.JPEG_HEAD + httpframes.JPEG_TAIL)


def test_encode_bounds():
    with pytest.raises(HttpWireError):
        encode_frame(b"", False)
    with pytest.raises(HttpWireError):
        encode_frame(bytes(httpframes.MAX_FRAME + 1), True)


@given(
    token=st.text("0123456789abcdef", min_size=32, max_size=32),
    jpeg=st.booleans(),
    port=st.integers(1, 65535),
    rest=st.binary(max_size=50),
)
def test_request_round_trip(token, jpeg, port, rest):
    sid = "ab" * 16
    head, after = httpframes.split_head(httpframes.request(sid, token, "169.254.7.2", port, jpeg) + rest)
    assert after == rest
    assert httpframes.check_request(httpframes.parse_head(head)) == (sid, token, jpeg)


def test_response_and_connect_heads():
    head, _ = httpframes.split_head(httpframes.response(101, "Switching Protocols", httpframes.JPEG_TYPE))
    parsed = httpframes.parse_head(head)
    assert httpframes.status_of(parsed) == 101 and parsed.headers["content-type"] == httpframes.JPEG_TYPE
    head, body = httpframes.split_head(httpframes.response(404, "unknown session"))
    assert httpframes.status_of(httpframes.parse_head(head)) == 404 and body == b"unknown session\n"
    assert httpframes.connect_request("fd00::2", 8080).startswith(b"CONNECT [fd00::2]:8080 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /fasp/v1/session/" + b"a" * 32 + b" HTTP/1.1\r\nUpgrade: fasp-stream/1\r\nX-Fasp-Token: t\r\n\r\n",
        b"POST /fasp/v1/session/../../etc HTTP/1.1\r\nUpgrade: fasp-stream/1\r\nX-Fasp-Token: t\r\n\r\n",
        b"POST /fasp/v1/session/" + b"a" * 32 + b" HTTP/1.1\r\nX-Fasp-Token: t\r\n\r\n",
        b"POST /fasp/v1/session/" + b"a" * 32 + b" HTTP/1.1\r\nUpgrade: fasp-stream/1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nbad header\r\n\r\n",
        b"\xff\xfe\r\n\r\n",
        b"nonsense\r\n\r\n",
    ],
)
def test_bad_requests_are_refused(raw):
    with pytest.raises(HttpWireError):
        head, _ = httpframes.split_head(raw)
        httpframes.check_request(httpframes.parse_head(head))


def test_head_size_is_bounded():
    assert httpframes.split_head(b"x" * httpframes.MAX_HEAD) is None
    with pytest.raises(HttpWireError):
        httpframes.split_head(b"x" * (httpframes.MAX_HEAD + 1))


# ---- the driver over a real stream pair -------------------------------------------------------------


async def _pair(jpeg: bool, rate_kbps: int, key: SessionKey = DEFAULT_KEY):
    a, b = socket.socketpair()
    sid = os.urandom(16)
    ends = []
    for sock, direction in ((a, 0), (b, 1)):
        reader, writer = await asyncio.open_connection(sock=sock)
        ends.append(
            FallbackTransport(
                reader,
                writer,
                session_id=sid,
                key=key,
                direction=direction,
                jpeg=jpeg,
                rate=RateSettings(rate_kbps),
                name="http",
            )
        )
    return ends


@pytest.mark.parametrize(
    "jpeg, key",
    [(False, session_key(16)), (True, session_key(32)), (False, CLEAR)],
    ids=["plain", "jpeg", "no-encryption"],
)
def test_driver_moves_bytes_and_set_rate_takes_effect(jpeg, key):
    async def main():
        client, server = await _pair(jpeg, 800, key)  # 100 kB/s: 3 s for these bytes
        data = os.urandom(300_000)
        with tempfile.TemporaryFile() as out:
            started = time.monotonic()
            send = asyncio.ensure_future(client.send(1, data, 0, len(data)))
            receive = asyncio.ensure_future(server.receive(1, out.fileno(), 0, len(data)))
            await asyncio.sleep(0.1)
            client.set_rate(RateSettings(400_000))  # 50 MB/s: the rest goes at once
            await asyncio.wait_for(asyncio.gather(send, receive), 10)
            elapsed = time.monotonic() - started
            assert os.pread(out.fileno(), len(data) + 1, 0) == data
        assert elapsed < 2.0  # far less than the 3 s the first rate needs (slack for a busy machine)
        assert client.stats()["bytes_sent"] == server.stats()["bytes_received"] == len(data)
        await client.close()
        await server.close()

    asyncio.run(main())


def test_driver_paces_at_the_target_rate():
    async def main():
        client, server = await _pair(False, 4_000)  # 500 kB/s
        data = os.urandom(200_000)
        with tempfile.TemporaryFile() as out:
            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(client.send(1, data, 0, len(data)), server.receive(1, out.fileno(), 0, len(data))), 10
            )
            assert time.monotonic() - started > 0.25  # 0.4 s at 500 kB/s, minus the bucket's burst
        await client.close()
        await server.close()

    asyncio.run(main())


def test_driver_rejects_a_forged_frame_with_47():
    async def main():
        client, server = await _pair(False, 100_000)
        with tempfile.TemporaryFile() as out:
            receive = asyncio.ensure_future(server.receive(1, out.fileno(), 0, 10))
            stranger = Seal(b"x" * 16, session_key(16), 0)  # another session's key material
            client._writer.write(encode_frame(stranger.seal(3, b"forged", 0, 0), False))
            with pytest.raises(EngineError) as failed:
                await asyncio.wait_for(receive, 5)
            assert failed.value.code == ErrorCode.CONNECTION_ERROR_HTTP
        await client.close()
        await server.close()

    asyncio.run(main())


@pytest.mark.slow
def test_driver_gives_up_on_a_silent_peer_with_16():
    async def main():
        client, server = await _pair(False, 100_000)
        client.peer_timeout = 1.5
        server._watch_task.cancel()  # the server end goes silent (a dead path: no FIN, no keepalive)
        server._read_task.cancel()
        with tempfile.TemporaryFile() as out:
            started = time.monotonic()
            with pytest.raises(EngineError) as failed:
                await asyncio.wait_for(client.receive(1, out.fileno(), 0, 10), 10)
            assert failed.value.code == ErrorCode.CONNECTION_LOST and time.monotonic() - started >= 1.4
        await client.close()
        await server.close()

    asyncio.run(main())
