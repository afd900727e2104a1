"""Every command line aspera-cli's direct agent builds from a transfer spec (tests/compat/ascli_fields.py)
runs our fasp-ascp against a real fasp-server: never usage error 8, the bytes arrive (or, where the field says
otherwise, do not), and the field's effect is checked where it has one on disk, in the management events
(-M, as ascli reads them) or on stderr (the note for what cannot be done here)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.compat.ascli_fields import FIELDS
from tests.engine.helpers import MgmtListener, run_ascp
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.ports import free_port
from tests.support.programs import ENGINE
from tests.support.servers import start_fasp_server

pytestmark = pytest.mark.timeout(120)

QUIET = True  # ascli's direct agent runs ascp with -q and reads progress from -M


def _convert(convert, value):
    """ascli's x-cli-convert (command_line_builder.rb)."""
    if isinstance(convert, dict):
        return convert[value]
    if convert == "remove_hyphen":
        return value.replace("-", "")
    if convert == "base64":
        return base64.b64encode(value.encode()).decode()
    if convert == "json64":
        return base64.b64encode(json.dumps(value).encode()).decode()
    return value


def ascli_command_line(ts: dict, mgmt_port: int, list_dir: Path) -> tuple[list[str], dict]:
    """argv and environment as ascli builds them from the transfer spec ``ts``: the table's fields in order,
    then --dest64, the file (pair) list and the base64 destination; -q and -M in front."""
    args, env = [], {}
    for entry in FIELDS:
        if entry["field"] not in ts:
            continue
        value = _convert(entry["convert"], ts[entry["field"]])
        if entry["kind"] == "env":
            env[entry["cli"]] = str(value)
        elif entry["kind"] == "switch":
            args += [entry["cli"]] if value is True else []
        else:
            for item in value if isinstance(value, list) else [value]:
                args += [entry["cli"], str(item)]
    args.append("--dest64")
    paths = ts.get("paths", [])
    if paths:
        pairs = any("destination" in p for p in paths)
        lines = [line for p in paths for line in ([p["source"], p["destination"]] if pairs else [p["source"]])]
        listing = list_dir / f"list-{len(list(list_dir.iterdir()))}.txt"
        listing.write_text("\n".join(lines))  # as ascli writes it: no final newline
        args.append(f"--file-{'pair-' if pairs else ''}list={listing}")
    args.append(base64.b64encode(ts["destination_root"].encode()).decode())
    return ["-q", "-M", str(mgmt_port), *args], env


class Run:
    """One transfer as ascli would start it, and what it left."""

    def __init__(self, server, tmp: Path, name: str) -> None:
        self.server, self.tmp = server, tmp
        self.case = name
        self.src_dir = tmp / "src"
        self.src = random_file(self.src_dir / "small.bin", 30_000)
        self.digest = sha256(self.src)
        self.remote_dir = server.docroot / name
        self.remote_dir.mkdir(parents=True)
        self.local_dir = tmp / "down"
        self.local_dir.mkdir()
        self.archive = tmp / "archive"
        (tmp / "lists").mkdir()
        self.ts = {
            "direction": "send",
            "remote_host": server.host,
            "remote_user": server.user,
            "ssh_port": server.port,
            "remote_password": server.password,
            "fasp_port": "FREE_UDP",
            "destination_root": f"/{name}",
            "paths": [{"source": str(self.src)}],
        }
        self.events: list = []
        self.proc: subprocess.CompletedProcess | None = None

    def resolve(self, value):
        names = {
            "FREE_UDP": free_port(socket.SOCK_DGRAM),
            "ARCHIVE": str(self.archive),
            "SRCDIR": str(self.src_dir),
            "SRCDIR64": base64.b64encode(str(self.src_dir).encode()).decode(),
            "HOST": self.server.host,
            "PASSWORD": self.server.password,
            "USER": self.server.user,
            "PORT": self.server.port,
            "FINGERPRINT": self.server.host_key_fingerprint,
            "TAGS64": base64.b64encode(b'{"job":"j-64"}').decode(),
        }
        return names.get(value, value) if isinstance(value, str) else value

    def download(self) -> None:
        remote_src = random_file(self.server.docroot / "dl" / self.case / "small.bin", 30_000)
        self.src, self.digest = remote_src, sha256(remote_src)
        self.ts.update(
            direction="receive", destination_root=str(self.local_dir), paths=[{"source": f"/dl/{self.case}/small.bin"}]
        )

    @property
    def landed_dir(self) -> Path:
        return self.local_dir if self.ts["direction"] == "receive" else self.remote_dir

    def go(self, extra_env: dict | None = None, on_start=None) -> subprocess.CompletedProcess:
        ts = {k: self.resolve(v) for k, v in self.ts.items()}
        listener = MgmtListener()
        try:
            args, env = ascli_command_line(ts, listener.port, self.tmp / "lists")
            proc = subprocess.Popen(
                [*ENGINE, *args],
                env={**os.environ, **env, **(extra_env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            if on_start:
                on_start(listener)
            out, err = proc.communicate(timeout=90)
            listener.closed.wait(10)
            self.events = [frame for _, frame in listener.events]
        finally:
            listener.close()
        self.proc = subprocess.CompletedProcess(args, proc.returncode, out, err)
        assert proc.returncode != 8, f"usage error for {args}: {err.decode(errors='replace')}"
        return self.proc

    def ok(self) -> None:
        assert self.proc.returncode == 0, (self.proc.args, self.proc.stderr.decode(errors="replace")[-1500:])

    def event(self, kind: str):
        found = [e for e in self.events if e.type == kind]
        assert found, f"no {kind} event in {[e.type for e in self.events]}"
        return found[-1]

    def arrived(self, path: Path | None = None) -> None:
        path = path or self.landed_dir / "small.bin"
        assert path.is_file(), f"{path} missing; {sorted(p.name for p in path.parent.glob('*'))}"
        assert path.stat().st_size == 30_000 and sha256(path) == self.digest

    def noted(self, *words: str) -> None:
        err = self.proc.stderr.decode(errors="replace")
        assert "note:" in err and all(w in err for w in words), err


def _cases(sshd: bool = False):
    for entry in FIELDS:
        for value in entry["values"] if entry.get("sshd", False) == sshd else ():
            yield pytest.param(entry, value, id=f"{entry['field']}={value}")


@pytest.mark.parametrize("entry,value", list(_cases(sshd=True)))
def test_key_fields_under_stock_sshd(entry, value, openssh_server, tmp_path):
    """ssh_private_key (ASPERA_SCP_KEY) and ssh_private_key_path (-i): key authentication as ascli passes it."""
    server = openssh_server
    src = random_file(tmp_path / "src" / "k.bin", 20_000)
    (server.docroot / "keyed").mkdir()
    (tmp_path / "lists").mkdir()
    key = {"KEY": server.identity.read_text(), "KEYFILE": str(server.identity)}[value]
    ts = {
        "direction": "send",
        "remote_host": server.host,
        "remote_user": "root",
        "ssh_port": server.port,
        entry["field"]: key,
        "destination_root": "/keyed",
        "paths": [{"source": str(src)}],
    }
    listener = MgmtListener()
    try:
        args, env = ascli_command_line(ts, listener.port, tmp_path / "lists")
        proc = subprocess.run([*ENGINE, *args], env=server.env({**os.environ, **env}), capture_output=True, timeout=90)
    finally:
        listener.close()
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert_same_file(src, server.docroot / "keyed" / "k.bin")
    assert "PRIVATE KEY" not in " ".join(args)  # the key itself travels in the environment only


@pytest.mark.parametrize("entry,value", list(_cases()))
def test_every_ascli_field(entry, value, fasp_server_module, tmp_path):
    field = entry["field"]
    run = Run(fasp_server_module, tmp_path, f"{field}-{abs(hash(str(value))) % 10**8}")
    run.ts.update({k: v for k, v in entry.get("with_", {}).items()})
    run.ts[field] = value
    check = EFFECTS.get(field, _arrives)
    check(run, value)


def _arrives(run: Run, value) -> None:
    run.go()
    run.ok()
    run.arrived()


def _create_dir(run, value):
    """ascli hands its paths over in a file list, which implies -d (ascp --help: "Create target directory,
    implied for file/file-pair lists"): the destination directory is made with or without create_dir."""
    run.ts["destination_root"] += "/newdir"
    run.go()
    run.ok()
    run.arrived(run.remote_dir / "newdir" / "small.bin")


def _direction(run, value):
    if value == "receive":
        run.download()
    _arrives(run, value)
    assert run.event("INIT").get("Direction") == ("Receive" if value == "receive" else "Send")


def _excluded(run, value):
    run.go()
    run.ok()
    assert not (run.remote_dir / "small.bin").exists()  # a fresh file is newer than a day ago


def _checksum(run, value):
    _arrives(run, value)
    stop = run.event("STOP")
    if value != "none":
        algorithm = value.replace("-", "")
        assert stop.get("FileChecksum") == hashlib.new(algorithm, run.src.read_bytes()).hexdigest()


def _cipher(run, value):
    _arrives(run, value)
    init = run.event("INIT")
    assert init.bool("Encryption") == (value != "none")
    if value.endswith("cfb"):
        run.noted("CFB")


def _notes(words):
    def check(run, value):
        _arrives(run, value)
        run.noted(*words)
        assert b"psecret" not in run.proc.stderr  # a proxy URL's password is never repeated

    return check


def _http_fallback(run, value):
    _arrives(run, value)
    if value == "force":
        run.noted("-y F")


def _moved(run, value):
    run.archive.mkdir()
    _arrives(run, value)
    assert not run.src.exists()
    assert sha256(run.archive / "small.bin") == run.digest


def _overwrite(run, value):
    old = run.remote_dir / "small.bin"
    old.write_bytes(b"old")
    os.utime(old, (1_000_000_000, 1_000_000_000))  # older than the source
    run.go()
    run.ok()
    if value == "never":
        assert old.read_bytes() == b"old"
    else:
        run.arrived()


def _precalc(run, value):
    _arrives(run, value)
    assert run.event("NOTIFICATION").int("PreTransferBytes") == 30_000


def _mtime(run, value):
    os.utime(run.src, (1_100_000_000, 1_000_000_000))
    _arrives(run, value)
    assert os.stat(run.remote_dir / "small.bin").st_mtime == 1_000_000_000


def _policy(run, value):
    _arrives(run, value)
    assert run.event("INIT").get("Policy") == value.upper()


def _removed(run, value):
    _arrives(run, value)
    assert not run.src.exists()


def _remove_skipped(run, value):
    old = run.remote_dir / "small.bin"
    old.write_bytes(b"old")
    run.go()
    run.ok()
    assert old.read_bytes() == b"old" and not run.src.exists()  # skipped (never), and removed all the same


def _saved(run, value):
    (run.remote_dir / "small.bin").write_bytes(b"old")
    _arrives(run, value)
    kept = [p for p in run.remote_dir.iterdir() if p.name != "small.bin"]
    assert [p.read_bytes() for p in kept] == [b"old"]


def _source_root(run, value):
    run.ts["paths"] = [{"source": "small.bin"}]
    _arrives(run, value)


def _src_base(run, value):
    run.src_dir.joinpath("sub").mkdir()
    run.src = run.src.rename(run.src_dir / "sub" / "small.bin")
    run.ts["paths"] = [{"source": str(run.src)}]
    run.go()
    run.ok()
    run.arrived(run.remote_dir / "sub" / "small.bin")  # the base is stripped: no src/ level


def _tags(run, value):
    _arrives(run, value)
    expected = value if isinstance(value, dict) else {"job": "j-64"}
    for kind in ("INIT", "SESSION", "STOP", "DONE"):
        assert json.loads(run.event(kind).get("Tags")) == expected, kind
    assert all(e.get("Tags") is None for e in run.events if e.type == "STATS")


def _rate(run, value):
    _arrives(run, value)
    assert run.event("INIT").int("Rate") == value


def _keepalive(run, value):
    run.go(on_start=lambda listener: listener.send("DONE"))
    run.ok()
    run.arrived()


def _local_docroot(run, value):
    run.ts["paths"] = [{"source": "/small.bin"}]  # a path in the local docroot
    run.go(extra_env={"FASP_LOCAL_DOCROOT": str(run.src_dir)})
    run.ok()
    run.arrived()


def _content_protection(run, value):
    run.go()
    run.ok()
    stored = run.remote_dir / "small.bin.aspera-env"
    assert stored.is_file() and stored.stat().st_size > 30_000
    assert run.src.read_bytes() not in stored.read_bytes()


EFFECTS = {
    "apply_local_docroot": _local_docroot,
    "cipher": _cipher,
    "content_protection": _content_protection,
    "content_protection_password": _content_protection,
    "create_dir": _create_dir,
    "direction": _direction,
    "exclude_newer_than": _excluded,
    "file_checksum": _checksum,
    "http_fallback": _http_fallback,
    "move_after_transfer": _moved,
    "overwrite": _overwrite,
    "precalculate_job_size": _precalc,
    "preserve_modification_time": _mtime,
    "preserve_times": _mtime,
    "rate_policy": _policy,
    "remove_after_transfer": _removed,
    "remove_skipped": _remove_skipped,
    "save_before_overwrite": _saved,
    "source_root": _source_root,
    "src_base": _src_base,
    "src_base64": _src_base,
    "tags": _tags,
    "tags64": _tags,
    "target_rate_kbps": _rate,
    "keepalive": _keepalive,
    "use_system_ssh": _notes(["-SSH"]),
    "ssh_args": _notes(["--ssh-arg"]),
    "proxy": _notes(["--proxy"]),
    "wss_enabled": _notes(["--ws-connect"]),
}


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_dest64_and_file_pair_list(direction, fasp_server_module, tmp_path):
    """ascli's own forms end to end: a pair list (with subdirectories on the destination side) and --dest64."""
    run = Run(fasp_server_module, tmp_path, f"pairs-{direction}")
    second = random_file(tmp_path / "src" / "two.bin", 12_345)
    if direction == "upload":
        run.ts["paths"] = [
            {"source": str(run.src), "destination": "a/one.bin"},
            {"source": str(second), "destination": "b/two.bin"},
        ]
        sources = {"a/one.bin": run.src, "b/two.bin": second}
    else:
        run.download()
        there = fasp_server_module.docroot / "dl" / run.case / "two.bin"
        there.write_bytes(second.read_bytes())
        run.ts["paths"] = [
            {"source": f"/dl/{run.case}/small.bin", "destination": "a/one.bin"},
            {"source": f"/dl/{run.case}/two.bin", "destination": "b/two.bin"},
        ]
        sources = {"a/one.bin": run.src, "b/two.bin": there}
    run.go()
    run.ok()
    assert "--dest64" in run.proc.args and any(a.startswith("--file-pair-list=") for a in run.proc.args)
    for rel, source in sources.items():
        assert_same_file(source, run.landed_dir / rel)
    assert sorted(str(p.relative_to(run.landed_dir)) for p in run.landed_dir.rglob("*.bin")) == sorted(sources)


@pytest.mark.slow
def test_tags_reach_the_peer(tmp_path):
    """--tags travel to the server: its session log (fasp-server --log-dir, asked for with -R) names them."""
    logs = tmp_path / "logs"
    with start_fasp_server(tmp_path / "server", extra_args=["--log-dir", str(logs)]) as server:
        src = random_file(tmp_path / "t.bin", 5000)
        proc = run_ascp(
            [
                "-q",
                "-P",
                str(server.port),
                "-R",
                "x",
                "--tags",
                '{"job": "tagged-42"}',
                str(src),
                f"{server.user}@{server.host}:/t.bin",
            ],
            server.env(),
        )
        assert proc.returncode == 0, proc.stderr
        assert_same_file(src, server.docroot / "t.bin")
    logged = "".join(p.read_text() for p in logs.rglob("*") if p.is_file())
    assert 'tags {"job": "tagged-42"}' in logged


def test_debug_levels_log_on_stderr(fasp_server_module, tmp_path):
    """-D, -DD: the engine's own log on stderr (nothing without it), the transfer unchanged."""
    server = fasp_server_module
    src = random_file(tmp_path / "d.bin", 5000)
    logged = {}
    for flag in ("", "-D", "-DD"):
        target = f"{server.user}@{server.host}:/debug{flag}.bin"
        proc = run_ascp(["-q", "-P", str(server.port), *([flag] if flag else []), str(src), target], server.env())
        assert proc.returncode == 0, proc.stderr
        assert_same_file(src, server.docroot / f"debug{flag}.bin")
        logged[flag] = [line for line in proc.stderr.decode().splitlines() if line.startswith("fasp-ascp: ")]
    assert logged[""] == [] and logged["-D"] and len(logged["-DD"]) >= len(logged["-D"])
    assert server.password not in "".join(logged["-DD"])
