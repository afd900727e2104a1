"""Error codes a caller can act on, from real failures: auth 19, missing source 4, docroot 41,
unreachable peer 12, host key 51, data channel 14, usage 8. Each also reaches the manager as ERROR."""

from __future__ import annotations

import socket

import asyncssh
import pytest

from fasp.session.hostkeys import sshfp_matches
from tests.engine.helpers import remote, run_ascp
from tests.support.files import random_file
from tests.support.ports import free_port

pytestmark = pytest.mark.slow


def _code(result) -> int:
    return result.returncode


@pytest.mark.timeout(60)
def test_wrong_password_is_19(fasp_server_module, tmp_path, listener, spawn):
    server = fasp_server_module
    src = random_file(tmp_path / "x.bin", 10)
    env = {**server.env(), "ASPERA_SCP_PASS": "not-the-password"}
    proc = spawn(["-q", "-P", str(server.port), "-M", str(listener.port), str(src), remote(server, "/x.bin")], env)
    proc.wait(30)
    assert proc.returncode == 19
    error = listener.wait_for(lambda f: f.type == "ERROR", 5)
    assert error is not None and error[1].int("Code") == 19
    assert listener.types()[0] == "INIT"


@pytest.mark.timeout(60)
def test_missing_source_is_4(fasp_server_module, tmp_path):
    server = fasp_server_module
    result = run_ascp(["-q", "-P", str(server.port), str(tmp_path / "nope"), remote(server, "/")], server.env())
    assert _code(result) == 4
    back = run_ascp(["-q", "-P", str(server.port), remote(server, "/does/not/exist"), str(tmp_path)], server.env())
    assert _code(back) == 4


@pytest.mark.timeout(60)
def test_outside_docroot_is_41(fasp_server_module, tmp_path):
    server = fasp_server_module
    src = random_file(tmp_path / "x.bin", 10)
    up = run_ascp(["-q", "-P", str(server.port), str(src), remote(server, "/../../escape.bin")], server.env())
    assert _code(up) == 41
    (server.docroot / "link-out").unlink(missing_ok=True)
    (server.docroot / "link-out").symlink_to("/etc")
    down = run_ascp(["-q", "-P", str(server.port), remote(server, "/link-out/hostname"), str(tmp_path)], server.env())
    assert _code(down) == 41
    assert not (tmp_path / "hostname").exists()


@pytest.mark.timeout(60)
def test_unreachable_peer_is_12(tmp_path):
    src = random_file(tmp_path / "x.bin", 10)
    closed = free_port()
    result = run_ascp(
        ["-q", "-P", str(closed), str(src), "u@127.0.0.1:/"], {"ASPERA_SCP_PASS": "x", "PATH": "/usr/bin:/bin"}
    )
    assert _code(result) == 12


@pytest.mark.timeout(60)
def test_host_key_fingerprint(fasp_server_module, tmp_path):
    server = fasp_server_module
    src = random_file(tmp_path / "x.bin", 1000)
    good = run_ascp(
        [
            "-q",
            "-P",
            str(server.port),
            f"--check-sshfp={server.host_key_fingerprint}",
            str(src),
            remote(server, "/fp-ok.bin"),
        ],
        server.env(),
    )
    assert _code(good) == 0, good.stderr.decode()
    bad = run_ascp(
        [
            "-q",
            "-P",
            str(server.port),
            "--check-sshfp=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            str(src),
            remote(server, "/fp-bad.bin"),
        ],
        server.env(),
    )
    assert _code(bad) == 51
    assert not (server.docroot / "fp-bad.bin").exists()


def test_every_fingerprint_spelling_the_help_names():
    """--check-sshfp takes SHA256 (with or without the prefix, padded or not) and MD5 hex with or without colons
    or the MD5: prefix (plain hex was taken for base64 SHA256 and never matched)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    sha, md5 = key.get_fingerprint("sha256"), key.get_fingerprint("md5").removeprefix("MD5:")
    for spelled in (sha, sha.removeprefix("SHA256:"), sha + "=", md5, "MD5:" + md5, md5.replace(":", ""), md5.upper()):
        assert sshfp_matches(key, spelled), spelled
    other = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("md5").removeprefix("MD5:")
    assert not sshfp_matches(key, other.replace(":", "")) and not sshfp_matches(key, "0" * 32)


@pytest.mark.timeout(60)
def test_data_channel_that_cannot_open_is_14(tmp_path):
    """The server's UDP port (fasp-server --udp-port, passed on as -O) is already taken."""
    from tests.support.servers import start_fasp_server

    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with start_fasp_server(tmp_path / "srv", udp_port=port) as server:
            src = random_file(tmp_path / "x.bin", 10)
            result = run_ascp(
                ["-q", "-P", str(server.port), str(src), remote(server, "/x.bin")], server.env(), timeout=40
            )
            assert _code(result) == 14, result.stderr.decode()
    finally:
        holder.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--bogus-flag", "a", "h:/b"], "--bogus-flag"),
        (["-@", "0:10", "a", "h:/b"], "-@"),  # (refused with its reason: the table says why)
        (["-y", "2", "a", "h:/b"], "-y"),
        (["-l", "fast", "a", "h:/b"], "-l"),
        (["--overwrite=sometimes", "a", "h:/b"], "--overwrite"),
        (["--host=h2", "u@h:/a", "dl"], "--host h2 contradicts the host h in the paths"),
    ],
)
def test_usage_errors_are_8_and_name_the_problem(argv, needle, listener, spawn):
    proc = spawn(["-M", str(listener.port), *argv], {"PATH": "/usr/bin:/bin"})
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 8
    assert needle in err.decode()
    error = listener.wait_for(lambda f: f.type == "ERROR", 5)
    assert error is not None and error[1].int("Code") == 8


@pytest.mark.timeout(30)
def test_a_log_directory_that_cannot_be_made_is_8(tmp_path, listener, spawn):
    """-L DIR below a regular file: a usage error on one line (no traceback), told to the manager too."""
    (tmp_path / "plain").write_bytes(b"")
    proc = spawn(
        ["-M", str(listener.port), "-L", str(tmp_path / "plain" / "sub"), "a", "h:/b"], {"PATH": "/usr/bin:/bin"}
    )
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 8, err.decode()
    assert err.decode().splitlines() == [f"fasp-ascp: error 8: -L {tmp_path / 'plain' / 'sub'}: Not a directory"]
    error = listener.wait_for(lambda f: f.type == "ERROR", 5)
    assert error is not None and error[1].int("Code") == 8


@pytest.mark.timeout(60)
def test_data_channel_that_never_answers_is_15(tmp_path, monkeypatch):
    """The server's UDP socket sits on 127.0.0.2 while the client sends to 127.0.0.1: no answer, ever."""
    from tests.support.servers import start_fasp_server

    monkeypatch.setenv("FASP_UDP_BIND", "127.0.0.2")  # inherited by the server-mode engine
    with start_fasp_server(tmp_path / "srv") as server:
        src = random_file(tmp_path / "x.bin", 10)
        result = run_ascp(["-q", "-P", str(server.port), str(src), remote(server, "/x.bin")], server.env(), timeout=40)
        assert _code(result) == 15, result.stderr.decode()
        assert not (server.docroot / "x.bin").exists()


@pytest.mark.timeout(60)
def test_peer_that_never_speaks_ssh_is_13(tmp_path):
    """A TCP port that accepts and then stays silent: the SSH handshake times out (13), nothing hangs."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        src = random_file(tmp_path / "x.bin", 10)
        result = run_ascp(
            ["-q", "-P", str(silent.getsockname()[1]), str(src), "u@127.0.0.1:/"],
            {"ASPERA_SCP_PASS": "x", "PATH": "/usr/bin:/bin", "FASP_CONNECT_TIMEOUT": "2"},
            timeout=30,
        )
        assert _code(result) == 13, result.stderr.decode()
    finally:
        silent.close()


@pytest.mark.timeout(60)
def test_destination_name_too_long_is_41_naming_it(fasp_server_module, tmp_path):
    """ENAMETOOLONG where the file lands is the destination's fault and permanent: 41 (BAD_PATH), naming the
    destination, never a retryable read error (35) naming the source."""
    server = fasp_server_module
    src = random_file(tmp_path / "short.bin", 10)
    (server.docroot / "short.bin").write_bytes(src.read_bytes())
    long = "y" * 300
    up = run_ascp(["-q", "-P", str(server.port), str(src), remote(server, f"/{long}")], server.env())
    down = run_ascp(["-q", "-P", str(server.port), remote(server, "/short.bin"), str(tmp_path / long)], server.env())
    for result in (up, down):
        err = result.stderr.decode(errors="replace")
        assert _code(result) == 41, err
        assert long in err and "File name too long" in err, err
