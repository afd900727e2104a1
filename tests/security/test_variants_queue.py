"""Red-team variants of issue 11: what the first round's tests did not try.

An allowed ``-e`` program (the operator's own, but fed file names and data from
remote peers) reads its ancestors' ``/proc/PID/environ``: unsetenv() takes a
variable out of the worker's environment list, but the kernel still shows the
environment block the process was started with, secrets included (the
worker's shared key and Redis URL; the engine's ASPERA_SCP_PASS).

A signed order (a compromised submitting application) names as the remote
``destination_root`` of an upload, which no local rule checks, a word that
ascp reads as a flag: ``-e/any/program`` runs a program the policy forbids.

A ``source_prefix`` ending in ``/..``: the policy glued it to the path
(``readable/..`` + ``x`` = ``readable/..x``, inside) where the engine joins
them (``readable/../x``, the read directory's parent).

A download that recreates the remote side's links (``symlink_policy`` copy)
lets that side (a partner's host, or anyone who took it over) plant a link
leading out of the writable directories; the next download into the same
place writes through it.
"""

from __future__ import annotations

import stat

import pytest

import faspmanager as fm
from tasks.client import submit
from tests.support.files import assert_same_file
from tests.workers.conftest import SECRET_KEY, faspq, redis_server, server, worker_factory  # noqa: F401
from tests.workers.support import download, make_file, options, upload

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    dirs = {name: root / name for name in ("readable", "writable", "progs")}
    for path in dirs.values():
        path.mkdir()
    dump = dirs["writable"] / "ancestors.txt"
    prog = dirs["progs"] / "snoop.sh"
    # what an attacker who controls the -e program's input would make it do: read every ancestor's
    # initial environment (same uid: no privilege needed)
    prog.write_text(
        "#!/bin/sh\npid=$$\nout=''\nwhile [ \"$pid\" -gt 1 ]; do\n"
        "  out=\"$out$(tr '\\0' '\\n' < /proc/$pid/environ 2>/dev/null)\n\"\n"
        "  pid=$(awk '{print $4}' /proc/$pid/stat)\ndone\n"
        f"printf '%s' \"$out\" > {dump}.$$ && mv {dump}.$$ {dump}\n"
    )
    prog.chmod(prog.stat().st_mode | stat.S_IXUSR)
    dirs["prog"], dirs["dump"] = prog, dump
    dirs["forbidden"] = dirs["progs"] / "forbidden.sh"
    dirs["forbidden"].write_text(f"#!/bin/sh\ntouch {root / 'forbidden-ran'}\n")
    dirs["forbidden"].chmod(0o755)
    dirs["ran"] = root / "forbidden-ran"
    dirs["known_hosts"] = root / "known_hosts"
    dirs["known_hosts"].write_text("")
    return dirs


@pytest.fixture(scope="module")
def worker(worker_factory, site):  # noqa: F811
    names = (
        ("FASPQ_READ_DIRS", "readable"),
        ("FASPQ_WRITE_DIRS", "writable"),
        ("FASPQ_PREPOST_PROGRAMS", "prog"),
        ("FASP_KNOWN_HOSTS", "known_hosts"),
    )
    dirs = {name: str(site[key]) for name, key in names}
    return worker_factory("var", concurrency=1, **dirs)


def test_prepost_program_cannot_read_the_workers_initial_environment(worker, server, site, redis_server):  # noqa: F811
    src = site["readable"] / "snoop.bin"
    make_file(src, 50_000)
    result = submit(upload(server, [src], "snoop", pre_post_command_path=str(site["prog"]))).wait(timeout=60)
    assert result["ok"], result
    assert_same_file(src, server.docroot / "snoop" / src.name)
    dump = site["dump"].read_text()
    assert f"FASP_KNOWN_HOSTS={site['known_hosts']}" in dump, dump[:500]  # it did read the worker's block
    assert SECRET_KEY not in dump, "the shared key is readable in an ancestor's /proc/PID/environ"
    assert redis_server.password not in dump, "the Redis password is readable in /proc/PID/environ"
    assert server.password not in dump, "the transfer's SSH password is readable in the engine's /proc/PID/environ"


def test_upload_root_read_as_a_flag_runs_no_forbidden_program(worker, server, site):  # noqa: F811
    src = site["readable"] / "flag.bin"
    make_file(src, 20_000)
    # two sources: the second is read as the destination, the "root" as -e
    order = fm.FileUpload(
        source_paths=[str(src), str(site["readable"])],
        dest_user=server.user,
        dest_host=server.host,
        dest_pass=server.password,
        options=options(server, destination_root=f"-e{site['forbidden']}"),
    )
    result = submit(order).wait(timeout=60)
    assert not site["ran"].exists(), f"a program outside FASPQ_PREPOST_PROGRAMS ran ({result})"
    assert result["ok"], result  # the root is an ordinary remote directory named "-e..." in the docroot
    landed = list(server.docroot.rglob("flag.bin"))
    assert landed and all(p.relative_to(server.docroot).parts[0] == "-e" for p in landed), landed
    for copy in landed:
        assert_same_file(src, copy)


def test_download_cannot_plant_a_link_out_of_the_writable_directories(worker, server, site):  # noqa: F811
    victim_dir = site["progs"]  # outside FASPQ_WRITE_DIRS
    (server.docroot / "one").mkdir(exist_ok=True)
    (server.docroot / "one" / "d").symlink_to(victim_dir)  # the remote side's doing
    make_file(server.docroot / "two" / "d" / "planted.sh", 3_000)
    local = site["writable"] / "incoming"
    first = submit(download(server, ["one/d"], local, symlink_policy=fm.SymlinkPolicy.COPY)).wait(timeout=60)
    second = submit(download(server, ["two/d"], local, symlink_policy=fm.SymlinkPolicy.COPY)).wait(timeout=60)
    assert not (victim_dir / "planted.sh").exists(), f"written outside FASPQ_WRITE_DIRS ({first}, {second})"
    for result in (first, second):
        assert not result["ok"] and "not allowed by worker policy FASPQ_WRITE_DIRS" in result["reason"], result
    assert not (local / "d").is_symlink()


def test_source_prefix_cannot_climb_out_of_the_readable_directories(worker, server, site):  # noqa: F811
    secret = site["progs"] / "worker-secret.txt"  # beside the readable directory, not in it
    make_file(secret, 4_000)
    order = upload(server, ["progs/worker-secret.txt"], "prefix", source_prefix=f"{site['readable']}/..")
    result = submit(order).wait(timeout=60)
    assert not list(server.docroot.rglob("worker-secret.txt")), f"a file outside FASPQ_READ_DIRS was sent ({result})"
    assert not result["ok"] and "not allowed by worker policy FASPQ_READ_DIRS" in result["reason"], result
