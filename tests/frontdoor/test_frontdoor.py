"""fasp-server over real SSH: who gets in, what runs, and that no engine process outlives its session."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from fasp.server.users import User, hash_password, save_users
from tests.support.procs import alive
from tests.support.programs import SERVER
from tests.support.servers import PASSWORD_ENV, FaspServer, start_fasp_server
from tests.support.wait import wait_until

FAKE_ENGINE = [sys.executable, str(Path(__file__).with_name("fake_engine.py"))]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory) -> FaspServer:
    with start_fasp_server(tmp_path_factory.mktemp("echo"), engine_command=FAKE_ENGINE) as server:
        yield server


def connect(server: FaspServer, **auth) -> asyncssh.SSHClientConnection:
    auth.setdefault("username", server.user)
    if "client_keys" not in auth:
        auth.setdefault("password", server.password)
        auth["client_keys"] = None
    return asyncssh.connect(server.host, server.port, known_hosts=None, agent_path=None, **auth)


async def run_session(server: FaspServer, data: bytes, command: str = "fasp-ascp --server", env=None, **auth):
    """Run one session feeding ``data``; returns (report from the engine, echoed bytes, exit status, stderr)."""
    async with connect(server, **auth) as conn:
        process = await conn.create_process(command, encoding=None, env=env or {})
        process.stdin.write(data)
        process.stdin.write_eof()  # run(input=b"") would not send EOF
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    report, _, echoed = stdout.partition(b"\n")
    return json.loads(report), echoed, process.exit_status, stderr


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Those of ``pids`` still alive after waiting up to ``timeout`` for all to end."""
    wait_until(lambda: not any(map(alive, pids)), timeout)
    return [pid for pid in pids if alive(pid)]


def test_session_runs_our_engine_in_the_users_docroot_whatever_the_client_asks(echo_server):
    data = bytes(range(256)) * 16 + os.urandom(1 << 20)
    report, echoed, status, _ = asyncio.run(
        run_session(
            echo_server,
            data,
            command="sh -c 'cat /etc/shadow' --docroot /",
            env={"FROM_CLIENT": "1", "FROM_CLIENT_DOCROOT": "/"},
        )
    )
    assert report["argv"] == ["--server", "--docroot", str(echo_server.docroot)]
    assert report["cwd"] == str(echo_server.docroot)
    env = report["env"]
    # the server's password (its variable, or its value under any name) does not reach the engine ...
    assert PASSWORD_ENV not in env and echo_server.password not in "\0".join(env.values())
    assert not [name for name in env if name.startswith("ASPERA_SCP_")]
    assert not [name for name in env if name.startswith("FROM_CLIENT")]  # ... nor does anything the client sets
    assert len(echoed) == len(data) and hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    assert status == 0


def test_exit_status_and_stderr_reach_the_client(tmp_path):
    with start_fasp_server(tmp_path, engine_command=[*FAKE_ENGINE, "--exit", "7", "--stderr", "boom"]) as server:
        _, echoed, status, stderr = asyncio.run(run_session(server, b"x"))
    assert (echoed, status, stderr) == (b"x", 7, b"boom")


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
def test_bad_credentials_are_refused_and_never_logged(echo_server, who):
    auth = {"password": "not-the-password"} if who == "wrong password" else {"username": "mallory"}
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(run_session(echo_server, b"", **auth))
    log = echo_server.log()
    assert "password refused" in log
    assert "not-the-password" not in log and echo_server.password not in log


def test_public_key_auth(tmp_path):
    key, other = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    keys_file = tmp_path / "authorized_keys"
    keys_file.write_bytes(key.export_public_key())
    with start_fasp_server(tmp_path, engine_command=FAKE_ENGINE, authorized_keys=keys_file) as server:
        report, echoed, status, _ = asyncio.run(run_session(server, b"by key", client_keys=[key]))
        assert (echoed, status, report["cwd"]) == (b"by key", 0, str(server.docroot))
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(run_session(server, b"", client_keys=[other]))
        assert "authenticated fasp" in server.log()


def test_users_file_gives_each_user_their_docroot_and_caps(tmp_path):
    users_file, roots = tmp_path / "users.toml", {name: tmp_path / name for name in ("ann", "ben")}
    for root in roots.values():
        root.mkdir()
    save_users(
        users_file,
        {
            "ann": User(
                "ann",
                str(roots["ann"]),
                hash_password("ann-pw"),
                rate_cap_kbps=20_000,
                allowed_policies=("fair", "low"),
            ),
            "ben": User("ben", str(roots["ben"]), hash_password("ben-pw")),
        },
    )
    with start_fasp_server(tmp_path / "srv", engine_command=FAKE_ENGINE, users_file=users_file) as server:
        ann, *_ = asyncio.run(run_session(server, b"", username="ann", password="ann-pw"))
        ben, *_ = asyncio.run(run_session(server, b"", username="ben", password="ben-pw"))
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(run_session(server, b"", username="ben", password="ann-pw"))
    assert ann["argv"] == [
        "--server",
        "--docroot",
        str(roots["ann"]),
        "--rate-cap",
        "20000",
        "--allowed-policies",
        "fair,low",
    ]
    assert ben["argv"] == ["--server", "--docroot", str(roots["ben"])]
    assert (ann["cwd"], ben["cwd"]) == (str(roots["ann"]), str(roots["ben"]))


def test_udp_port_is_passed_to_the_engine(tmp_path):
    with start_fasp_server(tmp_path, engine_command=FAKE_ENGINE, udp_port=33001) as server:
        report, *_ = asyncio.run(run_session(server, b""))
    assert report["argv"][-2:] == ["-O", "33001"]


def test_parallel_sessions_each_get_their_own_engine(echo_server):
    async def session(conn, payload):
        process = await conn.create_process("fasp-ascp --server", encoding=None)
        report = json.loads(await process.stdout.readline())
        return process, report, payload

    async def main():
        async with connect(echo_server) as one, connect(echo_server) as two:
            payloads = [os.urandom(100_000 + i) for i in range(6)]
            started = await asyncio.gather(*(session(conn, p) for conn, p in zip([one, two] * 3, payloads)))
            pids = [report["pid"] for _, report, _ in started]
            assert len(set(pids)) == 6 and all(map(alive, pids))  # six engines at once
            for process, _, payload in started:
                process.stdin.write(payload)
                process.stdin.write_eof()
            for process, _, payload in started:
                echoed = await process.stdout.read()
                assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()
                assert (await process.wait()).exit_status == 0
            return pids

    assert wait_gone(asyncio.run(main()), 5) == []


@pytest.mark.parametrize(
    "engine", [[*FAKE_ENGINE, "--hold"], [*FAKE_ENGINE, "--hold", "--ignore-term"]], ids=["polite", "stubborn"]
)
def test_engine_ends_when_the_channel_closes(tmp_path, engine):
    with start_fasp_server(tmp_path, engine_command=engine) as server:

        async def open_then_drop():
            conn = await connect(server)
            process = await conn.create_process("fasp-ascp --server", encoding=None)
            pid = json.loads(await process.stdout.readline())["pid"]
            conn.abort()  # no EOF, no goodbye: the connection just goes away
            return pid

        pid = asyncio.run(open_then_drop())
        assert wait_gone([pid], 8) == []
        assert server.process.poll() is None  # the server itself carries on


def test_sigterm_ends_every_session_and_the_server(tmp_path):
    with start_fasp_server(tmp_path, engine_command=[*FAKE_ENGINE, "--hold"]) as server:

        async def hold_sessions():
            conn = await connect(server)
            pids = []
            for _ in range(3):
                process = await conn.create_process("x", encoding=None)
                pids.append(json.loads(await process.stdout.readline())["pid"])
            server.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(conn.wait_closed(), 10)
            return pids

        pids = asyncio.run(hold_sessions())
        assert server.process.wait(10) == 0
        assert wait_gone(pids, 2) == []
        assert "shutting down (3 sessions)" in server.log()


def test_engine_dies_with_a_killed_server(tmp_path):
    with start_fasp_server(tmp_path, engine_command=[*FAKE_ENGINE, "--hold"]) as server:

        async def start_one():
            conn = await connect(server)
            process = await conn.create_process("x", encoding=None)
            pid = json.loads(await process.stdout.readline())["pid"]
            server.process.kill()
            return pid

        assert wait_gone([asyncio.run(start_one())], 5) == []


def test_an_ipv6_listen_address_is_announced_in_brackets(tmp_path):
    """``listening on [::1]:PORT``, as HOST:PORT is written (it said ``::1:PORT``); the fixture reads the line so."""
    with start_fasp_server(tmp_path, host="::1") as server:
        assert server.host == "::1" and server.port > 0


def test_sftp_is_not_offered(echo_server):
    async def try_sftp():
        async with connect(echo_server) as conn:
            await conn.start_sftp_client()

    with pytest.raises(asyncssh.ChannelOpenError):
        asyncio.run(try_sftp())


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--user", "u", "--docroot", "/tmp/x", "--password-env", "NOPE_UNSET"], {}, "NOPE_UNSET is not set"),
        (["--docroot", "/tmp/x"], {}, "either --users"),
        (["--users", "/nonexistent/users.toml"], {}, "cannot read users file"),
        (["--users", "/nonexistent/users.toml", "--rate-cap", "5"], {}, "--rate-cap is for quick mode"),
        *(
            ([option, f"{host}{number}"], {}, f"argument {option}: '{number}' is not a port number in {lowest}..65535")
            for option, lowest, host, number in (
                ("--listen", 0, "127.0.0.1:", "99999"),
                ("--udp-port", 1, "", "99999"),
                ("--udp-port", 1, "", "0"),
                ("--http-port", 0, "", "65536"),
                ("--metrics-port", 0, "", "99999"),
            )
        ),
    ],
)
def test_command_line_mistakes_exit_2_with_a_reason(args, env, message):
    done = subprocess.run(
        [*SERVER, "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert done.returncode == 2 and message in done.stderr


def test_missing_docroot_fails_the_session_with_a_reason(tmp_path):
    users_file = tmp_path / "users.toml"
    save_users(users_file, {"gone": User("gone", str(tmp_path / "no-such-dir"), hash_password("pw"))})
    with start_fasp_server(tmp_path / "srv", engine_command=FAKE_ENGINE, users_file=users_file) as server:

        async def attempt():
            async with connect(server, username="gone", password="pw") as conn:
                return await conn.run("x", encoding=None, timeout=30)

        result = asyncio.run(attempt())
        assert result.exit_status == 1 and b"cannot start the transfer engine" in result.stderr
        assert "docroot of gone does not exist" in server.log()


def test_sighup_reloads_the_users_file_and_keeps_it_if_broken(tmp_path):
    users_file, docroot = tmp_path / "users.toml", tmp_path / "root"
    docroot.mkdir()
    ann = User("ann", str(docroot), hash_password("ann-pw"))
    save_users(users_file, {"ann": ann})
    with start_fasp_server(tmp_path / "srv", engine_command=FAKE_ENGINE, users_file=users_file) as server:

        def reload_and_wait(marker: str) -> None:
            count = server.log().count(marker)
            server.process.send_signal(signal.SIGHUP)
            wait_until(lambda: server.log().count(marker) != count, 10)
            assert server.log().count(marker) == count + 1

        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(run_session(server, b"", username="ben", password="ben-pw"))
        save_users(users_file, {"ann": ann, "ben": User("ben", str(docroot), hash_password("ben-pw"))})
        reload_and_wait("users file reloaded")
        _, echoed, status, _ = asyncio.run(run_session(server, b"hi", username="ben", password="ben-pw"))
        assert (echoed, status) == (b"hi", 0)
        users_file.write_text("[users.ben]\nrate_cap_kbps = -1\n")
        reload_and_wait("users file not reloaded")
        _, echoed, _, _ = asyncio.run(run_session(server, b"still", username="ben", password="ben-pw"))
        assert echoed == b"still"
        assert server.process.poll() is None
