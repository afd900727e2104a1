"""-f FILE (aspera.conf): the parser's strictness, and real transfers that only pass if the file is read."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from fasp.options import asperaconf
from fasp.options.flags import parse
from faspmanager.codes import EngineError
from tests.engine.helpers import MgmtListener, fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, random_file
from tests.support.programs import ENGINE
from tests.support.servers import start_fasp_server

SRC, DEST = "/etc/hostname", "bob@h:/dest"


def _flow(side: str, target: int | None = None, cap: int | None = None, policy: str | None = None) -> str:
    rate = "".join(f"<{k}>{v}</{k}>" for k, v in (("default", target), ("cap", cap)) if v is not None)
    pol = f"<policy><default>{policy}</default></policy>" if policy else ""
    return f"<{side}><bandwidth><flow><target_rate>{rate}</target_rate>{pol}</flow></bandwidth></{side}>"


def _write(path, default: str, outside: str = "") -> str:
    path.write_text(f'<?xml version="1.0"?>\n<CONF version="2">\n{outside}<default>\n{default}\n</default>\n</CONF>\n')
    return str(path)


_FS, _SF = "<file_system>", "</file_system>"
_ROOT = "<file_system><access><paths><path><absolute>{}</absolute></path></paths></access></file_system>"


FULL = f"""<file_system>
  <access><paths><path><absolute>/srv/local</absolute></path></paths></access>
  <overwrite>deny</overwrite>
  <partial_file_suffix>.part</partial_file_suffix>
  <file_checksum>sha256</file_checksum>
  <read_block_size>65536</read_block_size>
  <write_block_size>0</write_block_size>
</file_system>
<transfer>
  {_flow("in", 3000, policy="low")}
  {_flow("out", 7000, cap=6000, policy="fixed")}
  <protocol_options><datagram_size>9000</datagram_size></protocol_options>
  <encryption><cipher>aes256</cipher></encryption>
  <resume_policy>sparse_checksum</resume_policy>
</transfer>
<logging><log_dir>/tmp/fasp-logs</log_dir></logging>"""


def test_every_setting_of_the_subset_becomes_a_default(tmp_path):
    conf = _write(tmp_path / "a.conf", FULL)
    up = parse(["-f", conf, "--apply-local-docroot", SRC, DEST], {})
    assert (up.target_kbps, up.policy) == (6000, "fixed")  # <out>, its default bounded by <cap>
    assert up.target_set  # the file's default target is set as -l's is: the initial rate
    assert (up.overwrite, up.partial_suffix, up.file_checksum) == ("never", ".part", "sha256")
    assert (up.read_size, up.write_size, up.datagram_size) == (65536, 0, 9000)
    assert (up.cipher, up.key_bytes, up.resume) == ("aes256", 32, 2)
    assert (up.local_docroot, up.local_log_dir) == ("/srv/local", "/tmp/fasp-logs")
    down = parse(["-f", conf, "h:/x", str(tmp_path)], {})
    assert (down.direction, down.target_kbps, down.policy) == ("recv", 3000, "low")  # <in>
    assert parse(["-f", conf, "--mode=recv", "--host=h", "/x", str(tmp_path)], {}).target_kbps == 3000


def test_command_line_flags_win_over_the_file(tmp_path):
    conf = _write(tmp_path / "a.conf", FULL)
    cfg = parse(
        [
            "-f",
            conf,
            "-l",
            "500",
            "--policy=fair",
            "--overwrite=always",
            "--partial-file-suffix=.x",
            "--file-checksum=md5",
            "-Z",
            "1400",
            "-T",
            "-k",
            "0",
            "-L",
            "/tmp",
            SRC,
            DEST,
        ],
        {},
    )
    assert (cfg.target_kbps, cfg.policy, cfg.overwrite, cfg.partial_suffix) == (500, "fair", "always", ".x")
    assert (cfg.file_checksum, cfg.datagram_size, cfg.key_bytes, cfg.resume) == ("md5", 1400, 0, 0)
    assert cfg.local_log_dir == "/tmp"
    # <cap> is a ceiling, not a default: -l above it is brought down to it
    assert parse(["-f", conf, "-l", "900000", SRC, DEST], {}).target_kbps == 6000


def test_server_mode_takes_docroot_and_rate_cap(tmp_path):
    conf = _write(tmp_path / "s.conf", _ROOT.format("/srv/root") + f"<transfer>{_flow('in', cap=5000)}</transfer>")
    cfg = parse(["--server", "-f", conf], {"FASP_DOCROOT": "/elsewhere"})
    assert (cfg.docroot, cfg.rate_cap_kbps) == ("/srv/root", 5000)
    cfg = parse(["--server", "-f", conf, "--docroot", "/flag", "--rate-cap", "70"], {})
    assert (cfg.docroot, cfg.rate_cap_kbps) == ("/flag", 70)
    split = _write(tmp_path / "split.conf", f"<transfer>{_flow('in', cap=5000)}{_flow('out', cap=6000)}</transfer>")
    with pytest.raises(EngineError, match="one rate cap") as info:
        parse(["--server", "-f", split], {})
    assert info.value.code == 8


def test_ibm_style_file_with_other_sections_and_empty_values(tmp_path, capsys):
    """Sections outside <default> are skipped aloud; an empty element means "not set", as IBM writes them."""
    conf = _write(
        tmp_path / "ibm.conf",
        f"<transfer>{_flow('out', cap='')}</transfer>"
        "<file_system><overwrite>allow</overwrite><file_checksum>any</file_checksum></file_system>",
        outside="<server><server_name>x</server_name></server>\n<!-- a comment -->\n",
    )
    cfg = parse(["-f", conf, SRC, DEST], {})
    assert (cfg.target_kbps, cfg.overwrite, cfg.file_checksum) == (1_000_000, "diff", "none")
    assert "ibm.conf:3: <server> skipped" in capsys.readouterr().err


@pytest.mark.parametrize(
    "default, needle",
    [
        (
            "<transfer><out><bandwidth><flow><target_rate><defualt>5</defualt></target_rate></flow></bandwidth></out>"
            "</transfer>",
            ":4: <defualt> is not a setting we read inside <target_rate>",
        ),
        ("\n<file_sytem/>", ":5: <file_sytem> is not a setting we read inside <default>"),
        (
            "<logging><log_dir>/x</log_dir></logging>\n<logging><log_dir>/y</log_dir></logging>",
            ":5: <log_dir> is given twice",
        ),
        (_ROOT.format("/x").replace("<absolute>", '<absolute peer_ip="1.2.3.4">'), "attributes are not supported"),
        ("<transfer>fast</transfer>", "<transfer> is a section"),
        (f"{_FS}<overwrite><x/></overwrite>{_SF}", "<overwrite> holds a value"),
        (f"<transfer>{_flow('out', 'fast')}</transfer>", "<default>: 'fast' is not an integer"),
        (f"<transfer>{_flow('in', 0)}</transfer>", "<default>: 0 is out of range"),
        (f"<transfer>{_flow('in', policy='greedy')}</transfer>", "'greedy' is not one of"),
        ("<transfer><resume_policy>3</resume_policy></transfer>", "'3' is not one of none, attributes"),
        (f"{_FS}<overwrite>sometimes</overwrite>{_SF}", "<overwrite>: 'sometimes'"),
        (f"{_FS}<partial_file_suffix>a/b</partial_file_suffix>{_SF}", "may not contain '/'"),
        (_ROOT.format("rel/dir"), "'rel/dir' is not an absolute path"),
        ("<transfer><protocol_options><datagram_size>10</datagram_size></protocol_options></transfer>", "out of range"),
        ("<transfer><encryption><cipher>rot13</cipher></encryption></transfer>", "'rot13' is not one of"),
    ],
)
def test_unknown_or_bad_elements_are_usage_errors_with_their_line(tmp_path, default, needle):
    conf = _write(tmp_path / "bad.conf", default)
    with pytest.raises(EngineError) as info:
        asperaconf.load(conf)
    assert info.value.code == 8 and needle in info.value.description, info.value.description
    assert "bad.conf:" in info.value.description


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"<CONF version='2'><default></CONF>", "bad.conf:1:"),  # mismatched tag, with its position
        (b"", "not well-formed"),
        (b'<!DOCTYPE CONF [<!ENTITY a "aaaa">]><CONF/>', "DTDs and entities are not allowed"),
        (b'<!DOCTYPE CONF SYSTEM "file:///etc/passwd"><CONF/>', "DTDs and entities are not allowed"),
        (b"<CONF version='2'><default>&lol;</default></CONF>", "undefined entity"),
        (b"<conf><default/></conf>", 'root element must be <CONF version="2">'),
        (b"<CONF version='3'/>", 'root element must be <CONF version="2">'),
        (b"<CONF version='2'>" + b" " * asperaconf.MAX_BYTES + b"</CONF>", "larger than"),
        (b"<?xml version='1.0' encoding='klingon'?><CONF/>", "bad.conf"),
    ],
    ids=["mismatched", "empty", "entity", "external-dtd", "undefined-entity", "root", "version", "too-big", "encoding"],
)
def test_malformed_or_hostile_xml_is_usage_error_8(tmp_path, content, needle):
    (tmp_path / "bad.conf").write_bytes(content)
    with pytest.raises(EngineError) as info:
        asperaconf.load(str(tmp_path / "bad.conf"))
    assert info.value.code == 8 and needle in info.value.description, info.value.description


def test_missing_file_is_error_4_and_the_engine_exits_with_the_codes(tmp_path):
    with pytest.raises(EngineError, match="cannot read") as info:
        parse(["-f", str(tmp_path / "nope.conf"), SRC, DEST], {})
    assert info.value.code == 4
    assert run_ascp(["-f", str(tmp_path / "nope.conf"), SRC, DEST], dict(os.environ), timeout=30).returncode == 4
    typo = _write(
        tmp_path / "typo.conf", "<transfer><in><bandwidth><flow><target_rat/></flow></bandwidth></in></transfer>"
    )
    result = run_ascp(["-f", typo, SRC, DEST], dict(os.environ), timeout=30)
    assert result.returncode == 8 and b"typo.conf:4: <target_rat>" in result.stderr


_FRAGMENTS = [
    "<CONF version='2'>",
    "</CONF>",
    "<default>",
    "</default>",
    "<transfer>",
    "</transfer>",
    "<in>",
    "</in>",
    "<bandwidth>",
    "<flow>",
    "</flow>",
    "<target_rate>",
    "<default>5</default>",
    "<cap>",
    "</cap>",
    "7",
    "-1",
    "x",
    "<file_system>",
    "<overwrite>deny</overwrite>",
    "<!DOCTYPE a>",
    "&a;",
    "&amp;",
    "<![CDATA[<x>]]>",
    "<?pi x?>",
    "<!-- c -->",
    " ",
    "\n",
    "\x00",
    "\udcff",
    "é",
    "<a b='c'>",
    "</a>",
    "<absolute>/r</absolute>",
    "<resume_policy>none</resume_policy>",
]


@settings(max_examples=250, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map(
            lambda parts: "".join(parts).encode("utf-8", "surrogateescape")
        ),
    )
)
def test_garbage_never_raises_anything_but_usage_error_8(content):
    with tempfile.NamedTemporaryFile(suffix=".conf") as handle:
        handle.write(content)
        handle.flush()
        for argv in (["-f", handle.name, SRC, DEST], ["--server", "-f", handle.name]):
            try:
                parse(argv, {})
            except EngineError as exc:
                assert exc.code == 8, exc


# ---- through the real engine: each of these fails if -f is ignored ----


def _measured_kbps(args: list[str], env: dict) -> tuple[float, object]:
    """The rate one file really moved at, from its STOP event (bytes over the file's own elapsed time)."""
    mgr = MgmtListener()
    try:
        result = run_ascp(["-M", str(mgr.port), *args], env, timeout=60)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        stop = mgr.wait_for(lambda f: f.type == "STOP", 10)
        assert stop is not None, mgr.types()
        return stop[1].int("Size") * 8000 / stop[1].int("Elapsedusec"), result
    finally:
        mgr.close()


RATE = 4000  # kbps: a 1.5 MB file takes 3 s; unlimited on loopback it takes a small fraction of that


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_file_target_rate_limits_a_fixed_transfer(fasp_server_module, tmp_path, direction):
    server = fasp_server_module
    # only the side this direction uses is slow, so a mix-up of <in> and <out> fails too
    slow, fast = ("out", "in") if direction == "upload" else ("in", "out")
    conf = _write(
        tmp_path / "rate.conf",
        f"<transfer>{_flow(slow, RATE, policy='fixed')}{_flow(fast, 1_000_000, policy='fair')}</transfer>",
    )
    if direction == "upload":
        src = random_file(tmp_path / "r.bin", 1_500_000)
        paths, out = [str(src), remote(server, "/conf-rate-up.bin")], server.docroot / "conf-rate-up.bin"
    else:
        src = random_file(server.docroot / "conf-rate-down.bin", 1_500_000)
        paths, out = [remote(server, "/conf-rate-down.bin"), str(tmp_path / "down.bin")], tmp_path / "down.bin"
    kbps, _ = _measured_kbps(fasp_args(server, "-f", conf, *paths), server.env())
    assert kbps < RATE * 1.5, kbps
    assert_same_file(src, out)
    if direction == "upload":  # -l on the command line wins over the file
        out.unlink()
        kbps, _ = _measured_kbps(fasp_args(server, "-f", conf, "-l", "400000", *paths), server.env())
        assert kbps > RATE * 2, kbps
        assert_same_file(src, out)


@pytest.mark.timeout(60)
def test_file_local_docroot_confines_local_paths(fasp_server_module, tmp_path):
    server = fasp_server_module
    local_root = tmp_path / "local-root"
    src = random_file(local_root / "in" / "l.bin", 12_345)
    conf = _write(tmp_path / "root.conf", _ROOT.format(local_root))
    env = {k: v for k, v in server.env().items() if k != "FASP_LOCAL_DOCROOT"}
    args = ("-f", conf, "--apply-local-docroot")
    result = run_ascp(fasp_args(server, *args, "/in/l.bin", remote(server, "/conf-l.bin")), env)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert_same_file(src, server.docroot / "conf-l.bin")
    result = run_ascp(fasp_args(server, *args, remote(server, "/conf-l.bin"), "/back.bin"), env)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert_same_file(src, local_root / "back.bin")
    escape = run_ascp(fasp_args(server, *args, remote(server, "/conf-l.bin"), "/../escaped.bin"), env)
    assert escape.returncode == 41 and not (tmp_path / "escaped.bin").exists()


@pytest.mark.timeout(60)
def test_file_overwrite_deny_keeps_existing_files_and_the_flag_wins(fasp_server_module, tmp_path):
    server = fasp_server_module
    conf = _write(tmp_path / "ow.conf", "<file_system><overwrite>deny</overwrite></file_system>")
    src = random_file(tmp_path / "new.bin", 30_000)
    remote_old, local_old = server.docroot / "conf-ow.bin", tmp_path / "local-ow.bin"
    random_file(server.docroot / "conf-ow-src.bin", 20_000)
    for path in (remote_old, local_old):
        path.write_bytes(b"old content")
    for paths in ([str(src), remote(server, "/conf-ow.bin")], [remote(server, "/conf-ow-src.bin"), str(local_old)]):
        result = run_ascp(fasp_args(server, "-f", conf, *paths), server.env())
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert remote_old.read_bytes() == b"old content" and local_old.read_bytes() == b"old content"
    for paths in ([str(src), remote(server, "/conf-ow.bin")], [remote(server, "/conf-ow-src.bin"), str(local_old)]):
        result = run_ascp(fasp_args(server, "-f", conf, "--overwrite=always", *paths), server.env())
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert_same_file(src, remote_old)
    assert_same_file(server.docroot / "conf-ow-src.bin", local_old)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_server_mode_rate_cap_from_the_file(tmp_path):
    """fasp-server runs ``fasp-ascp -f FILE --server ...``: the file's <cap> holds a client asking for more."""
    conf = _write(tmp_path / "server.conf", f"<transfer>{_flow('in', cap=RATE)}{_flow('out', cap=RATE)}</transfer>")
    with start_fasp_server(tmp_path / "srv", engine_command=[*ENGINE, "-f", conf]) as server:
        src = random_file(tmp_path / "capped.bin", 1_500_000)
        kbps, _ = _measured_kbps(
            fasp_args(server, "-l", "400000", "--policy=fixed", str(src), remote(server, "/capped.bin")), server.env()
        )
        assert kbps < RATE * 1.5, kbps
        assert_same_file(src, server.docroot / "capped.bin")


@pytest.mark.timeout(60)
def test_faspmanager_alternate_config_filename(fasp_server_module, tmp_path):
    """TransferOptions(alternate_config_filename=...) reaches the engine as -f and the file takes effect."""
    import faspmanager as fm
    from tests.support.ports import free_port
    from tests.support.programs import engine_program

    server = fasp_server_module
    conf = _write(tmp_path / "mgr.conf", "<file_system><overwrite>deny</overwrite></file_system>")
    kept = server.docroot / "mgr-kept.bin"
    kept.write_bytes(b"old content")
    src_dir = tmp_path / "up"
    new = random_file(src_dir / "mgr-new.bin", 40_000)
    random_file(src_dir / "mgr-kept.bin", 40_000)
    options = fm.TransferOptions(
        alternate_config_filename=conf,
        tcp_port=server.port,
        destination_root="/",
        udp_port=free_port(socket.SOCK_DGRAM),
    )
    order = fm.FileUpload(
        [str(new), str(src_dir / "mgr-kept.bin")], server.user, server.host, dest_pass=server.password, options=options
    )
    with fm.session(order, ascp_path=str(engine_program(tmp_path))) as s:
        s.start()
        result = s.finish()
    assert result.ok(), result.reason()
    assert kept.read_bytes() == b"old content"
    assert_same_file(new, server.docroot / "mgr-new.bin")
