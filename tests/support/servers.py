"""Real SSH servers for tests: our fasp-server, and a stock OpenSSH sshd, on loopback.

Use them as pytest fixtures (``fasp_server``, ``fasp_server_module``,
``openssh_server``) or, to change options, as context managers
(``start_fasp_server(workdir, rate_cap_kbps=...)``, ``start_openssh_server(workdir)``).
Both servers are separate processes that are always stopped and reaped, and
everything they write stays under the given directory.

Under sshd the client runs the remote command itself (``fasp-ascp --server``, or
env FASP_REMOTE_COMMAND): the generated sshd_config puts this interpreter's
bin directory first on the session PATH and the repository on PYTHONPATH, and
sets FASP_DOCROOT to the fixture's docroot, so both work without anything else.

Each server's host key is appended to ``$FASP_KNOWN_HOSTS`` (tests/conftest.py sets it) as it starts, so a
client checks it as ssh would; ``register_host_key`` does the same for servers started elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from tests.support.ports import free_port
from tests.support.procs import children
from tests.support.programs import ENGINE, SERVER, pythonpath
from tests.support.root import require_root

HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
_LISTENING = re.compile(r"listening on (?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)")
"""fasp-server's first stdout line: ``listening on HOST:PORT``, an IPv6 HOST in brackets."""
PASSWORD_ENV = "FASP_TEST_PASSWORD"  # the variable start_fasp_server hands the quick-mode password in


@dataclass
class FaspServer:
    """A running ``fasp-server`` in quick mode (one user, password in the environment)."""

    host: str
    port: int
    user: str
    password: str
    docroot: Path
    host_key_fingerprint: str  # "SHA256:...", as --check-sshfp wants it
    log_path: Path  # the server's stderr
    process: subprocess.Popen

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for a client process: ``base`` (default os.environ) plus ASPERA_SCP_PASS."""
        return {**(os.environ if base is None else base), "ASPERA_SCP_PASS": self.password}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ssh(self) -> asyncssh.SSHClientConnection:
        """An SSH connection as the user, with the password (``await`` it or ``async with`` it): what a hand-built
        client opens before it speaks to the server engine itself. The host key is not checked here."""
        return asyncssh.connect(
            self.host,
            self.port,
            username=self.user,
            password=self.password,
            client_keys=None,
            known_hosts=None,
            agent_path=None,
        )


@dataclass
class OpenSSHServer:
    """A running OpenSSH ``sshd`` that accepts ``user`` with the private key ``identity``."""

    host: str
    port: int
    user: str
    identity: Path
    docroot: Path
    host_key_fingerprint: str
    remote_command: str  # what FASP_REMOTE_COMMAND should be for this interpreter
    log_path: Path
    process: subprocess.Popen

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for a client process: ``base`` (default os.environ) plus FASP_REMOTE_COMMAND."""
        return {**(os.environ if base is None else base), "FASP_REMOTE_COMMAND": self.remote_command}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def start_fasp_server(
    workdir: Path,
    *,
    user: str = "fasp",
    password: str | None = None,
    docroot: Path | None = None,
    rate_cap_kbps: int | None = None,
    allowed_policies: Sequence[str] | None = None,
    authorized_keys: Path | None = None,
    udp_port: int | None = None,
    engine_command: Sequence[str] | None = None,
    users_file: Path | None = None,
    extra_args: Sequence[str] = (),
    host: str = HOST,
    wrapper: Sequence[str] = (),
) -> Iterator[FaspServer]:
    """Start ``fasp-server`` on a port it picks itself; stop it on exit.

    ``host`` is the address to listen on; ``wrapper`` prefixes the command (e.g. ``ip netns exec NS``,
    which execs the server, so stopping it still signals the server itself).

    Quick mode (one ``user`` with ``password``) unless ``users_file`` is given: then the
    users come from that file and ``user``/``password``/caps are not used.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(18)
    docroot = Path(docroot or workdir / "docroot")
    docroot.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "fasp_host_key"
    argv = [*wrapper, *SERVER, "--listen", f"{host}:0", "--host-key", str(host_key)]
    if users_file is not None:
        argv += ["--users", str(users_file)]
    else:
        argv += ["--user", user, "--password-env", PASSWORD_ENV, "--docroot", str(docroot)]
        if rate_cap_kbps is not None:
            argv += ["--rate-cap", str(rate_cap_kbps)]
        if allowed_policies is not None:
            argv += ["--allowed-policies", ",".join(allowed_policies)]
        if authorized_keys is not None:
            argv += ["--authorized-keys", str(authorized_keys)]
    if udp_port is not None:
        argv += ["--udp-port", str(udp_port)]
    if engine_command is not None:
        argv += ["--engine-command", shlex.join(engine_command)]
    argv += list(extra_args)
    log_path = workdir / "fasp-server.log"
    env = {**os.environ, PASSWORD_ENV: password, "PYTHONPATH": pythonpath()}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env, cwd=workdir
        )
    try:
        line = _read_line(proc, READY_TIMEOUT_S, log_path)
        announced = _LISTENING.fullmatch(line)
        if announced is None:  # an IPv6 address must come in brackets, as HOST:PORT is written
            raise RuntimeError(f"fasp-server said {line!r}; log:\n{log_path.read_text()}")
        host, port = announced["v6"] or announced["host"], announced["port"]
        register_host_key(host, int(port), host_key)
        yield FaspServer(
            host=host,
            port=int(port),
            user=user,
            password=password,
            docroot=docroot,
            host_key_fingerprint=asyncssh.read_private_key(host_key).get_fingerprint("sha256"),
            log_path=log_path,
            process=proc,
        )
    finally:
        _stop(proc)
        proc.stdout.close()


@contextmanager
def start_openssh_server(
    workdir: Path, *, docroot: Path | None = None, confine: bool = True
) -> Iterator[OpenSSHServer]:
    """Start a real sshd as root on a free port, with its own keys and config under ``workdir``.

    ``confine=False`` leaves FASP_DOCROOT unset (the engine then serves the whole filesystem).
    """
    require_root("sshd (its privilege separation) and logging in as root")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    docroot = Path(docroot or workdir / "docroot")
    docroot.mkdir(parents=True, exist_ok=True)
    host_key, identity = workdir / "ssh_host_ed25519_key", workdir / "id_ed25519"
    for key in (host_key, identity):
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fasp-test", "-f", str(key)],
                check=True,
                stdin=subprocess.DEVNULL,
            )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    setenv = [f"PATH={Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", f"PYTHONPATH={pythonpath()}"]
    if confine:
        setenv.append(f"FASP_DOCROOT={docroot}")
    log_path = workdir / "sshd.log"
    for _ in range(5):  # the free port may be taken before sshd binds it
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {HOST}:{port}",
                    f"HostKey {host_key}",
                    f"PidFile {workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {identity}.pub",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "UsePAM no",
                    "PermitRootLogin yes",
                    "StrictModes no",
                    "LogLevel VERBOSE",
                    "SetEnv " + " ".join(f'"{item}"' for item in setenv),
                    "",
                ]
            )
        )
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            if _wait_tcp(proc, port):
                register_host_key(HOST, port, host_key)
                yield OpenSSHServer(
                    host=HOST,
                    port=port,
                    user="root",
                    identity=identity,
                    docroot=docroot,
                    host_key_fingerprint=asyncssh.read_private_key(host_key).get_fingerprint("sha256"),
                    remote_command=shlex.join(ENGINE),
                    log_path=log_path,
                    process=proc,
                )
                return
        finally:
            _wait_sessions_ended(proc.pid)
            _stop(proc)
    raise RuntimeError(f"sshd did not start; log:\n{log_path.read_text()}")


def known_hosts_line(host: str, port: int, key: asyncssh.SSHKey) -> str:
    """``key`` as an OpenSSH known_hosts line for host:port (``[host]:port`` unless the port is 22)."""
    name = host if port == 22 else f"[{host}]:{port}"
    keytype, blob = key.export_public_key("openssh").decode().split()[:2]  # without the comment
    return f"{name} {keytype} {blob}\n"


def register_host_key(host: str, port: int, key_path: Path | str) -> None:
    """Trust the host key in ``key_path`` (private or public) for host:port in ``$FASP_KNOWN_HOSTS``."""
    known_hosts = os.environ.get("FASP_KNOWN_HOSTS")
    if not known_hosts:
        raise RuntimeError("FASP_KNOWN_HOSTS is not set (tests/conftest.py sets it)")
    path = Path(key_path)
    try:
        key = asyncssh.read_private_key(path)
    except asyncssh.KeyImportError:
        key = asyncssh.read_public_key(path)
    with open(known_hosts, "a", encoding="ascii") as handle:
        handle.write(known_hosts_line(host, port, key))


def _read_line(proc: subprocess.Popen, timeout: float, log_path: Path) -> str:
    """The first stdout line of ``proc``, or RuntimeError with its log if it dies or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.05)
        if ready:
            return proc.stdout.readline().decode(errors="replace").strip()
        if proc.poll() is not None:
            break
    raise RuntimeError(f"server not ready (exit {proc.poll()}); log:\n{log_path.read_text(errors='replace')}")


def _wait_tcp(proc: subprocess.Popen, port: int) -> bool:
    """Whether ``proc`` came to accept TCP connections on ``port`` (False if it exited first)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _wait_sessions_ended(pid: int) -> None:
    """End sshd's per-connection children while sshd can still reap them (killed first, they'd be orphans)."""
    for grace, signum in ((STOP_TIMEOUT_S, signal.SIGTERM), (STOP_TIMEOUT_S, signal.SIGKILL)):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and children(pid):
            time.sleep(0.05)
        for child in children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after a grace period; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


@pytest.fixture
def fasp_server(tmp_path: Path) -> Iterator[FaspServer]:
    """A fresh fasp-server with a random password and an empty docroot, for one test."""
    with start_fasp_server(tmp_path / "fasp-server") as server:
        yield server


@pytest.fixture(scope="module")
def fasp_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaspServer]:
    """One fasp-server shared by a module's tests (cheaper; tests must not rely on an empty docroot)."""
    with start_fasp_server(tmp_path_factory.mktemp("fasp-server")) as server:
        yield server


@pytest.fixture
def openssh_server(tmp_path: Path) -> Iterator[OpenSSHServer]:
    """A real OpenSSH sshd accepting root with a generated key; FASP_DOCROOT is its docroot."""
    if shutil.which("sshd", path="/usr/sbin") is None:
        pytest.fail("OpenSSH sshd is not installed at /usr/sbin/sshd")
    with start_openssh_server(tmp_path / "sshd") as server:
        yield server
