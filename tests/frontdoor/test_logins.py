"""Recently verified passwords (fasp.server.logins): a login again with the same password skips scrypt, and
nothing else does — a wrong password, a changed one, an expired entry."""

from __future__ import annotations

import asyncio
import os
import signal

import asyncssh
import pytest

from fasp.server.logins import MAX_ENTRIES, VerifiedLogins
from fasp.server.users import User, hash_password, save_users
from tests.frontdoor.test_frontdoor import FAKE_ENGINE, connect
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_only_the_verified_password_for_that_user_and_hash_is_recalled_until_it_expires():
    clock = Clock()
    logins = VerifiedLogins(ttl_s=300, clock=clock)
    assert not logins.recalls("ann", "H1", "secret-pw")
    logins.remember("ann", "H1", "secret-pw")
    assert logins.recalls("ann", "H1", "secret-pw")
    assert not logins.recalls("ann", "H1", "secret-pX")  # a wrong password
    assert not logins.recalls("ben", "H1", "secret-pw")  # another user
    assert not logins.recalls("ann", "H2", "secret-pw")  # the password changed (a new stored hash)
    clock.now = 299.9
    assert logins.recalls("ann", "H1", "secret-pw")
    clock.now = 300.0
    assert not logins.recalls("ann", "H1", "secret-pw")
    assert not logins.recalls("ann", "H1", "secret-pw")


def test_the_remembered_logins_are_bounded_and_hold_no_password():
    logins = VerifiedLogins()
    for i in range(MAX_ENTRIES + 10):
        logins.remember(f"user{i}", "H", "secret-pw")
    assert len(logins._entries) == MAX_ENTRIES
    assert not logins.recalls("user0", "H", "secret-pw")  # the oldest went first
    assert logins.recalls(f"user{MAX_ENTRIES + 9}", "H", "secret-pw")
    assert all(b"secret-pw" not in digest for digest, _ in logins._entries.values())


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _login(server, username: str, password: str) -> None:
    async with connect(server, username=username, password=password):
        pass


@pytest.mark.slow
def test_a_repeated_login_skips_scrypt_but_a_wrong_or_changed_password_does_not(tmp_path):
    users_file, docroot = tmp_path / "users.toml", tmp_path / "root"
    docroot.mkdir()
    save_users(users_file, {"ann": User("ann", str(docroot), hash_password("first-pw-1"))})
    with start_fasp_server(tmp_path / "srv", engine_command=FAKE_ENGINE, users_file=users_file) as server:
        pid = server.process.pid
        before = _cpu_s(pid)
        asyncio.run(_login(server, "ann", "first-pw-1"))
        first = _cpu_s(pid) - before  # SSH + one scrypt (128 MiB)
        before = _cpu_s(pid)
        for _ in range(5):
            asyncio.run(_login(server, "ann", "first-pw-1"))
        again = _cpu_s(pid) - before  # five SSH logins, no scrypt
        assert again < first, (again, first)
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(_login(server, "ann", "first-pw-2"))
        save_users(users_file, {"ann": User("ann", str(docroot), hash_password("second-pw-2"))})
        count = server.log().count("users file reloaded")
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: server.log().count("users file reloaded") > count, 10)
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(_login(server, "ann", "first-pw-1"))  # recalled before, refused now
        asyncio.run(_login(server, "ann", "second-pw-2"))


def test_identical_checks_running_together_share_one_and_others_do_not():
    logins = VerifiedLogins()
    calls: list[str] = []

    async def body() -> list[bool]:
        gate = asyncio.Event()

        def check(password: str):
            async def run() -> bool:
                calls.append(password)
                await gate.wait()
                return password == "right-pw-1"

            return run

        same = [logins.shared("ann", "H1", "right-pw-1", check("right-pw-1")) for _ in range(6)]
        other = logins.shared("ann", "H1", "wrong-pw-2", check("wrong-pw-2"))
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*same, other)
        later = await logins.shared("ann", "H1", "right-pw-1", check("right-pw-1"))  # the first one ended
        return [*results, later]

    assert asyncio.run(body()) == [True] * 6 + [False, True]
    assert calls == ["right-pw-1", "wrong-pw-2", "right-pw-1"]


@pytest.mark.slow
def test_logins_arriving_together_pay_one_scrypt(tmp_path):
    users_file, docroot = tmp_path / "users.toml", tmp_path / "root"
    docroot.mkdir()
    save_users(users_file, {"ann": User("ann", str(docroot), hash_password("first-pw-1"))})

    async def together(server, n: int) -> None:
        await asyncio.gather(*(_login(server, "ann", "first-pw-1") for _ in range(n)))

    with start_fasp_server(tmp_path / "srv", engine_command=FAKE_ENGINE, users_file=users_file) as server:
        pid = server.process.pid
        before = _cpu_s(pid)
        asyncio.run(together(server, 6))  # a worker's first six transfers, before any login was remembered
        six = _cpu_s(pid) - before
    with start_fasp_server(tmp_path / "srv2", engine_command=FAKE_ENGINE, users_file=users_file) as server:
        pid = server.process.pid
        before = _cpu_s(pid)
        asyncio.run(_login(server, "ann", "first-pw-1"))
        one = _cpu_s(pid) - before  # SSH + one scrypt
    assert six < 2 * one, (six, one)  # six scrypt runs would be about 6x
