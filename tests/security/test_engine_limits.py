"""A peer that offers files without end: the server engine ends the session instead of opening them all.

The review's attack: 5,000 ``file`` messages from a hand-built client were 5,000 open descriptors (and tasks)
in one engine. An engine of ours never has more than FILES_IN_FLIGHT offered and unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fasp.datapath.seal import SessionKey
from fasp.datapath.udpchannel import Transport
from fasp.options.filters import MAX_RULES
from fasp.options.peer import PeerOptions
from fasp.session.channel import Channel
from fasp.session.messages import Get, Keep, Kept, Message, Offer, Piece, SessionFailed
from fasp.session.receiving import MAX_FILES_IN_FLIGHT, MAX_KEEP_CHARS, MAX_KEEP_NAMES, PIECE
from faspmanager.codes import ErrorCode
from tests.support.control_client import ControlClient, hello
from tests.support.files import random_file
from tests.support.procs import children, descendants
from tests.support.servers import start_fasp_server

OFFERS = 5000


def _engine_fds(server_pid: int) -> int:
    """Open descriptors of the server engines under fasp-server (0 once they are gone)."""
    total = 0
    for pid in children(server_pid):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


def test_a_flood_of_file_offers_ends_the_session_with_a_protocol_error(fasp_server):
    async def attack() -> tuple[SessionFailed | None, int]:
        async with ControlClient(fasp_server, "/", PeerOptions()) as client:
            baseline = _engine_fds(fasp_server.process.pid)
            peak = 0
            for fid in range(1, OFFERS + 1):
                try:
                    await client.channel.send(
                        Offer(
                            fid=fid,
                            arg=0,
                            rel=f"flood/{fid}.bin",
                            lone=False,
                            size=1 << 20,
                            mtime=time.time(),
                            mode=0o100644,
                        )
                    )
                except BrokenPipeError:  # the engine hung up: read why
                    break
                if fid % 250 == 0:
                    peak = max(peak, _engine_fds(fasp_server.process.pid) - baseline)
                    await asyncio.sleep(0)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                peak = max(peak, _engine_fds(fasp_server.process.pid) - baseline)
                msg = await asyncio.wait_for(client.channel.recv(), 20)
                if msg is None or isinstance(msg, SessionFailed):
                    return msg, peak
            raise AssertionError("the server engine kept taking offers")

    error, peak = asyncio.run(attack())
    assert error is not None, "the engine closed without saying why"
    assert error.code == ErrorCode.FASP_PROTO and "files in flight" in error.desc, error
    assert peak <= MAX_FILES_IN_FLIGHT + 16, f"{peak} descriptors opened by the flood"
    made = [p for p in Path(fasp_server.docroot).rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(made) <= MAX_FILES_IN_FLIGHT, f"{len(made)} files created for the flood"


@pytest.mark.parametrize(
    "rules",
    [("- *a*a*a*a*a*a*b",), tuple(f"- x{i}" for i in range(MAX_RULES + 1))],
    ids=["backtracking", "too-many"],
)
def test_filter_rules_that_would_cost_the_server_minutes_are_refused_at_hello(fasp_server, rules):
    """A hand-built client's hello asks the server engine to match every entry it walks against ``*a*a*a*a*a*a*b``
    (a backtracking regex: over a minute on one 255-byte name of a's) or against thousands of rules: the engine
    refuses the hello, as a command line is refused (usage 8), instead of matching them."""
    opts = PeerOptions()
    object.__setattr__(opts, "filters", rules)  # (what a command line cannot give: PeerOptions checks its own)

    async def attack() -> object:
        async with fasp_server.ssh() as conn:
            proc = await conn.create_process("fasp-ascp --server", encoding=None)
            channel = Channel(proc.stdout, proc.stdin)
            await channel.send(hello(opts, direction="recv"))
            answer = await asyncio.wait_for(channel.recv(), 10)
            channel.close()
            return answer

    answer = asyncio.run(attack())
    assert isinstance(answer, SessionFailed) and answer.code == ErrorCode.FASP_PROTO, answer


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.mark.timeout(60)
def test_a_file_offered_as_exabytes_costs_the_server_no_memory(tmp_path):
    """An authenticated user offers a file of 2**62 bytes: the server engine asks for its first piece, as for any
    file, and holds no plan of all its pieces (2**43 of them were a list that took every byte of memory there was:
    the fixture's address-space limit turns that into a MemoryError instead of the machine's OOM killer)."""
    limit = ["prlimit", f"--as={3 << 30}", "--"]
    with start_fasp_server(tmp_path / "server", wrapper=limit) as server:

        async def attack() -> tuple[Message, int]:
            async with ControlClient(server, "/", PeerOptions()) as client:
                answer = await client.offer("huge.bin", 1 << 62, time.time())
                await asyncio.sleep(1)
                return answer, max(_rss_bytes(pid) for pid in children(server.process.pid))

        answer, rss = asyncio.run(attack())
    assert isinstance(answer, Piece) and (answer.start, answer.end) == (0, PIECE), answer
    assert rss < 300 << 20, f"the server engine holds {rss >> 20} MiB for one offer"


@pytest.mark.timeout(120)
def test_a_flood_of_piece_requests_ends_the_session_with_a_protocol_error(tmp_path):
    """An authenticated user downloads a 1 MiB file and asks for it 50,000 times over: each request was a task and
    data-channel state in the server engine (200,000 of them, a few MB of control messages, were 500 MB there).
    An engine of ours never has more than MAX_PIECES asked for at once; the server ends the session."""
    with start_fasp_server(tmp_path / "server", wrapper=["prlimit", f"--as={3 << 30}", "--"]) as server:
        random_file(server.docroot / "f.bin", 1 << 20)

        async def attack() -> tuple[Message | None, int]:
            async with server.ssh() as conn:
                proc = await conn.create_process("fasp-ascp --server", encoding=None)
                channel = Channel(proc.stdout, proc.stdin)
                first = hello(PeerOptions(), direction="recv")
                await channel.send(first)
                welcome = await asyncio.wait_for(channel.recv(), 30)
                udp = await Transport.dial(
                    server.host,
                    welcome.udp_port,
                    session_id=bytes.fromhex(first.session),
                    key=SessionKey.derive(first.share, welcome.share, bytes.fromhex(first.session), 16),
                    datagram_size=1400,
                )
                try:
                    await channel.send(Get(arg=0, source="f.bin"))
                    while not isinstance(offer := await asyncio.wait_for(channel.recv(), 30), Offer):
                        pass
                    for pid in range(1, 50_001):
                        with contextlib.suppress(BrokenPipeError, ConnectionError):
                            await channel.send(Piece(fid=offer.fid, pid=pid, start=0, end=1 << 20))
                    rss = max(_rss_bytes(pid) for pid in descendants(server.process.pid))
                    while not isinstance(msg := await asyncio.wait_for(channel.recv(), 30), SessionFailed | None):
                        pass
                    return msg, rss
                finally:
                    await udp.close()

        error, rss = asyncio.run(attack())
    # (the file whose pieces overflowed ends first: the next request for it may be what the session names)
    assert error is not None and error.code == ErrorCode.FASP_PROTO, error
    assert rss < 200 << 20, f"the server engine holds {rss >> 20} MiB for the requests"


def _names(count: int, width: int) -> Iterator[str]:
    """``count`` distinct names of ``width`` characters."""
    return (f"{i:07x}".ljust(width, "n") for i in range(count))


async def _keep(client: ControlClient, arg: int, names: Iterator[str], batch: int) -> Message | None:
    """``keep`` for ``names`` (below ``x``) in batches of ``batch``, the last one done; the server's answer."""
    chunk = tuple(itertools.islice(names, batch))
    while chunk:
        following = tuple(itertools.islice(names, batch))
        try:
            await client.channel.send(Keep(arg=arg, top="x", names=chunk, done=not following))
        except (BrokenPipeError, ConnectionError):  # the engine hung up: read why
            break
        chunk = following
    return await asyncio.wait_for(client.channel.recv(), 60)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("bound", ["names", "characters"])
def test_names_to_keep_are_held_up_to_a_bound_then_the_session_ends(fasp_server, bound):
    """An authenticated user's --delete-before-transfer upload sends ``keep`` batches without end: the server
    engine added each to a set, its memory limited only by the link. A directory of MAX_KEEP_NAMES entries or of
    MAX_KEEP_CHARS characters of names is still pruned (``kept``); one name more and the session ends with a
    protocol error saying so."""
    (Path(fasp_server.docroot) / "x").mkdir()
    # short names (~100,000 to a frame) up to the count, or long ones (~250 to a frame) up to the characters
    width, count, batch = (7, MAX_KEEP_NAMES, 100_000) if bound == "names" else (4000, MAX_KEEP_CHARS // 4000, 250)

    async def attack() -> tuple[Message | None, Message | None]:
        async with ControlClient(fasp_server, "/", PeerOptions(delete_before=True)) as client:
            honest = await _keep(client, 0, _names(count, width), batch)
            return honest, await _keep(client, 1, _names(count + 1, width), batch)

    honest, error = asyncio.run(attack())
    assert honest == Kept(arg=0, deleted=0), honest
    assert isinstance(error, SessionFailed) and error.code == ErrorCode.FASP_PROTO, error
    assert "--delete-before-transfer" in error.desc, error.desc
