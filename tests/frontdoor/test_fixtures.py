"""The shared server fixtures start real servers, let the right client in, and leave nothing behind."""

from __future__ import annotations

import asyncio
import shlex
import socket
import sys

import asyncssh
import pytest

from tests.support.ports import free_port
from tests.support.programs import REPO_ROOT
from tests.support.servers import start_fasp_server, start_openssh_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def refuses_tcp(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def run(host, port, command, **auth):
    async with asyncssh.connect(host, port, known_hosts=None, agent_path=None, **auth) as conn:
        result = await conn.run(command, timeout=30)
        return result, conn.get_server_host_key().get_fingerprint("sha256")


def test_free_port_is_bindable():
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        port = free_port(kind)
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", port))


def test_fasp_server_fixture(fasp_server):
    assert fasp_server.docroot.is_dir() and not any(fasp_server.docroot.iterdir())
    assert fasp_server.env({})["ASPERA_SCP_PASS"] == fasp_server.password
    assert fasp_server.process.poll() is None
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(
            run(
                fasp_server.host,
                fasp_server.port,
                "x",
                username=fasp_server.user,
                password=fasp_server.password + "x",
                client_keys=None,
            )
        )
    assert fasp_server.password not in fasp_server.log()


def test_fasp_server_stops_cleanly(tmp_path):
    with start_fasp_server(tmp_path) as server:

        async def fingerprint():
            async with server.ssh() as conn:
                return conn.get_server_host_key().get_fingerprint("sha256")

        assert asyncio.run(fingerprint()) == server.host_key_fingerprint
    assert server.process.returncode == 0  # SIGTERM is a clean shutdown
    assert refuses_tcp(server.host, server.port)


def test_openssh_server_accepts_the_generated_key_and_runs_commands(openssh_server):
    srv = openssh_server
    probe = (
        f"printf '%s\\n' \"$FASP_DOCROOT\"; command -v fasp-ascp; cd / && "
        f"{shlex.quote(sys.executable)} -c "
        f"{shlex.quote('import fasp.files.docroot; print(fasp.files.docroot.__file__)')}"
    )
    result, fingerprint = asyncio.run(
        run(srv.host, srv.port, probe, username=srv.user, client_keys=[str(srv.identity)])
    )
    assert result.exit_status == 0, result.stderr
    docroot, ascp, module = result.stdout.splitlines()
    assert docroot == str(srv.docroot)
    assert ascp.endswith("/fasp-ascp")
    assert module == str(REPO_ROOT / "fasp" / "files" / "docroot.py")
    assert fingerprint == srv.host_key_fingerprint
    assert srv.env({})["FASP_REMOTE_COMMAND"] == f"{sys.executable} -m fasp"


def test_openssh_server_refuses_other_keys_and_passwords(openssh_server):
    srv = openssh_server
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(
            run(srv.host, srv.port, "true", username="root", client_keys=[asyncssh.generate_private_key("ssh-ed25519")])
        )
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(run(srv.host, srv.port, "true", username="root", password="root", client_keys=None))


def test_openssh_server_stops_cleanly(tmp_path):
    with start_openssh_server(tmp_path, confine=False) as server:
        result, _ = asyncio.run(
            run(
                server.host,
                server.port,
                "printf '%s' \"${FASP_DOCROOT-unset}\"",
                username="root",
                client_keys=[str(server.identity)],
            )
        )
        assert result.stdout == "unset"
    assert server.process.returncode is not None
    assert refuses_tcp(server.host, server.port)
