"""Issue 11: what a signed order may make a worker do is the operator's call, not the order's.

The orders here are signed (a client holding the shared key: a compromised
submitting application, say) and ask for what the worker's policy does not
allow: a ``-e`` program, a local file outside the readable directories, a
download outside the writable ones, extra flags, no host-key check, ``-f``,
``-L``, a rate above the queue's cap, a file added later from elsewhere. Each
must fail at once (no retry, nothing transferred, nothing run) with the rule
named. And a ``-e`` program the operator did allow sees none of the worker's
secrets in its environment.
"""

from __future__ import annotations

import os
import stat
import uuid

import pytest

import faspmanager as fm
from tasks.client import submit
from tests.support.files import assert_same_file
from tests.workers.conftest import SECRET_KEY, faspq, redis_server, server, worker_factory  # noqa: F401
from tests.workers.support import download, make_file, options, upload

pytestmark = pytest.mark.timeout(120)
CANARY = "canary-" + uuid.uuid4().hex


def _script(path, body: str):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    dirs = {name: root / name for name in ("readable", "writable", "elsewhere", "progs")}
    for path in dirs.values():
        path.mkdir()
    dump = dirs["writable"] / "env.txt"  # replaced whole by each run (one may still run as the result comes)
    dirs["allowed"] = _script(dirs["progs"] / "allowed.sh", f"env > {dump}.$$ && mv {dump}.$$ {dump}\n")
    dirs["forbidden"] = _script(dirs["progs"] / "forbidden.sh", f"touch {dirs['elsewhere'] / 'ran'}\n")
    # the attacker's move, timed for the test: once the order is checked, as its engine starts, a file of the
    # outbox becomes a link to the worker's key (any local user who can write the outbox could race it)
    late, key = dirs["readable"] / "late" / "report.bin", dirs["elsewhere"] / "late.key"
    dirs["planter"] = _script(
        dirs["progs"] / "planter.sh",
        f'[ "$TYPE" = Session ] && [ "$STARTSTOP" = Start ] && ln -sfn {key} {late}\nexit 0\n',
    )
    dirs["known_hosts"] = root / "known_hosts"
    dirs["known_hosts"].write_text("")
    return dirs


@pytest.fixture(scope="module")
def worker(worker_factory, site):  # noqa: F811
    return worker_factory(
        "pol",
        concurrency=2,
        FASPQ_READ_DIRS=str(site["readable"]),
        FASPQ_WRITE_DIRS=str(site["writable"]),
        FASPQ_PREPOST_PROGRAMS=f"{site['allowed']}{os.pathsep}{site['planter']}",
        FASPQ_RATE_CAPS="transfers=50000",
        FASP_KNOWN_HOSTS=str(site["known_hosts"]),
        CLOUD_API_TOKEN=CANARY,
    )


def _readable(site, name="f.bin", size=2000):
    path = site["readable"] / name
    make_file(path, size)
    return path


CASES = {
    "prepost-program": ("FASPQ_PREPOST_PROGRAMS", lambda s: {"pre_post_command_path": str(s["forbidden"])}),
    "extra-option": ("FASPQ_EXTRA_OPTIONS", lambda s: {"extra_options": ["--ignore-host-key"]}),
    "ignore-host-key": ("FASPQ_ALLOW_IGNORE_HOST_KEY", lambda s: {"ignore_host_key": True}),
    "config-file": ("FASPQ_CONFIG_FILES", lambda s: {"alternate_config_filename": str(s["elsewhere"] / "a.conf")}),
    "log-dir": ("FASPQ_LOG_DIRS", lambda s: {"local_log_dir": str(s["elsewhere"])}),
    "rate-cap": ("FASPQ_RATE_CAPS", lambda s: {"target_rate_kbps": 400000}),
}


def _fails_with_rule(handle, rule: str) -> dict:
    result = handle.wait(timeout=60)
    assert not result["ok"] and result["attempts"] == 1, result
    assert f"not allowed by worker policy {rule}" in result["reason"], result
    kinds = [e["type"] for e in handle.events(from_start=True)]
    assert "RETRY" not in kinds and "INIT" not in kinds, kinds
    return result


@pytest.mark.parametrize("case", sorted(CASES))
def test_order_options_outside_the_policy_fail_with_the_rule(worker, server, site, case):
    rule, extra = CASES[case]
    src = _readable(site, f"{case}.bin")
    _fails_with_rule(submit(upload(server, [src], case, **extra(site))), rule)
    assert not (server.docroot / case / src.name).exists()
    assert not (site["elsewhere"] / "ran").exists()


def test_upload_of_a_file_outside_the_readable_directories(worker, server, site):
    secret_file = site["elsewhere"] / "worker-only.txt"
    make_file(secret_file, 100)
    _fails_with_rule(submit(upload(server, [secret_file], "steal")), "FASPQ_READ_DIRS")
    assert not (server.docroot / "steal" / secret_file.name).exists()


def test_download_into_a_directory_outside_the_writable_ones(worker, server, site):
    make_file(server.docroot / "drop" / "planted.bin", 100)
    _fails_with_rule(submit(download(server, ["drop/planted.bin"], site["elsewhere"] / "target")), "FASPQ_WRITE_DIRS")
    assert not (site["elsewhere"] / "target" / "planted.bin").exists()


def test_upload_of_a_directory_holding_links_out_of_the_readable_ones(worker, server, site):
    """The attacker (whoever can write the outbox) plants links inside an allowed directory: to a file of the
    worker's (its shared key's stand-in) and to a directory elsewhere, one level down too. The upload fails
    with the rule; nothing reaches the server. A link that stays inside is still followed."""
    make_file(site["elsewhere"] / "shared.key", 64)
    (site["elsewhere"] / "etc").mkdir(exist_ok=True)
    make_file(site["elsewhere"] / "etc" / "passwd", 64)
    for name, target in (("to-file", "shared.key"), ("to-dir", "etc")):
        tree = site["readable"] / f"tree-{name}"
        (tree / "sub").mkdir(parents=True, exist_ok=True)
        make_file(tree / "ok.txt", 10)
        (tree / "sub" / "link").symlink_to(site["elsewhere"] / target)
        _fails_with_rule(submit(upload(server, [tree], f"sym-{name}")), "FASPQ_READ_DIRS")
        assert not list((server.docroot / f"sym-{name}").rglob("*")), f"{name}: something was uploaded"
    tree = site["readable"] / "tree-inside"
    tree.mkdir()
    make_file(site["readable"] / "real.bin", 1000)
    (tree / "link").symlink_to(site["readable"] / "real.bin")
    assert submit(upload(server, [tree], "sym-inside")).wait(timeout=60)["ok"]
    assert_same_file(site["readable"] / "real.bin", server.docroot / "sym-inside" / "tree-inside" / "link")


def test_upload_never_reads_a_link_planted_after_the_order_was_checked(worker, server, site):
    """The outbox is clean when the worker checks the order; as the engine starts, a file in it becomes a
    link to the worker's key. The engine, confined to the policy's directories, refuses it when it follows
    it (41): the key never reaches the server, the outbox's other file does."""
    make_file(site["elsewhere"] / "late.key", 64)
    outbox = site["readable"] / "late"
    make_file(outbox / "good.bin", 30_000)
    make_file(outbox / "report.bin", 64)
    handle = submit(upload(server, [outbox], "late", pre_post_command_path=str(site["planter"])))
    result = handle.wait(timeout=60)
    assert (outbox / "report.bin").is_symlink(), "the planter did not run"
    assert not result["ok"] and result["failed_files"] == [str(outbox / "report.bin")], result
    assert not (server.docroot / "late" / "late" / "report.bin").exists()
    assert_same_file(outbox / "good.bin", server.docroot / "late" / "late" / "good.bin")


def test_download_through_a_link_out_of_the_writable_ones(worker, server, site):
    """The attacker plants a link in the inbox to a directory elsewhere: a download whose files would land
    through it fails with the rule and writes nothing there."""
    make_file(server.docroot / "remote" / "sym" / "planted.bin", 100)
    inbox = site["writable"] / "dl"
    inbox.mkdir()
    victim = site["elsewhere"] / "victim"
    victim.mkdir()
    (inbox / "sym").symlink_to(victim)
    try:
        _fails_with_rule(submit(download(server, ["remote/sym"], inbox)), "FASPQ_WRITE_DIRS")
        assert not list(victim.rglob("*"))
    finally:
        (inbox / "sym").unlink()  # the module's other orders may use the writable directory whole


def test_file_added_from_outside_the_readable_directories_is_refused(worker, server, site):
    inside = _readable(site, "inside.bin", 50_000)
    outside = site["elsewhere"] / "outside.bin"
    make_file(outside, 100)
    (server.docroot / "pers-policy").mkdir(exist_ok=True)
    handle = submit(
        fm.PersistentUpload(
            dest_user=server.user,
            dest_host=server.host,
            dest_pass=server.password,
            options=options(server, destination_root="pers-policy"),
        )
    )
    handle.add_source(str(outside), "outside.bin")
    handle.add_source(str(inside), "inside.bin")
    handle.finish()
    result = handle.wait(timeout=60)
    assert result["ok"], result
    assert_same_file(inside, server.docroot / "pers-policy" / "inside.bin")
    assert not (server.docroot / "pers-policy" / "outside.bin").exists()
    rejected = [e for e in handle.events(from_start=True) if e["type"] == "CONTROL_REJECTED"]
    assert len(rejected) == 1 and "FASPQ_READ_DIRS" in rejected[0]["reason"], rejected


def test_allowed_prepost_program_sees_none_of_the_workers_secrets(worker, server, site, redis_server):  # noqa: F811
    src = _readable(site, "env.bin", 100_000)
    handle = submit(upload(server, [src], "env", pre_post_command_path=str(site["allowed"])))
    result = handle.wait(timeout=60)
    assert result["ok"], result
    assert_same_file(src, server.docroot / "env" / src.name)
    dump = (site["writable"] / "env.txt").read_text()
    names = {line.split("=", 1)[0] for line in dump.splitlines() if "=" in line}
    assert SECRET_KEY not in dump and CANARY not in dump and server.password not in dump
    assert getattr(redis_server, "password", None) is None or redis_server.password not in dump
    assert redis_server.url not in dump and f":{redis_server.port}" not in dump
    assert not [n for n in names if n.startswith(("FASPQ_", "ASPERA_SCP_", "CELERY_"))], sorted(names)
    assert "PATH" in names, dump
    assert f"FASP_KNOWN_HOSTS={site['known_hosts']}" in dump.splitlines()


def test_file_added_to_a_removing_transfer_must_be_writable_too(worker, server, site):
    """remove_files_after_transfer: an added file is deleted by the engine afterwards, so, as for the order's own
    sources, it must lie in a writable directory, not only a readable one (add_source skipped that check)."""
    readable_only = _readable(site, "keep-me.bin", 5000)
    (server.docroot / "pers-remove").mkdir(exist_ok=True)
    handle = submit(
        fm.PersistentUpload(
            dest_user=server.user,
            dest_host=server.host,
            dest_pass=server.password,
            options=options(
                server,
                destination_root="pers-remove",
                remove_files_after_transfer=True,
                source_base=str(site["writable"]),
            ),
        )
    )
    handle.add_source(str(readable_only), "keep-me.bin")
    handle.finish()
    handle.wait(timeout=60)
    assert readable_only.exists(), "a file outside FASPQ_WRITE_DIRS was removed"
    assert not (server.docroot / "pers-remove" / "keep-me.bin").exists()
    rejected = [e for e in handle.events(from_start=True) if e["type"] == "CONTROL_REJECTED"]
    assert len(rejected) == 1 and "FASPQ_WRITE_DIRS" in rejected[0]["reason"], rejected
