"""The ascp command line: every flag of shared/design/ascp-cli.md (as ascp_cli_table.py holds them) is accepted;
the rest is usage error 8."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from fasp.files.docroot import Unconfined
from fasp.options.flags import all_flag_names, parse, split_remote, tokenize
from fasp.session.manifest import write_manifest
from fasp.session.peer import remote_command
from faspmanager.codes import EngineError
from tests.engine.ascp_cli_table import DOCUMENTED_FLAGS


def test_every_documented_flag_is_known():
    flags = set(DOCUMENTED_FLAGS)
    assert len(flags) > 60  # the table holds the whole documentation
    assert sorted(flags - set(all_flag_names())) == []


# one invocation per flag: each parses (-f, which needs a file to read, is tested in test_conffile.py)
WORKS = [
    [],
    ["-q"],
    ["-d"],
    ["-T"],
    ["-p"],
    ["--keepalive", "-M", "3000"],
    ["--ignore-host-key"],
    ["--check-sshfp=SHA256:abc"],
    ["--chunk-size=65536"],
    ["-c", "aes192"],
    ["-caes256"],
    ["-Z", "9000"],
    ["-E", "*.tmp", "-E", "*.bak"],
    ["--exclude-newer-than=100"],
    ["--exclude-older-than", "100"],
    ["--file-checksum=md5"],
    ["-l", "5000", "-m", "100"],
    ["-l5000"],
    ["--overwrite=diff+older"],
    ["--partial-file-suffix=.part"],
    ["--policy=low"],
    ["--precalculate-job-size"],
    ["--preserve-access-time"],
    ["--preserve-modification-time"],
    ["--preserve-source-access-time"],
    ["--preserve-file-owner-uid"],
    ["--preserve-file-owner-gid"],
    ["--preserve-acls=none"],
    ["--preserve-xattrs=none"],
    ["--remote-preserve-acls=none"],
    ["--remote-preserve-xattrs=none"],
    ["--remove-after-transfer"],
    ["--remove-after-transfer", "--remove-empty-source-directory"],
    ["-k", "3"],
    ["-k1"],
    ["--skip-dir-traversal-dupes"],
    ["--skip-special-files"],
    ["--src-base=/tmp"],
    ["--symbolic-links=skip"],
    ["-P", "33001"],
    ["-O", "33001"],
    ["-y", "0"],
    ["-j", "0"],
    ["-C", "1:1"],
    ["--multi-session-threshold=0"],
    ["-t", "8080"],
    ["-i", "/nonexistent/key"],
    ["--mode=send"],
    ["--user=bob", "--host=h"],
    ["--retry-timeout=60"],
    ["--file-manifest=none"],
    ["-L", "/tmp"],
    ["-R", "/tmp"],
    ["--save-before-overwrite"],
    ["--move-after-transfer=/tmp", "--remove-empty-directories"],
    ["--source-prefix=/"],
    ["--file-manifest=text", "--file-manifest-path=/tmp"],
    ["--delete-before-transfer"],
    ["--symbolic-links=copy"],
    ["--symbolic-links=copy+force"],
    ["--preserve-acls=native"],
    ["--preserve-xattrs=native", "--remote-preserve-xattrs=native"],
    ["-C", "2:3", "--multi-session-threshold=1"],
    ["-e", "/bin/true"],
]


@pytest.mark.parametrize("flags", WORKS, ids=lambda f: " ".join(f) or "none")
def test_supported_flags_parse(flags):
    cfg = parse([*flags, "/etc/hostname", "bob@h:/dest"], {})
    assert cfg.direction == "send" and cfg.remote.host == "h"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--nope", "a", "h:/b"], "--nope"),
        (["-@", "0:10", "a", "h:/b"], "-@: a byte range"),
        (["-q@", "0:10", "a", "h:/b"], "-@"),
        (["-w", "f", "a", "h:/b"], "-w: ascp's bandwidth test"),
        (["--file-manifest-inprogress-suffix=a/b", "a", "h:/b"], "--file-manifest-inprogress-suffix"),
        (["-l"], "-l needs a value"),
        (["-k", "7", "a", "h:/b"], "-k"),
        (["-m", "9", "-l", "5", "a", "h:/b"], "-m"),
        (["a"], "no remote host"),
        (["h:/a", "h2:/b", "c"], "same host"),
        (["--host=h2", "u@h:/a", "/local"], "--host h2 contradicts the host h in the paths"),
        (["--host=h2", "a", "h:/b"], "--host h2 contradicts the host h in the paths"),
        (["--user=v", "u@h:/a", "/local"], "--user v contradicts the user u in the paths"),
        (["a", "h:/b", "h:/c"], "both"),
        (["--keepalive", "a", "h:/b"], "--keepalive needs -M"),
        (["--chunk-size=100", "h:/b"], "--chunk-size with no source needs -M"),
        (["--policy=greedy", "a", "h:/b"], "--policy"),
        (["--ignore-host-key=yes", "a", "h:/b"], "takes no value"),
        (["--auto-detect-capacity", "-l", "150", "a", "h:/b"], "percent"),
        (["-y", "2", "a", "h:/b"], "-y"),
        (["-Y", "k.pem", "a", "h:/b"], "needs -I"),
        (["-x", "proxy:http", "a", "h:/b"], "-x"),
        (["-g", "1G", "a", "h:/b"], "-g"),
        (["-qZ", "a", "h:/b"], "-Z"),
        (["-QQ", "a", "h:/b"], "-QQ: no documented meaning"),
        (["-Q", "--policy=fixed", "a", "h:/b"], "-Q (the fair policy) contradicts --policy=fixed"),
        (["--preserve-acls=copy", "a", "h:/b"], "--preserve-acls"),
        (["-g", "0", "a", "h:/b"], "-g"),
        (["--remove-empty-directories", "a", "h:/b"], "needs --remove-after-transfer"),
        (["--file-manifest=text", "a", "h:/b"], "--file-manifest-path"),
        (["--file-crypt=encrypt", "a", "h:/b"], "ASPERA_SCP_FILEPASS"),
        (["--apply-local-docroot", "a", "h:/b"], "FASP_LOCAL_DOCROOT"),
        (["-C", "3:2", "a", "h:/b"], "node 3 of only 2"),
        (["-e", "/etc", "a", "h:/b"], "not an executable"),
        (["--file-crypt=decrypt", "a", "h:/b"], "ASPERA_SCP_FILEPASS"),
    ],
)
def test_usage_errors_name_the_problem(argv, needle):
    with pytest.raises(EngineError) as info:
        parse(argv, {})
    assert info.value.code == 8 and needle in info.value.description


def test_shapes_of_a_command_line():
    up = parse(["-l", "100", "a", "b", "u@h:/x"], {"ASPERA_SCP_PASS": "pw"})
    assert (up.direction, up.sources, up.dest, up.remote.user, up.remote.password) == (
        "send",
        ["a", "b"],
        "/x",
        "u",
        "pw",
    )
    assert "pw" not in repr(up)  # secrets stay out of logs
    down = parse(["u@h:/a", "u@h:b c", "/local"], {})
    assert (down.direction, down.sources, down.dest) == ("recv", ["/a", "b c"], "/local")
    flagged = parse(["--mode", "recv", "--host", "H", "--user", "U", "-P", "2222", "/r/src", "/local"], {})
    assert (flagged.direction, flagged.remote.host, flagged.remote.port, flagged.sources) == (
        "recv",
        "H",
        2222,
        ["/r/src"],
    )
    agreeing = parse(["--host=H.example", "--user=u", "u@h.example:/a", "/local"], {})  # host names ignore case
    assert (agreeing.remote.host, agreeing.remote.user) == ("H.example", "u")
    assert parse(["--host=::1", "a", "[::1]:/b"], {}).remote.host == "::1"
    encrypted = parse(["-T", "a", "h:/b"], {})
    assert encrypted.key_bytes == 0
    assert parse(["-c", "aes256", "a", "h:/b"], {}).key_bytes == 32


def test_file_lists(tmp_path):
    listing = tmp_path / "list"
    listing.write_text("/one\n/two words\n")
    listed = parse([f"--file-list={listing}", "h:/d"], {})
    assert listed.sources == ["/one", "/two words"] and listed.options_for_peer().create_dirs  # -d implied
    pairs = tmp_path / "pairs"
    pairs.write_text("/one\nx/1\n/two\ny\n")
    cfg = parse(["--file-pair-list", str(pairs), "h:/d"], {})
    assert cfg.sources == ["/one", "/two"] and cfg.pair_dests == ["x/1", "y"] and cfg.create_dirs
    assert not parse(["/one", "h:/d"], {}).create_dirs


def test_content_protection_takes_the_passphrase_from_the_environment_only():
    cfg = parse(["--file-crypt=encrypt", "a", "h:/b"], {"ASPERA_SCP_FILEPASS": "pw"})
    assert cfg.file_pass == "pw" and "pw" not in repr(cfg) and "pw" not in repr(cfg.options_for_peer())
    with pytest.raises(EngineError, match="does not fit a download"):
        parse(["--file-crypt=encrypt", "h:/a", "b"], {"ASPERA_SCP_FILEPASS": "pw"})
    with pytest.raises(EngineError, match="--file-crypt is not given"):
        parse(["a", "h:/b"], {"ASPERA_SCP_FILEPASS": "pw"})
    shared = ["-C", "1:2", "--multi-session-threshold=1000", "--file-crypt=decrypt", "h:/a", "b"]
    cfg = parse(shared, {"ASPERA_SCP_FILEPASS": "pw"})  # an envelope is opened whole: the peer sends no range
    assert cfg.options_for_peer().split_above == 0 and any("--multi-session-threshold" in n for n in cfg.notes)


def test_q_is_the_fair_policy_of_older_command_lines(tmp_path):
    """-Q is what older ascp command lines (NCBI's and EBI's documented ``ascp -QT -l 300m -P33001 ...``) use for
    adaptive rate control: --policy=fair, a command-line policy an aspera.conf default does not override."""
    cfg = parse(["-QT", "-l", "300m", "-P33001", "-k1", "a", "h:/b"], {})
    assert (cfg.policy, cfg.key_bytes, cfg.target_kbps, cfg.remote.port, cfg.resume) == ("fair", 0, 300_000, 33001, 1)
    assert parse(["-QT", "--policy=fair", "a", "h:/b"], {}).policy == "fair"  # the same policy twice: fine
    conf = tmp_path / "fixed.conf"
    flow = "<out><bandwidth><flow><policy><default>fixed</default></policy></flow></bandwidth></out>"
    conf.write_text(f'<?xml version="1.0"?>\n<CONF version="2"><default><transfer>{flow}</transfer></default></CONF>\n')
    assert parse(["-f", str(conf), "a", "h:/b"], {}).policy == "fixed"
    assert parse(["-f", str(conf), "-Q", "a", "h:/b"], {}).policy == "fair"


def test_a_split_file_left_in_place_is_told():
    """--remove-after-transfer/--move-after-transfer leave a file sent in -C ranges where it is (no node knows when
    all its ranges landed): a note says so, where before the source silently stayed."""
    split = ["-C", "1:2", "--multi-session-threshold=1000"]
    for after in (["--remove-after-transfer"], ["--move-after-transfer=/archive"]):
        notes = parse([*split, *after, "a", "h:/b"], {}).notes
        assert [n.split(":")[0] for n in notes] == [after[0].split("=")[0]], notes
        assert "--multi-session-threshold" in notes[0]
        assert parse(["-C", "1:2", *after, "a", "h:/b"], {}).notes == []  # nothing is split: nothing to say
    assert parse([*split, "a", "h:/b"], {}).notes == []


def test_server_mode():
    cfg = parse(
        ["--server", "--docroot", "/srv", "--rate-cap", "5000", "--allowed-policies", "fair,low", "-O", "33001"], {}
    )
    assert (cfg.server, cfg.docroot, cfg.rate_cap_kbps, cfg.allowed_policies, cfg.udp_port) == (
        True,
        "/srv",
        5000,
        ("fair", "low"),
        33001,
    )
    assert parse(["--server"], {"FASP_DOCROOT": "/d"}).docroot == "/d"


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), max_size=6))
def test_any_argv_parses_or_is_a_usage_error(argv):
    try:
        tokenize(argv)
        parse(argv, {})
    except EngineError as exc:
        assert exc.code in (4, 8)


def test_split_remote():
    assert split_remote("bob@host:/a/b") == ("bob", "host", "/a/b")
    assert split_remote("host:rel") == (None, "host", "rel")
    assert split_remote("/local/path") == (None, None, "/local/path")
    assert split_remote("[::1]:/x") == (None, "::1", "/x")


# ---- IBM's value forms and spellings (issue 15) ---------------------------------------------------------


@pytest.mark.parametrize(
    "flag, raw, kbps",
    [
        ("-l", "100m", 100_000),
        ("-l", "1.5G", 1_500_000),
        ("-l", "2g", 2_000_000),
        ("-l", "750K", 750),
        ("-l", "64.4", 64),
        ("-l", ".5M", 500),
        ("-l", "10000", 10_000),
    ],
)
def test_rate_suffixes_and_decimals(flag, raw, kbps):
    assert parse([flag, raw, "a", "h:/b"], {}).target_kbps == kbps


def test_a_set_target_is_marked_as_the_initial_rate_the_default_is_not():
    """-l is FAIR's and HIGH's initial rate (fasp.datapath.rate); the engine's own default is no one's estimate of
    the path, nor is a percent of a capacity not yet measured."""
    assert parse(["-l", "500m", "a", "h:/b"], {}).target_set
    assert not parse(["a", "h:/b"], {}).target_set
    assert not parse(["-l", "80%", "a", "h:/b"], {}).target_set


def test_percent_rates():
    cfg = parse(["-l", "80%", "a", "h:/b"], {})
    assert cfg.auto_capacity and cfg.target_kbps == 80  # -l N%: a percent of the measured capacity
    assert parse(["-l", "50p", "a", "h:/b"], {}).target_kbps == 50
    assert parse(["-l", "100m", "-m", "10%", "a", "h:/b"], {}).min_kbps == 10_000  # -m N%: of -l
    for argv, needle in (
        (["-l", "fast"], "not a rate"),
        (["-l", "0"], "below 1"),
        (["-l", "150%"], "percent"),
        (["-l", "80%", "-m", "10%"], "percent of capacity"),
    ):
        with pytest.raises(EngineError) as info:
            parse([*argv, "a", "h:/b"], {})
        assert info.value.code == 8 and needle in info.value.description


@pytest.mark.parametrize(
    "argv",
    [
        ["-Tl100m", "-P33001", "-k1"],
        ["-Tl", "100m", "-qP", "33001", "-dk1"],
        ["-qTdpP33001", "-l100000", "-k", "1"],
    ],
    ids=" ".join,
)
def test_getopt_bundles_end_with_a_value_option(argv):
    """As ascp's getopt: switches bundle, and a value option ends the bundle, its value the rest of the
    element or the next one (``-Tl100m``, ``-qP 33001``)."""
    cfg = parse([*argv, "a", "h:/b"], {})
    assert (cfg.key_bytes, cfg.target_kbps, cfg.remote.port, cfg.resume) == (0, 100_000, 33001, 1)


def test_block_sizes_take_k_and_m_and_the_proxy_port_defaults_to_80():
    """ascp --help: -g/-G "SIZE: K (kilo), M (meg), or just bytes"; -x PROXYSERVER-ADDR[:PORT] "(default 80)"."""
    cfg = parse(["-g", "64K", "-G1m", "-x", "proxy.example", "a", "h:/b"], {})
    assert (cfg.read_size, cfg.write_size, cfg.proxy) == (64 * 1024, 1024 * 1024, ("proxy.example", 80))
    assert parse(["-g", "4096", "-x", "[::1]:3128", "a", "h:/b"], {}).proxy == ("::1", 3128)
    assert parse(["-x", "[::1]", "a", "h:/b"], {}).proxy == ("::1", 80)


def test_token_remote_command_and_flags_taken_with_a_note(tmp_path):
    """-W is the token (ahead of ASPERA_SCP_TOKEN, never in a repr), -S the remote engine's command line (ahead
    of FASP_REMOTE_COMMAND), --file-manifest-inprogress-suffix the manifest's name while written; -6 and -u
    are taken with a note saying what they do here."""
    env = {"ASPERA_SCP_TOKEN": "from-env"}
    cfg = parse(["-W", "tok-123", "-S", "/opt/engine --server", "-6", "-u", "x", "a", "h:/b"], env)
    assert cfg.token == "tok-123" and "tok-123" not in repr(cfg) and "tok-123" not in repr(cfg.remote)
    assert parse(["a", "h:/b"], env).token == "from-env"
    assert cfg.remote.command == "/opt/engine --server" and remote_command(cfg.remote.command) == cfg.remote.command
    assert remote_command("engine") == "engine --server"
    assert [note.split(":")[0] for note in cfg.notes] == ["-6", "-u"]
    suffix = parse(["--file-manifest-inprogress-suffix=.inprogress", "a", "h:/b"], {})
    assert suffix.manifest_inprogress_suffix == ".inprogress"


def test_filter_rules_keep_their_order_and_a_trailing_include_is_told():
    cfg = parse(["-E", "*.tmp", "-N", "/a/", "-E", "/**", "a", "h:/b"], {})
    assert cfg.options_for_peer().filters == ("- *.tmp", "+ /a/", "- /**") and cfg.notes == []
    assert [n.split(":")[0] for n in parse(["-E", "x", "-N", "y", "a", "h:/b"], {}).notes] == ["-N"]


def test_manifest_is_named_with_the_inprogress_suffix_until_complete(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    write_manifest(Unconfined(), str(tmp_path), "s1", [("passed", "/x", "")], ".inprogress")
    final = str(tmp_path / "aspera-transfer-s1-manifest.txt")
    assert renames == [(final + ".inprogress", final)] and os.listdir(tmp_path) == [os.path.basename(final)]


def test_debug_levels_and_multi_letter_switches():
    assert parse(["-D", "a", "h:/b"], {}).debug == 1
    assert parse(["-DD", "a", "h:/b"], {}).debug == 2
    assert parse(["-DDD", "-q", "a", "h:/b"], {}).debug == 3
    assert parse(["-qDD", "a", "h:/b"], {}).debug == 2
    cfg = parse(["-SSH", "--ssh-arg", "-vv", "--ssh-arg=-oX=y", "a", "h:/b"], {})
    assert [n.split(":")[0] for n in cfg.notes] == ["-SSH", "--ssh-arg"]


def test_ibm_spellings():
    import base64

    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    cfg = parse(
        [
            "--mode",
            "send",
            "--host",
            "h",
            "--dest64",
            "--src-base64",
            b64("/data"),
            "--source-prefix64",
            b64("/data"),
            "--tags64",
            b64('{"k": [1]}'),
            "--file-checksum",
            "sha-512",
            "-c",
            "aes-256-gcm",
            "x",
            b64("/in:box/"),
        ],
        {},
    )
    assert (cfg.dest, cfg.src_base, cfg.sources, cfg.tags) == ("/in:box/", "/data", ["/data/x"], {"k": [1]})
    assert (cfg.file_checksum, cfg.key_bytes) == ("sha512", 32)
    assert parse(["--tags", '{"a": 1}', "a", "h:/b"], {}).options_for_peer().tags == {"a": 1}
    assert parse(["-c", "aes-192-cfb", "a", "h:/b"], {}).key_bytes == 24
    proxy = parse(["--proxy", "dnat://u:secret@p:9091", "-y", "F", "a", "h:/b"], {})
    assert proxy.http_fallback and len(proxy.notes) == 2 and "secret" not in " ".join(proxy.notes)
    for argv, needle in (
        (["--dest64", "a", "h:/b"], "base64"),
        (["--tags", "[1]", "a", "h:/b"], "object"),
        (["--tags64", "e30", "a", "h:/b"], "base64"),
        (["--tags", "{", "a", "h:/b"], "JSON"),
    ):
        with pytest.raises(EngineError) as info:
            parse(argv, {})
        assert info.value.code == 8 and needle in info.value.description, info.value.description


@pytest.mark.slow
def test_help_lists_every_option_and_exits_0():
    import subprocess

    from fasp.options.flags import FLAGS
    from fasp.options.helptext import DOC_PATH, LINES, markdown
    from tests.support.programs import ENGINE

    assert sorted(LINES) == sorted(f.key for f in FLAGS)  # one line per flag, no stale ones
    for spelling in ("-h", "--help"):
        proc = subprocess.run([*ENGINE, spelling], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0
        lines = proc.stdout.splitlines()
        for flag in FLAGS:
            assert sum(1 for line in lines if line.startswith(f"  {', '.join(flag.names)} ")) == 1, flag.names
        assert DOC_PATH in proc.stdout and "shared/" not in proc.stdout
    in_repo = Path(__file__).resolve().parents[2] / DOC_PATH
    assert in_repo.read_text() == markdown(), "regenerate: python -m fasp.options.helptext > docs/ascp-options.md"
