"""Issue 10, item 6: the client checks the server's host key as OpenSSH does, before offering any credential.

The attacker runs an SSH server of their own (asyncssh, recording every authentication request) where the
client expects the real one. A stock ``fasp-ascp`` upload, with the password in ASPERA_SCP_PASS as a user
would give it, and the same upload through faspmanager must end with error 51 and the fake server must not
see a single authentication request: no password, no public key. Known keys (plain or hashed known_hosts
lines, or a --check-sshfp pin) and --ignore-host-key let the client go on to authenticate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import asyncssh
import pytest

import faspmanager as fm
from tests.engine.helpers import run_ascp
from tests.support.files import assert_same_file, random_file
from tests.support.programs import engine_program, pythonpath
from tests.support.servers import known_hosts_line

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
PASSWORD = "the-users-real-password"
WRONG_PIN = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


class _Recorder(asyncssh.SSHServer):
    """An impostor SSH server: it notes every authentication request and accepts none."""

    def __init__(self, attempts: list) -> None:
        self.attempts = attempts

    def begin_auth(self, username: str) -> bool:
        self.attempts.append(("begin", username))
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        self.attempts.append(("password", password))
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self.attempts.append(("publickey", key.get_fingerprint()))
        return False


@contextmanager
def impostor(key: asyncssh.SSHKey):
    """The fake SSH server on 127.0.0.1 (its own thread and loop): (port, list of auth attempts)."""
    attempts: list = []
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    async def main() -> None:
        box["server"] = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[key], server_factory=lambda: _Recorder(attempts)
        )
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(main(), loop).result(10)
    started.wait(10)
    try:
        yield box["server"].sockets[0].getsockname()[1], attempts
    finally:

        async def stop() -> None:
            box["server"].close()
            await box["server"].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _hashed(host: str, port: int, key: asyncssh.SSHKey) -> str:
    """The known_hosts line ``ssh-keygen -H`` writes: |1|salt|HMAC-SHA1(salt, "[host]:port")."""
    salt = os.urandom(20)
    digest = hmac.new(salt, f"[{host}]:{port}".encode(), hashlib.sha1).digest()
    _, keytype, blob = known_hosts_line(host, port, key).split()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} {keytype} {blob}\n"


@pytest.fixture(scope="module")
def server_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def _known_hosts(tmp_path: Path, case: str, port: int, key: asyncssh.SSHKey) -> tuple[Path, list[str]]:
    """A known_hosts file for ``case`` and the extra command-line options it comes with."""
    path = tmp_path / "known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519")
    lines, extra = {
        "unknown": ("", []),
        "changed": (known_hosts_line("127.0.0.1", port, other), []),
        "changed-type": (known_hosts_line("127.0.0.1", port, asyncssh.generate_private_key("ssh-rsa")), []),
        "wrong-pin": (known_hosts_line("127.0.0.1", port, key), [f"--check-sshfp={WRONG_PIN}"]),
        "known": (known_hosts_line("127.0.0.1", port, key), []),
        "hashed": (_hashed("127.0.0.1", port, key), []),
        "pinned": ("", [f"--check-sshfp={key.get_fingerprint('sha256')}"]),
        "ignored": (known_hosts_line("127.0.0.1", port, other), ["--ignore-host-key"]),
    }[case]
    path.write_text(lines)
    return path, extra


def _env(known_hosts: Path) -> dict:
    return {
        **os.environ,
        "FASP_KNOWN_HOSTS": str(known_hosts),
        "ASPERA_SCP_PASS": PASSWORD,
        "HOME": str(known_hosts.parent),
    }  # no ~/.ssh keys of the machine's user


def _ascp(port: int, extra: list[str], env: dict, src: Path) -> tuple[int, str]:
    done = run_ascp(["-q", "-P", str(port), *extra, str(src), "fasp@127.0.0.1:/"], env, timeout=60)
    return done.returncode, done.stderr.decode(errors="replace")


def _manager(port: int, extra: list[str], env: dict, src: Path, tmp_path: Path, monkeypatch) -> tuple[int, str]:
    """The same upload ordered through faspmanager (password as dest_pass, options as TransferOptions)."""
    program = engine_program(tmp_path)
    for name in ("FASP_KNOWN_HOSTS", "HOME"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("ASPERA_SCP_PASS", raising=False)
    monkeypatch.setenv("PYTHONPATH", pythonpath())
    options = fm.TransferOptions(tcp_port=port)
    for arg in extra:
        if arg.startswith("--check-sshfp="):
            options.check_ssh_fingerprint = arg.partition("=")[2]
        elif arg == "--ignore-host-key":
            options.ignore_host_key = True
    order = fm.FileUpload([str(src)], "fasp", "127.0.0.1", dest_pass=PASSWORD, options=options)
    with fm.session(order, ascp_path=str(program)) as session:
        session.start()
        result = session.finish()
    return result.stats().get("code"), result.reason() or ""


@pytest.mark.parametrize("via", ["ascp", "faspmanager"])
@pytest.mark.parametrize("case", ["unknown", "changed", "changed-type", "wrong-pin"])
def test_untrusted_host_key_is_51_before_any_credential(case, via, server_key, tmp_path, monkeypatch):
    src = random_file(tmp_path / "secret.bin", 1000)
    with impostor(server_key) as (port, attempts):
        known_hosts, extra = _known_hosts(tmp_path, case, port, server_key)
        env = _env(known_hosts)
        code, message = (
            _ascp(port, extra, env, src) if via == "ascp" else _manager(port, extra, env, src, tmp_path, monkeypatch)
        )
    assert attempts == [], f"the impostor saw {attempts}"
    assert code == 51, message
    fingerprint = server_key.get_fingerprint("sha256")
    assert fingerprint in message and f"[127.0.0.1]:{port}" in message, message
    if case.startswith("changed"):
        assert "CHANGED" in message
    assert PASSWORD not in message


def test_revoked_host_key_is_51_before_any_credential(server_key, tmp_path):
    """An ``@revoked`` line wins over a plain line for the same key, as in OpenSSH."""
    src = random_file(tmp_path / "secret.bin", 1000)
    with impostor(server_key) as (port, attempts):
        line = known_hosts_line("127.0.0.1", port, server_key)
        (tmp_path / "known_hosts").write_text(line + "@revoked " + line)
        code, message = _ascp(port, [], _env(tmp_path / "known_hosts"), src)
    assert attempts == [], f"the impostor saw {attempts}"
    assert code == 51 and "revoked" in message, message


@pytest.mark.parametrize("case", ["known", "hashed", "pinned", "ignored"])
def test_trusted_host_key_goes_on_to_authenticate(case, server_key, tmp_path):
    """The positive control: with a trusted key (or the check waived) the client does authenticate, and the
    impostor, which accepts nobody, sees the password: so the empty lists above mean the check stopped it."""
    src = random_file(tmp_path / "secret.bin", 1000)
    with impostor(server_key) as (port, attempts):
        known_hosts, extra = _known_hosts(tmp_path, case, port, server_key)
        code, message = _ascp(port, extra, _env(known_hosts), src)
    assert ("password", PASSWORD) in attempts
    assert code == 19, message  # authentication failed: the impostor accepts no one


def test_registered_key_transfers(fasp_server, tmp_path):
    """A real fasp-server whose key the fixture listed in $FASP_KNOWN_HOSTS: the upload lands intact."""
    src = random_file(tmp_path / "up.bin", 300_000)
    done = run_ascp(["-q", "-P", str(fasp_server.port), str(src), f"fasp@{fasp_server.host}:/"], fasp_server.env())
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert_same_file(src, fasp_server.docroot / "up.bin")


def test_ignore_host_key_transfers_without_known_hosts(fasp_server, tmp_path):
    """--ignore-host-key, the explicit opt-out: no known_hosts entry at all, the upload still lands intact."""
    src = random_file(tmp_path / "up.bin", 300_000)
    env = fasp_server.env({**os.environ, "FASP_KNOWN_HOSTS": str(tmp_path / "empty")})
    args = ["-q", "-P", str(fasp_server.port), str(src), f"fasp@{fasp_server.host}:/"]
    refused = run_ascp(args, env)
    assert refused.returncode != 0 and b"host key" in refused.stderr
    done = run_ascp(["--ignore-host-key", *args], env)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert_same_file(src, fasp_server.docroot / "up.bin")
