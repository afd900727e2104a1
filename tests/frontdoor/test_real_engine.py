"""fasp-server with the real server-mode engine: the user's docroot and caps hold for real transfers,
the engine ends with its channel, and a stock sshd finds `fasp-ascp` on its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest

from fasp.server.users import User, hash_password, save_users
from tests.support.files import assert_same_file, random_file
from tests.support.procs import alive, children, cmdline
from tests.support.programs import ENGINE
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def ascp(port: int, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*ENGINE, "-q", "-P", str(port), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def two_users(tmp_path_factory):
    """fasp-server with a users file: ann (only policy low/fixed, 8 Mbps cap) and ben (no limits)."""
    base = tmp_path_factory.mktemp("users")
    roots = {name: base / name for name in ("ann", "ben")}
    for root in roots.values():
        root.mkdir()
    save_users(
        base / "users.toml",
        {
            "ann": User(
                "ann",
                str(roots["ann"]),
                hash_password("ann-pw"),
                rate_cap_kbps=8_000,
                allowed_policies=("low", "fixed"),
            ),
            "ben": User("ben", str(roots["ben"]), hash_password("ben-pw")),
        },
    )
    with start_fasp_server(base / "srv", users_file=base / "users.toml") as server:
        yield server, roots


def as_user(name: str) -> dict:
    return {**os.environ, "ASPERA_SCP_PASS": f"{name}-pw"}


def test_each_user_lands_in_their_own_docroot(two_users, tmp_path):
    server, roots = two_users
    for name in ("ann", "ben"):
        src = random_file(tmp_path / f"from-{name}.bin", 1 << 20)
        done = ascp(server.port, "--policy=low", str(src), f"{name}@{server.host}:/", env=as_user(name))
        assert done.returncode == 0, done.stderr
        assert_same_file(src, roots[name] / src.name)
    assert not (roots["ben"] / "from-ann.bin").exists() and not (roots["ann"] / "from-ben.bin").exists()


def test_a_policy_outside_the_users_list_is_refused(two_users, tmp_path):
    server, roots = two_users
    src = random_file(tmp_path / "fair.bin", 1000)
    done = ascp(server.port, "--policy=fair", str(src), f"ann@{server.host}:/", env=as_user("ann"))
    assert done.returncode == 34, done.stderr
    assert not (roots["ann"] / "fair.bin").exists()


def test_the_users_rate_cap_holds_whatever_the_client_asks(two_users, tmp_path):
    server, roots = two_users
    src = random_file(tmp_path / "capped.bin", 3 << 20)  # 25 Mbit: over 3 s at 8 Mbps, about 1 s uncapped
    started = time.monotonic()
    done = ascp(server.port, "--policy=fixed", "-l", "1000000", str(src), f"ann@{server.host}:/", env=as_user("ann"))
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert_same_file(src, roots["ann"] / "capped.bin")
    assert elapsed >= 2.5, f"3 MiB in {elapsed:.2f} s: the 8 Mbps cap was not applied"


def _engine_of(parent: int, deadline: float, known: set[int]) -> int:
    """The one new child of ``parent`` (waited for, bounded)."""
    while not (new := set(children(parent)) - known) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(new) == 1, new
    return new.pop()


@pytest.mark.parametrize("warm", [False, True], ids=["exec", "fork"])
def test_the_real_engine_ends_when_the_channel_closes(tmp_path, warm):
    """Exec'd, the engine is fasp-server's child running ``-m fasp --server``; forked warm (the default), it is
    a child of the server's one fork server (``-m fasp.cli.warm``), no new interpreter per session, and shows
    ``fasp-ascp --server ...``. Either way it ends with its channel; the fork server stays for the next session."""
    with start_fasp_server(tmp_path / "srv", extra_args=() if warm else ("--cold-engines",)) as fasp_server:
        deadline = time.monotonic() + 10
        helpers = set(children(fasp_server.process.pid))
        fork_server = next((p for p in helpers if b"fasp.cli.warm" in cmdline(p)), None)
        assert (fork_server is not None) == warm
        parent = fork_server or fasp_server.process.pid

        async def open_then_drop() -> int:
            conn = await fasp_server.ssh()
            await conn.create_process("fasp-ascp --server", encoding=None)
            engine = await asyncio.to_thread(_engine_of, parent, deadline, helpers)
            if not warm:
                while b"--server" not in (argv := cmdline(engine)) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # between fork and exec the child still shows fasp-server's argv
                assert argv[1:6] == [b"-m", b"fasp", b"--server", b"--docroot", str(fasp_server.docroot).encode()]
            else:  # a fork of the fork server (never an exec), showing its own command line once it read its request
                while (argv := cmdline(engine))[:1] != [b"fasp-ascp"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # between the fork and the request the child shows the fork server's
                assert argv[:4] == [b"fasp-ascp", b"--server", b"--docroot", str(fasp_server.docroot).encode()]
                assert os.getpgid(engine) == engine  # its own process group, as an exec'd engine has
            conn.abort()
            return engine

        pid = asyncio.run(open_then_drop())
        assert wait_until(lambda: pid not in children(parent), 8)
        if warm:
            assert alive(fork_server)


def test_stock_sshd_runs_fasp_ascp_from_its_path(openssh_server, tmp_path):
    """No FASP_REMOTE_COMMAND: the client's default `fasp-ascp --server` must resolve under sshd."""
    env = {k: v for k, v in os.environ.items() if k != "FASP_REMOTE_COMMAND"}
    src = random_file(tmp_path / "plain-sshd.bin", 1 << 20)
    done = ascp(
        openssh_server.port, "-i", str(openssh_server.identity), str(src), f"root@{openssh_server.host}:/", env=env
    )
    assert done.returncode == 0, done.stderr
    assert_same_file(src, openssh_server.docroot / src.name)


def test_a_server_on_a_second_address_answers_from_it(tmp_path):
    """The engine's UDP socket binds to the address the client reached (SSH_CONNECTION), so the data
    channel's replies come from the address the client sends to, not from the host's first one."""
    with start_fasp_server(tmp_path / "srv", extra_args=["--listen", "127.0.0.2:0"]) as server:
        assert server.host == "127.0.0.2"
        source = random_file(tmp_path / "second.bin", 512 * 1024)
        done = ascp(server.port, "-O", "0", str(source), f"{server.user}@{server.host}:/", env=server.env())
        assert done.returncode == 0, done.stderr
        assert_same_file(source, server.docroot / "second.bin")


def test_a_fork_server_gone_closes_each_pipe_end_once(monkeypatch):
    """When the fork server cannot be reached, every end of the engine's three pipes is closed exactly once: a
    second close of a number the kernel has already handed to another thread's new file would close that file.
    (The spy on ``os.close`` is the seam: the race itself needs another thread to open at the wrong moment.)"""
    from fasp.server.frontdoor import ENGINE_COMMAND, _WarmEngine

    class Gone:
        def spawn(self, *args, **kwargs):
            raise OSError("fork server gone")

    closed: list[int] = []
    real_close = os.close

    def spy(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    before = sorted(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "close", spy)
    with pytest.raises(OSError, match="fork server gone"):
        asyncio.run(_WarmEngine.fork(Gone(), [*ENGINE_COMMAND, "--server"], "/", {}))
    monkeypatch.undo()
    pipe_ends = [fd for fd in closed if fd not in map(int, before)]
    assert len(pipe_ends) == 6 and len(set(pipe_ends)) == 6, closed
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_out_of_descriptors_on_the_third_pipe_leaves_none_open():
    """fasp-server at its descriptor limit: the third pipe fails with EMFILE (code 24's cause), and the two
    pipes made before it are closed, not left to make the shortage worse for every later session."""
    import errno
    import resource

    from fasp.server.frontdoor import ENGINE_COMMAND, _WarmEngine

    class Unused:
        def spawn(self, *args, **kwargs):
            raise AssertionError("spawn is not reached: the pipes fail first")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def starved() -> None:
        held = {int(fd) for fd in os.listdir("/proc/self/fd")}
        free = [n for n in range(max(held) + 6) if n not in held]
        resource.setrlimit(resource.RLIMIT_NOFILE, (free[4], hard))  # room for two pipes, not three
        try:
            await _WarmEngine.fork(Unused(), [*ENGINE_COMMAND, "--server"], "/", {})
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    before = sorted(os.listdir("/proc/self/fd"))
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(OSError) as exc:
            loop.run_until_complete(starved())
        assert exc.value.errno == errno.EMFILE
    finally:
        loop.close()
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_quick_mode_survives_sighup(tmp_path):
    """The help's reload signal in quick mode (no users file, the Procfile's mode): logged, nothing to re-read,
    and the server, its warm engine and later transfers go on."""
    with start_fasp_server(tmp_path / "srv") as server:
        engines = children(server.process.pid)
        server.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "nothing to re-read" in server.log(), 10), server.log()
        assert server.process.poll() is None and children(server.process.pid) == engines
        src = random_file(tmp_path / "after-hup.bin", 300_000)
        done = ascp(server.port, str(src), f"{server.user}@{server.host}:/", env=server.env())
        assert done.returncode == 0, done.stderr
        assert_same_file(src, server.docroot / "after-hup.bin")
