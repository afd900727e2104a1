"""The fork server behind warm engines, with real processes: what a fork gets (argv, environment, work
directory, stdio, exit status), how it ends (signals through the server, the launcher gone, the server gone)
and that a dead server is replaced on the next launch."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from faspmanager.forkserver import ForkServer
from tests.support.procs import alive, children
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

MODULE = "tests.support.forkentry"


@pytest.fixture
def server():
    fork_server = ForkServer(MODULE)
    try:
        yield fork_server
    finally:
        fork_server.close()


def _launch(server: ForkServer, *args: str, env: dict | None = None, cwd: str | None = None):
    out_r, out_w = os.pipe()
    with open(os.devnull, "rb") as null:
        process = server.spawn(["forkentry", *args], env or {}, null.fileno(), out_w, 2, cwd)
    os.close(out_w)
    return process, os.fdopen(out_r, "rb")


def test_a_fork_runs_with_its_own_argv_environment_directory_and_exit_status(server, tmp_path):
    process, out = _launch(server, "report", "7", env={"FORKENTRY_VAR": "seen"}, cwd=str(tmp_path))
    assert process.wait(10) == 7
    report = json.loads(out.read())
    assert report == {"argv": ["forkentry", "report", "7"], "cwd": str(tmp_path), "var": "seen"}
    assert not alive(process.pid)
    again, out2 = _launch(server, "report", "0")
    assert again.wait(10) == 0 and json.loads(out2.read())["var"] is None  # nothing leaks between forks


def test_a_kept_descriptor_reaches_the_fork_at_its_own_number(server):
    """As ``pass_fds`` for an exec (fasp-server hands its engines a usage pipe this way): the fork finds the
    descriptor at the number its launcher named in the environment, even where another one sat in the server."""
    read_end, write_end = os.pipe()
    # a free number from 40 up (the fork server's own descriptors are unlikely to hold it): never dup2 onto a
    # fixed one, which would take it from whoever holds it in this process, or be write_end itself
    moved = fcntl.fcntl(write_end, fcntl.F_DUPFD_CLOEXEC, 40)
    os.close(write_end)
    with open(os.devnull, "rb") as null:
        process = server.spawn(["forkentry", "write", str(moved), "kept"], {}, null.fileno(), 1, 2, None, [moved])
    os.close(moved)
    assert process.wait(10) == 0
    assert os.read(read_end, 100) == b"kept"
    os.close(read_end)
    with pytest.raises(ValueError):
        server.spawn(["forkentry", "report", "0"], {}, 0, 1, 2, None, [1])  # stdio is not "kept"


def test_a_signal_reaches_the_forks_process_group_through_the_server(server):
    process, out = _launch(server, "sleep")
    assert out.readline() == b"sleeping\n"
    assert process.pid in children(server.server_pid)  # forked by the server, not exec'd by us
    assert os.getpgid(process.pid) == process.pid  # its own group and session, as start_new_session gives
    assert process.poll() is None
    process.signal_group(signal.SIGTERM)
    assert process.wait(10) == -signal.SIGTERM


def test_a_launcher_that_goes_away_takes_its_fork_with_it(tmp_path):
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import os, sys, time
                from faspmanager.forkserver import ForkServer
                server = ForkServer({MODULE!r})
                null = os.open(os.devnull, os.O_WRONLY)  # the fork's own line must not race ours on the pipe
                process = server.spawn(["forkentry", "sleep"], {{}}, 0, null, 2)
                print(server.server_pid, process.pid, server.path, flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert launcher.stdout is not None
    line = launcher.stdout.readline()
    server_pid, fork_pid = (int(v) for v in line.split()[:2])
    folder = os.path.dirname(line.split()[2].decode())
    assert fork_pid in children(server_pid) and os.path.isdir(folder)
    launcher.kill()  # no close(): the server's socket and its folder are the server's to remove
    launcher.wait()
    assert wait_until(lambda: not alive(server_pid) and not alive(fork_pid), 10)
    assert wait_until(lambda: not os.path.exists(folder), 5)


def test_a_dead_server_ends_its_forks_and_the_next_launch_starts_a_new_one(server):
    process, out = _launch(server, "sleep")
    assert out.readline() == b"sleeping\n"
    first = server.server_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert process.wait(10) == -signal.SIGKILL  # the launcher learns the fork is gone
    assert wait_until(lambda: not alive(process.pid), 10)
    os.unlink(server.path)  # as a server leaving by its own hand (an error) removes its socket and folder
    os.rmdir(os.path.dirname(server.path))
    again, out2 = _launch(server, "report", "3")
    assert again.wait(10) == 3 and server.server_pid not in (None, first)
