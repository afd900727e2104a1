"""Effect tests for -Z, -m, --ignore-host-key, the cookie / token / --retry-timeout and -O, between real engines.

Each test fails if the engine ignores the option: it looks at the datagrams on the wire (the impairment
relay of tests/support/relay.py sees every one, type in clear), the management events of our engine, the
server's logs and sockets, and always checks that the bytes arrived intact (size + sha256).

Relayed sessions: the server's engines listen on 127.0.0.2 at the relay's port, so a client that dials
127.0.0.1 at that port goes through the relay (as in test_relayed_options.py).

--chunk-size has no test here: our engine only takes it as the mark of a stream session (no source paths
needed); stream WRITE payloads are regathered into fixed segments (fasp/session/stream.py), so the chunk size has
no effect on the wire or on disk. The library's side (WRITE frames of chunk_size) is in tests/manager.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from fasp.datapath import datagram
from tests.engine.helpers import MgmtListener, fasp_args, remote, run_ascp, server_mode_pids
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.ports import free_port
from tests.support.programs import ENGINE
from tests.support.relayed import relayed_server, reset
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

WRONG_SSHFP = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


@pytest.fixture(scope="module")
def relayed(tmp_path_factory):
    with relayed_server(tmp_path_factory.mktemp("relayed-wire")) as pair:
        yield pair


def files_for(server, tmp_path, direction: str, size: int, name: str):
    """(source, ascp path arguments, where the copy lands) for one random file of ``size`` bytes."""
    if direction == "upload":
        src = random_file(tmp_path / f"{name}.bin", size)
        return src, [str(src), remote(server, f"/{name}.bin")], server.docroot / f"{name}.bin"
    src = random_file(server.docroot / f"{name}.bin", size)
    (tmp_path / name).mkdir()
    return src, [remote(server, f"/{name}.bin"), str(tmp_path / name)], tmp_path / name / f"{name}.bin"


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def no_server_engines_left(server) -> None:
    """The relayed server binds one UDP port strictly: the next session needs the last one gone."""
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 15), "a server engine lingers"


# ---- -Z -------------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_datagram_size_on_the_wire(relayed, tmp_path, direction):
    """-Z 700 and -Z 3000 (the default is 1400): every DATA datagram is at most -Z bytes, nearly all exactly
    that; in a download the client's -Z travels to the remote sender."""
    server, relay = relayed
    data_way = "up" if direction == "upload" else "down"
    for size in (700, 3000):
        no_server_engines_left(server)
        seen = reset(relay)
        src, args, dest = files_for(server, tmp_path, direction, 1 << 20, f"z{size}")
        ok(run_ascp(fasp_args(server, "-Z", str(size), "-l", "100000", *args), server.env()))
        assert_same_file(src, dest)
        data = [n for way, kind, n in seen if way == data_way and kind == datagram.DATA]
        assert len(data) >= (1 << 20) // (size - datagram.DATA_OVERHEAD), (size, len(data))
        assert max(data) == size, (size, sorted(set(data))[-5:])
        assert sum(n == size for n in data) >= 0.9 * len(data), (size, len(data))
        other = [n for way, kind, n in seen if kind == datagram.DATA and way != data_way]
        assert not other  # data went one way only


# ---- -m -------------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_min_rate_is_a_floor_under_congestion(relayed, tmp_path):
    """--policy low yields to queuing delay; -m 8000 keeps 8 Mbit/s all the same.

    The congestion: once the transfer runs (at -l 20000), the relay's one-way delay steps from 2 to 60 ms,
    exactly as a queue filled by other traffic would look to the flow (its base RTT is the minimum of the
    last 10 s, so all of the step reads as queuing delay). Measured on the wire 2.5 to 5 s after the step:
    with -m 8000 the flow stays at about 8 Mbit/s, without it LOW backs off to a crawl.

    Upload only: both sides run the same transport and rate controller (fasp/datapath/udpchannel.py,
    fasp/datapath/rate.py), and in a download the client's -m reaches the remote sender in the hello's rate
    object, which the existing -l / RATE tests of both directions already exercise.
    """
    server, relay = relayed
    measured = {}
    for floor in ("8000", None):
        no_server_engines_left(server)
        reset(relay, delay=0.002)
        name = f"low-{floor}"
        src = random_file(tmp_path / f"{name}.bin", 9 << 20)
        digest = sha256(src)
        flags = ["--policy", "low", "-l", "20000"] + (["-m", floor] if floor else [])
        proc = subprocess.Popen(
            [*ENGINE, *fasp_args(server, *flags, str(src), remote(server, f"/{name}.bin"))],
            env=server.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert wait_until(lambda: relay.counts.bytes["up"] > 1_500_000, 20), relay.counts
            relay.delay = 0.060
            step = time.monotonic()
            time.sleep(5.2)
            measured[floor] = relay.counts.mbit("up", step + 2.5, step + 5.0)
            if floor:
                _, err = proc.communicate(timeout=40)
                assert proc.returncode == 0, err.decode(errors="replace")
                assert_same_file(src, server.docroot / f"{name}.bin", digest)
            else:
                assert proc.poll() is None, "without -m it cannot have finished"
                proc.terminate()  # a clean end: the server engine lets go of its port
                proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            relay.delay = 0.0
    assert measured["8000"] >= 6.0, measured
    assert measured[None] <= 2.0, measured


# ---- --ignore-host-key ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_ignore_host_key_wins_over_a_wrong_fingerprint(fasp_server_module, tmp_path, direction):
    server = fasp_server_module
    src, args, dest = files_for(server, tmp_path, direction, 200_000, f"ihk-{direction}")
    bad = run_ascp(fasp_args(server, f"--check-sshfp={WRONG_SSHFP}", *args), server.env())
    assert bad.returncode == 51, bad.stderr.decode(errors="replace")
    assert not dest.exists()
    ok(run_ascp(fasp_args(server, f"--check-sshfp={WRONG_SSHFP}", "--ignore-host-key", *args), server.env()))
    assert_same_file(src, dest)


# ---- cookie, token, --retry-timeout ---------------------------------------------------------------------


def _holds(pid: int, secret: bytes, parts=("cmdline", "environ")) -> bool:
    found = False
    for name in parts:
        try:
            found |= secret in open(f"/proc/{pid}/{name}", "rb").read()
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory):
    """A fasp-server whose server-mode engines write their log (stderr, INFO) to ``engine.log``."""
    workdir = tmp_path_factory.mktemp("engine-log")
    engine_log = workdir / "engine.log"
    engine = ["sh", "-c", f'exec "$0" -m fasp "$@" 2>>{engine_log}', sys.executable]
    with start_fasp_server(workdir, engine_command=engine) as server:
        yield server, engine_log


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_cookie_token_and_retry_timeout(logging_server, tmp_path, listener, direction):
    """The management events carry the cookie (never the password) and --retry-timeout's RetryTimeout; the
    token reaches the server engine (its log says one was presented). The token's value is in no log,
    no event, no output, no command line, and no environment of the server side's processes."""
    server, engine_log = logging_server
    cookie, token = f"cookie-{direction}-4711", f"tok{direction}Z9q8w7e6r5t4y3u2i1"
    src, args, dest = files_for(server, tmp_path, direction, 1 << 20, f"tok-{direction}")
    env = {**server.env(), "ASPERA_SCP_COOKIE": cookie, "ASPERA_SCP_TOKEN": token}
    local_logs = tmp_path / "local-logs"
    logged_before = engine_log.read_text().count("presented an ASPERA_SCP_TOKEN") if engine_log.exists() else 0
    proc = subprocess.Popen(
        [
            *ENGINE,
            *fasp_args(
                server, "-M", str(listener.port), "--retry-timeout=77", "-l", "8000", "-L", str(local_logs), *args
            ),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    engines: list[int] = []
    try:
        wait_until(
            lambda: bool(engines.extend(server_mode_pids(str(server.docroot))) or engines) or proc.poll() is not None,
            20,
            step=0.02,
        )
        # the client has it in its environment (that is how it is given), never on its command line
        leaked = [pid for pid in [server.process.pid, *engines] if _holds(pid, token.encode())]
        leaked += [proc.pid] if _holds(proc.pid, token.encode(), ("cmdline",)) else []
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert_same_file(src, dest)
    assert engines, "the server-mode engine was never seen"
    assert not leaked, leaked
    init = listener.of("INIT")
    assert len(init) == 1 and init[0].get("Cookie") == cookie, init
    assert init[0].int("RetryTimeout") == 77, init
    assert wait_until(lambda: listener.closed.is_set(), 10)
    for frame in [f for _, f in listener.events]:
        text = repr(frame.fields).encode() + frame.payload
        assert server.password.encode() not in text and token.encode() not in text, frame.type
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)
    server_log = engine_log.read_text(errors="replace")
    assert server_log.count("presented an ASPERA_SCP_TOKEN") == logged_before + 1, server_log[-2000:]
    texts = {
        "server engine log": server_log,
        "fasp-server log": server.log(),
        "client log": (local_logs / "fasp-ascp.log").read_text(errors="replace"),
        "client output": (out + err).decode(errors="replace"),
    }
    for what, text in texts.items():
        assert token not in text and server.password not in text, what


# ---- -O -------------------------------------------------------------------------------------------------


def _udp_owners(port: int) -> str:
    return subprocess.run(["ss", "-uanpH", f"sport = :{port}"], capture_output=True, text=True).stdout


@pytest.mark.timeout(60)
def test_udp_port_is_bound_when_free_and_avoided_when_taken(fasp_server_module, tmp_path, listener):
    """Upload with -O P: the server engine listens on UDP P (SESSION's Port, and the socket itself);
    with P already taken it takes another free port and the transfer still passes."""
    server = fasp_server_module
    port = free_port(socket.SOCK_DGRAM)

    def upload(name: str, mgmt) -> int:
        src = random_file(tmp_path / f"{name}.bin", 2 << 20)
        proc = subprocess.Popen(
            [
                *ENGINE,
                *fasp_args(
                    server,
                    "-M",
                    str(mgmt.port),
                    "-O",
                    str(port),
                    "-l",
                    "10000",
                    str(src),
                    remote(server, f"/{name}.bin"),
                ),
            ],
            env=server.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            session = mgmt.wait_for(lambda f: f.type == "SESSION", timeout=20)
            owners = _udp_owners(session[1].int("Port")) if session else ""
            engines = server_mode_pids(str(server.docroot))
            _, err = proc.communicate(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")
        assert_same_file(src, server.docroot / f"{name}.bin")
        assert session is not None
        bound = session[1].int("Port")
        assert engines and any(f"pid={pid}," in owners for pid in engines), (bound, engines, owners)
        return bound

    assert upload("o-free", listener) == port
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second = MgmtListener()
    try:
        holder.bind(("0.0.0.0", port))
        other = upload("o-taken", second)
    finally:
        second.close()
        holder.close()
    assert other not in (port, 0)
