"""The transfer servers and clients a benchmark compares, on host B and A.

Each server is started fresh for every measured run and stopped after it:
``os.wait4`` on a stopped server then yields the CPU time of the server and
every session process it reaped, which is how "CPU seconds per GiB" counts
both ends without guessing.  Clients get the same treatment.  Peak memory of the
server side is the largest VmHWM among the server's descendants (its session
processes), polled while it runs: the server's own reaped-children maximum would
also count the server itself (fasp-server hashes its password with scrypt, 128 MiB).
The engine logs in with the key scp uses (a password login costs fasp-server an scrypt check at its start and at
each login, which scp's key login does not); the setup scenario keeps a password login. Secrets go through the
environment only.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from tasks.local import descendants

# -P: the engines import the checkout the bench runs from (PYTHONPATH=REPO), never one the working directory
# happens to be (``-m`` puts the working directory first: a bench of checkout A run from inside checkout B
# measured B's engine under A's name)
ENGINE = [sys.executable, "-P", "-m", "fasp"]
FRONTDOOR = [sys.executable, "-P", "-m", "fasp.server.frontdoor"]
REPO = str(Path(__file__).resolve().parents[1])
READY_TIMEOUT_S = 20.0


def engine_available() -> bool:
    """Whether the engine's client (fasp/cli/ascp.py) and server (fasp/server/frontdoor.py) exist yet."""
    package = Path(REPO) / "fasp"
    return all((package / name).exists() for name in ("cli/ascp.py", "server/frontdoor.py", "__main__.py"))


@dataclass
class Finished:
    returncode: int | None  # None: killed at the time limit
    seconds: float
    cpu_s: float
    maxrss_mib: float  # peak resident memory of the process or of any process it reaped (a server: see stop)


def vm_hwm_mib(pid: int) -> float:
    """The peak resident memory of a live process (/proc/PID/status VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


class SessionPeak:
    """The largest peak RSS any descendant of ``root`` reached, polled every ``every`` s until :meth:`stop`
    (VmHWM only grows, so the last poll before a process ends is close to its peak; a slow poll, so the
    watching costs the measured tools next to no CPU)."""

    def __init__(self, root: int, every: float = 0.2) -> None:
        self.root, self.every, self.mib = root, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="session-peak", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            for pid in descendants(self.root):
                self.mib = max(self.mib, vm_hwm_mib(pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.mib, 1)


def stolen_s() -> float:
    """CPU seconds the hypervisor has taken from this machine's CPUs since boot (/proc/stat's steal, all CPUs):
    on a virtual machine a run with seconds of it was slowed by the host, not by the tool."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()  # "cpu user nice system idle iowait irq softirq steal ..."
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def wait_measured(process: subprocess.Popen, timeout: float | None, started: float) -> Finished:
    """Wait for ``process`` (SIGTERM, then SIGKILL, at ``timeout``); its CPU with reaped children."""
    deadline = None if timeout is None else started + timeout
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            ended = time.monotonic()
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        if deadline is not None and time.monotonic() > deadline and not timed_out:
            timed_out, ended = True, time.monotonic()
            os.kill(process.pid, signal.SIGTERM)  # not Popen's: it polls first, and would reap what wait4 measures
            deadline = time.monotonic() + 5
        elif timed_out and time.monotonic() > deadline:
            os.kill(process.pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.01)
    return Finished(
        None if timed_out else process.returncode,
        ended - started,
        usage.ru_utime + usage.ru_stime,
        round(usage.ru_maxrss / 1024, 1),
    )


def reap(process: subprocess.Popen, timeout: float) -> None:
    """Give ``process`` ``timeout`` seconds to end by itself, then kill it; always reaped."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _ready_line(process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if select.select([process.stdout], [], [], 0.05)[0]:
            return process.stdout.readline().decode(errors="replace").strip()
    raise RuntimeError(f"server did not start (exit {process.poll()}): {log.read_text(errors='replace')[-2000:]}")


def ssh_key(path: Path) -> Path:
    """An ed25519 key pair without a passphrase at ``path`` (and ``path``.pub), made once."""
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, stdin=subprocess.DEVNULL
        )
    return path


def client_key(workdir: Path) -> Path:
    """The one key both scp and the engine log in with: the same login, so neither pays for a different one."""
    return ssh_key(workdir / "id_ed25519")


class Server:
    """A server process on host B, started per run so its CPU can be measured."""

    def __init__(self, site, workdir: Path) -> None:
        self.site = site
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def wait_ready(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.log = self.workdir / f"{type(self).__name__}.log"
        with open(self.log, "ab") as log:
            self.process = self.site.popen(
                "b", self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=self.env()
            )
        self.peak = SessionPeak(self.process.pid)
        try:
            self.wait_ready()
        except BaseException:
            if self.process.poll() is None:
                self.stop()
            else:  # it died at its start (and is reaped): its own error is the one to raise
                self.peak.stop()
                self.process.stdout.close()
            raise

    def stop(self) -> Finished:
        """Stop the server; its CPU seconds, sessions included, and its sessions' peak memory (the server's
        own if no session process was seen)."""
        time.sleep(0.2)  # let finished sessions be reaped by the server
        sessions_mib = self.peak.stop()
        # os.kill, not Popen.send_signal: that polls first, and a server that ended by itself meanwhile would be
        # reaped there, leaving wait_measured nothing to wait for (ChildProcessError in a fresh-clone CI run)
        os.kill(self.process.pid, signal.SIGTERM)
        finished = wait_measured(self.process, 10, time.monotonic())
        self.process.stdout.close()
        if sessions_mib:
            finished.maxrss_mib = sessions_mib
        return finished


class OpenSSH(Server):
    """A real OpenSSH sshd on host B, port 22, key login for root."""

    def __init__(self, site, workdir: Path) -> None:
        super().__init__(site, workdir)
        self.host_key, self.identity = ssh_key(workdir / "ssh_host_ed25519_key"), client_key(workdir)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.config = workdir / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress {site.hosts.addr_b}:22",
                    f"HostKey {self.host_key}",
                    f"PidFile {workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.identity}.pub",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin yes",
                    "StrictModes no",
                    "UseDNS no",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )

    def argv(self) -> list[str]:
        return ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)]

    def wait_ready(self) -> None:
        probe = [
            sys.executable,
            "-c",
            "import socket,sys; socket.create_connection((sys.argv[1], 22), 1)",
            self.site.hosts.addr_b,
        ]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.site.run("a", probe, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"sshd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def ssh_options(self) -> list[str]:
        return [
            "-i",
            str(self.identity),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
        ]

    def scp(self, sources: list[Path], dest: Path) -> list[str]:
        return ["scp", "-q", "-r", *self.ssh_options(), *map(str, sources), f"root@{self.site.hosts.addr_b}:{dest}/"]

    def rsync(self, sources: list[Path], dest: Path) -> list[str]:
        shell = " ".join(["ssh", *self.ssh_options()])
        # --inplace: a run stopped at the time limit leaves its partial file, which counts
        return [
            "rsync",
            "-a",
            "--whole-file",
            "--inplace",
            "-e",
            shell,
            *map(str, sources),
            f"root@{self.site.hosts.addr_b}:{dest}/",
        ]


class FaspServer(Server):
    """Our fasp-server (quick mode) on host B; its docroot is the run's destination. ``login``: "key" (scp's
    key, as scp logs in) or "password" (the server pays scrypt at its start and at each login)."""

    PORT = 33001
    USER = "bench"

    def __init__(self, site, workdir: Path, docroot: Path, login: str = "key") -> None:
        super().__init__(site, workdir)
        self.docroot = docroot
        self.login = login
        self.identity = client_key(workdir)
        self.password = secrets.token_urlsafe(18)
        self.host_key = workdir / "fasp_host_key"
        if not self.host_key.exists():  # made here, not by the server: a command line pins it before the start
            with os.fdopen(os.open(self.host_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                out.write(asyncssh.generate_private_key("ssh-ed25519").export_private_key())

    def argv(self) -> list[str]:
        return [
            *FRONTDOOR,
            "--listen",
            f"{self.site.hosts.addr_b}:{self.PORT}",
            "--user",
            self.USER,
            *(
                ["--password-env", "FASP_BENCH_PASSWORD"]
                if self.login == "password"
                else ["--authorized-keys", f"{self.identity}.pub"]
            ),
            "--docroot",
            str(self.docroot),
            "--host-key",
            str(self.host_key),
        ]

    def env(self) -> dict[str, str]:
        secret = {"FASP_BENCH_PASSWORD": self.password} if self.login == "password" else {}
        return {**os.environ, **secret, "PYTHONPATH": REPO}

    def wait_ready(self) -> None:
        line = _ready_line(self.process, self.log)
        if not line.startswith("listening on "):
            raise RuntimeError(f"fasp-server said {line!r}: {self.log.read_text(errors='replace')[-2000:]}")

    def client_env(self) -> dict[str, str]:
        secret = {"ASPERA_SCP_PASS": self.password} if self.login == "password" else {}
        return {**os.environ, **secret, "PYTHONPATH": REPO}

    def host_key_fingerprint(self) -> str:
        """The server's host key: the client pins it (--check-sshfp), as it checks host keys."""
        return asyncssh.read_private_key(self.host_key).get_fingerprint("sha256")

    def ascp(
        self,
        sources: list[Path],
        *,
        rate_kbps: int,
        policy: str,
        encrypt: bool = True,
        mgmt_port: int | None = None,
        datagram_size: int | None = None,
        debug: bool = False,
    ) -> list[str]:
        argv = [
            *ENGINE,
            *(["-D"] if debug else []),  # -D logs the setup clock (bench.setup)
            "-P",
            str(self.PORT),
            "--mode=send",
            f"--user={self.USER}",
            f"--host={self.site.hosts.addr_b}",
            "-l",
            str(rate_kbps),
            f"--policy={policy}",
            f"--check-sshfp={self.host_key_fingerprint()}",
            *(["-i", str(self.identity)] if self.login == "key" else []),
            "-d",
        ]
        if not encrypt:
            argv.append("-T")
        if mgmt_port is not None:
            argv += ["-M", str(mgmt_port)]
        if datagram_size is not None:
            argv += ["-Z", str(datagram_size)]
        return [*argv, *map(str, sources), "/"]
