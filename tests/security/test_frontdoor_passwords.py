"""Issue 10, items 9 and 11: password hashes too cheap (scrypt N=2^14), and empty or weak passwords
accepted (``--password-env VAR`` with VAR set but empty started, then let in an empty password).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncssh
import pytest

from fasp.server.users import User, load_users, save_users, verify_password
from tests.support.programs import SERVER, pythonpath
from tests.support.servers import start_fasp_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

OLD_N = 2**14
PASSWORD = "an-old-but-long-password"


def _old_hash(password: str) -> str:
    """A hash as the base code made them (N=2^14), built here with hashlib alone."""
    import base64
    import hashlib

    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=OLD_N, r=8, p=1, dklen=32)
    return f"scrypt${OLD_N}$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": pythonpath(), **extra}


@pytest.mark.parametrize("password", ["", "short", "password123", "12345678"])
def test_fasp_server_refuses_to_start_with_an_empty_or_weak_password(tmp_path, password):
    done = subprocess.run(
        [*SERVER, "--listen", "127.0.0.1:0", "--user", "u", "--password-env", "PW", "--docroot", str(tmp_path / "d")],
        env=_env(PW=password),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0, done.stdout
    assert "refusing to start" in done.stderr and ("empty" in done.stderr or "password is" in done.stderr)
    assert "listening" not in done.stdout


@pytest.mark.parametrize("password", ["", "short", "Password1"])
def test_users_add_refuses_an_empty_or_weak_password(tmp_path, password):
    file = tmp_path / "users.toml"
    for how, extra in (("--password-env", {"PW": password}), ("--password-stdin", {})):
        args = [how, "PW"] if how == "--password-env" else [how]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "fasp.server.users",
                "add",
                "--file",
                str(file),
                "--user",
                "u",
                "--docroot",
                str(tmp_path),
                *args,
            ],
            input=password + "\n",
            env=_env(**extra),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode != 0 and "refused" in done.stderr, (how, done.stderr)
        assert not file.exists()


def test_old_hash_is_upgraded_at_the_next_login(tmp_path):
    file = tmp_path / "users.toml"
    old = _old_hash(PASSWORD)
    save_users(file, {"ann": User("ann", str(tmp_path), old, max_sessions=3)})
    with start_fasp_server(tmp_path / "srv", users_file=file) as server:

        async def login(password: str) -> None:
            async with asyncssh.connect(
                server.host,
                server.port,
                username="ann",
                password=password,
                client_keys=None,
                known_hosts=None,
                agent_path=None,
            ):
                pass

        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(login("a-wrong-password"))
        assert load_users(file)["ann"].password_hash == old  # a failure changes nothing
        asyncio.run(login(PASSWORD))
        new = load_users(file)["ann"]
        assert new.password_hash != old and new.password_hash.split("$")[1] == str(2**17)
        assert verify_password(new.password_hash, PASSWORD) and new.max_sessions == 3
        assert oct(file.stat().st_mode & 0o777) == "0o600"
        asyncio.run(login(PASSWORD))  # and the new hash lets in
        assert PASSWORD not in server.log()
