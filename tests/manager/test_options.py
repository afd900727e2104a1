"""Every TransferOptions option: validation and its exact ascp command-line form (shared/design/ascp-cli.md)."""

from __future__ import annotations

import os

import pytest

import faspmanager as fm
from faspmanager.orders import FILE_LIST_THRESHOLD

# option -> (a value, the argv words it must produce); secrets and non-flags are checked separately
FLAG_FORMS = {
    "alternate_config_filename": ("/etc/asp.conf", ["-f", "/etc/asp.conf"]),
    "apply_local_docroot": (True, ["--apply-local-docroot"]),
    "auto_detect_capacity": (True, ["--auto-detect-capacity"]),
    "check_ssh_fingerprint": ("SHA256:abc", ["--check-sshfp=SHA256:abc"]),
    "cipher": (fm.CipherType.AES_256, ["-c", "aes256"]),
    "create_dirs": (True, ["-d"]),
    "datagram_size": (1400, ["-Z", "1400"]),
    "delete_before_transfer": (True, ["--delete-before-transfer"]),
    "encryption": (False, ["-T"]),
    "exclude_newer_than": (1700000000, ["--exclude-newer-than=1700000000"]),
    "exclude_older_than": (1600000000, ["--exclude-older-than=1600000000"]),
    "exclude_patterns": (["*.tmp", "a?c"], ["-E", "*.tmp", "-E", "a?c"]),
    "extra_options": (["--foo", "bar"], ["--foo", "bar"]),
    "file_checksum": (fm.FileChecksumType.SHA_384, ["--file-checksum=sha384"]),
    "file_manifest_format": (fm.FileManifestFormat.TEXT, ["--file-manifest=text"]),
    "file_manifest_path": ("/tmp/manifests", ["--file-manifest-path=/tmp/manifests"]),
    "http_fallback_options": (
        fm.HttpFallbackOptions(
            encode_all_as_jpeg=True,
            http_port=8080,
            https_key_filename="k.pem",
            https_cert_filename="c.pem",
            http_proxy_address_host="proxy",
            http_proxy_address_port=3128,
        ),
        ["-y", "1", "-t", "8080", "-j", "1", "-Y", "k.pem", "-I", "c.pem", "-x", "proxy:3128"],
    ),
    "ignore_host_key": (True, ["--ignore-host-key"]),
    "local_log_dir": ("/var/log/x", ["-L", "/var/log/x"]),
    "min_rate_kbps": (500, ["-m", "500"]),
    "move_after_transfer_path": ("/archive", ["--move-after-transfer=/archive"]),
    "multi_session_threshold": (1048576, ["--multi-session-threshold=1048576"]),
    "overwrite_policy": (fm.OverwritePolicy.DIFF_AND_OLDER, ["--overwrite=diff+older"]),
    "partial_file_suffix": (".part", ["--partial-file-suffix=.part"]),
    "policy": (fm.TransferPolicy.LOW, ["--policy=low"]),
    "pre_post_command_path": ("/bin/hook", ["-e", "/bin/hook"]),
    "precalculate_job_size": (True, ["--precalculate-job-size"]),
    "preserve_access_time": (True, ["--preserve-access-time"]),
    "preserve_acls": (fm.PreserveMode.NATIVE, ["--preserve-acls=native"]),
    "preserve_creation_time": (True, ["--preserve-creation-time"]),
    "preserve_dates": (True, ["-p"]),
    "preserve_file_owner_gid": (True, ["--preserve-file-owner-gid"]),
    "preserve_file_owner_uid": (True, ["--preserve-file-owner-uid"]),
    "preserve_modification_time": (True, ["--preserve-modification-time"]),
    "preserve_source_access_time": (True, ["--preserve-source-access-time"]),
    "preserve_xattrs": (fm.PreserveMode.METAFILE, ["--preserve-xattrs=metafile"]),
    "read_size": (65536, ["-g", "65536"]),
    "remote_log_dir": ("/var/log/r", ["-R", "/var/log/r"]),
    "remote_preserve_acls": (fm.PreserveMode.NONE, ["--remote-preserve-acls=none"]),
    "remote_preserve_xattrs": (fm.PreserveMode.NATIVE, ["--remote-preserve-xattrs=native"]),
    "remove_empty_directories": (True, ["--remove-empty-directories"]),
    "remove_empty_source_dir": (True, ["--remove-empty-source-directory"]),
    "remove_files_after_transfer": (True, ["--remove-after-transfer"]),
    "resume_check": (fm.ResumeCheck.SPARSE_CHECKSUM, ["-k", "2"]),
    "retransmission_request_max_size": (1024, ["-X", "1024"]),
    "save_before_overwrite": (True, ["--save-before-overwrite"]),
    "skip_dir_traversal_dups": (True, ["--skip-dir-traversal-dupes"]),
    "skip_special_files": (True, ["--skip-special-files"]),
    "source_base": ("/data/", ["--src-base=/data/"]),
    "source_prefix": ("/prefix", ["--source-prefix=/prefix"]),
    "symlink_policy": (fm.SymlinkPolicy.COPY_FORCE, ["--symbolic-links=copy+force"]),
    "target_rate_kbps": (250000, ["-l", "250000"]),
    "tcp_port": (33001, ["-P", "33001"]),
    "udp_port": (33002, ["-O", "33002"]),
    "write_size": (131072, ["-G", "131072"]),
}
SECRET_ENV = {
    "content_protection_passphrase": "ASPERA_SCP_FILEPASS",
    "cookie": "ASPERA_SCP_COOKIE",
    "token": "ASPERA_SCP_TOKEN",
}
NOT_FLAGS = {"chunk_size", "destination_root"}  # stream flag, positional
OUR_ENGINE_FLAGS = {"retry_timeout": (300, ["--retry-timeout=300"])}
"""Flags IBM's ascp documents none of: only a session running our engine passes them."""


def _contains(args, words):
    return any(args[i : i + len(words)] == words for i in range(len(args) - len(words) + 1))


def _upload(**options):
    return fm.FileUpload("local.bin", "u", "h", dest_pass="pw", options=fm.TransferOptions(**options))


def test_every_option_is_covered():
    assert set(FLAG_FORMS) | set(SECRET_ENV) | NOT_FLAGS | set(OUR_ENGINE_FLAGS) == set(
        fm.TransferOptions.valid_options()
    )


@pytest.mark.parametrize("name", sorted(OUR_ENGINE_FLAGS))
def test_our_engine_flags_only_for_our_engine(name):
    value, words = OUR_ENGINE_FLAGS[name]
    options = fm.TransferOptions(**{name: value})
    assert _contains(options.ascp_args(our_engine=True), words)
    assert options.ascp_args() == fm.TransferOptions().ascp_args()
    assert _upload(**{name: value}).ascp_opts() == _upload().ascp_opts()  # ascp_opts(): IBM's ascp's options


@pytest.mark.parametrize("name", sorted(FLAG_FORMS))
def test_option_command_line_form(name):
    value, words = FLAG_FORMS[name]
    args = _upload(**{name: value}).ascp_opts()
    assert _contains(args, words), (name, args)
    assert args[-2:] == ["local.bin", "."]  # options before the paths


def test_unset_options_add_nothing_and_defaults_are_explicit():
    args = _upload().ascp_opts()
    assert args == [
        "--mode=send",
        "--user=u",
        "--host=h",
        "-m",
        "0",
        "--partial-file-suffix=.partial",
        "--policy=fair",
        "-l",
        "10000",
        "-P",
        "22",
        "-O",
        "33001",
        "local.bin",
        ".",
    ]
    assert "-T" not in args and "-d" not in args


def test_partial_files_get_the_documented_suffix_unless_opted_out():
    """The reference: 'Default suffix is ".partial"'; None leaves the program's own default, "" says no suffix."""
    assert fm.TransferOptions().partial_file_suffix == ".partial"
    assert fm.TransferOptions.defaults()["partial_file_suffix"] == ".partial"
    assert "--partial-file-suffix=.partial" in _upload().ascp_opts()
    assert not any(a.startswith("--partial-file-suffix") for a in _upload(partial_file_suffix=None).ascp_opts())
    assert "--partial-file-suffix=" in _upload(partial_file_suffix="").ascp_opts()


def test_auto_detect_capacity_makes_the_default_target_100_percent():
    """The reference: target_rate_kbps "is interpreted as a percentage ... Default: 10000 (Or 100% when
    autoDetectCapacity is turned on)"; the engine refuses a percent above 100."""
    from fasp.options.flags import parse

    def rate_words(**options):
        args = fm.TransferOptions(**options).ascp_args()
        return args[args.index("-l") + 1], parse([*args, "local.bin", "u@h:/"], {})

    words, cfg = rate_words(auto_detect_capacity=True)
    assert words == "100" and cfg.auto_capacity and cfg.target_kbps == 100
    words, cfg = rate_words(auto_detect_capacity=True, target_rate_kbps=40)
    assert words == "40" and cfg.target_kbps == 40
    words, cfg = rate_words()
    assert words == "10000" and not cfg.auto_capacity and cfg.target_kbps == 10000


@pytest.mark.parametrize("name", sorted(SECRET_ENV))
def test_secret_options_go_to_the_environment(name):
    order = _upload(**{name: "SECRET-value"})
    assert not any("SECRET-value" in a for a in order.ascp_opts())
    assert order.ascp_env()[SECRET_ENV[name]] == "SECRET-value"
    assert "SECRET-value" not in repr(order)


def test_content_protection_encrypts_uploads_and_decrypts_downloads():
    assert "--file-crypt=encrypt" in _upload(content_protection_passphrase="x").ascp_opts()
    down = fm.FileDownload(
        "r.bin", "u", "h", source_pass="pw", options=fm.TransferOptions(content_protection_passphrase="x")
    )
    assert "--file-crypt=decrypt" in down.ascp_opts() and "--mode=recv" in down.ascp_opts()


def test_not_flag_options():
    assert _upload(destination_root="/incoming").ascp_opts()[-1] == "/incoming"
    assert _upload(chunk_size=1000).ascp_opts() == _upload().ascp_opts()
    stream = fm.StreamUpload("u", "h", dest_pass="pw", options=fm.TransferOptions(chunk_size=1000))
    assert stream.ascp_opts()[-3:] == ["--keepalive", "--chunk-size=1000", "."]


def test_password_and_identity():
    order = fm.FileUpload("a", "u", "h", dest_pass="PW", dest_identity="/keys/id")
    assert order.ascp_env() == {"ASPERA_SCP_PASS": "PW"}
    assert _contains(order.ascp_opts(), ["-i", "/keys/id"]) and not any("PW" in a for a in order.ascp_opts())
    keyonly = fm.PersistentDownload("u", "h", source_identity="/keys/id")
    assert keyonly.ascp_env() == {}
    assert "--keepalive" in keyonly.ascp_opts() and "--mode=recv" in keyonly.ascp_opts()


def test_orders_need_credentials_and_paired_destinations():
    with pytest.raises(fm.AuthenticationError):
        fm.FileUpload("a", "u", "h")
    with pytest.raises(fm.AuthenticationError):
        fm.FileDownload("a", "u", "h")
    for cls in (fm.PersistentUpload, fm.PersistentDownload, fm.StreamUpload):
        with pytest.raises(fm.AuthenticationError):
            cls("u", "h")
    with pytest.raises(fm.InvalidPathError):
        fm.FileUpload(["a", "b"], "u", "h", dest_paths=["x"], dest_pass="p")
    with pytest.raises(fm.InvalidPathError):
        fm.FileDownload("a", "u", "h", dest_paths=["x", "y"], source_pass="p")
    with pytest.raises(fm.InvalidPathError):
        fm.FileUpload("bad\nname", "u", "h", dest_pass="p")
    with pytest.raises(fm.InvalidPathError):
        fm.FileUpload([], "u", "h", dest_pass="p")


def test_paired_destinations_use_a_pair_list():
    order = fm.FileUpload(["a", "b"], "u", "h", dest_paths=["x", "y"], dest_pass="p")
    args = order.ascp_opts()
    (pairs,) = [a.split("=", 1)[1] for a in args if a.startswith("--file-pair-list=")]
    with open(pairs) as f:
        assert f.read().splitlines() == ["a", "x", "b", "y"]
    assert args[-1] == "." and "a" not in args


def test_many_sources_and_dash_sources_use_a_file_list():
    many = [f"f{i}" for i in range(FILE_LIST_THRESHOLD + 1)]
    args = fm.FileUpload(many, "u", "h", dest_pass="p").ascp_opts()
    (listed,) = [a.split("=", 1)[1] for a in args if a.startswith("--file-list=")]
    with open(listed) as f:
        assert f.read().splitlines() == many
    assert len(args) < 30
    few = fm.FileUpload([f"f{i}" for i in range(FILE_LIST_THRESHOLD)], "u", "h", dest_pass="p").ascp_opts()
    assert not any(a.startswith("--file-list") for a in few)
    dashed = fm.FileUpload(["-rf"], "u", "h", dest_pass="p").ascp_opts()
    assert "-rf" not in dashed and any(a.startswith("--file-list=") for a in dashed)


def test_unknown_option_names_the_closest_valid_one():
    with pytest.raises(ValueError, match=r"'target_rate'.*did you mean 'target_rate_kbps'"):
        fm.TransferOptions(target_rate=10)
    with pytest.raises(ValueError, match="unknown transfer option 'zzz'"):
        fm.TransferOptions(zzz=1)


@pytest.mark.parametrize(
    "name, bad",
    [
        ("target_rate_kbps", "fast"),
        ("target_rate_kbps", True),
        ("target_rate_kbps", -1),
        ("target_rate_kbps", 0),
        ("datagram_size", 295),
        ("datagram_size", 65001),
        ("read_size", 0),
        ("write_size", 0),
        ("tcp_port", 70000),
        ("create_dirs", "yes"),
        ("policy", "warp"),
        ("policy", fm.CipherType.AES_128),
        ("cipher", 128),
        ("exclude_patterns", "*.tmp"),
        ("extra_options", [1]),
        ("http_fallback_options", {"http_port": 1}),
        ("retransmission_request_max_size", 1441),
        ("local_log_dir", 5),
        ("resume_check", 7),
    ],
)
def test_wrong_type_or_enum_is_a_clear_value_error(name, bad):
    with pytest.raises(ValueError, match=name):
        fm.TransferOptions(**{name: bad})


def test_enum_values_accept_their_ascp_words_and_names():
    assert fm.TransferOptions(policy="high").policy is fm.TransferPolicy.HIGH
    assert fm.TransferOptions(policy="HIGH").policy is fm.TransferPolicy.HIGH
    assert fm.TransferOptions(resume_check=3).resume_check is fm.ResumeCheck.FULL_CHECKSUM


def test_defaults_class_constants_and_attribute_access():
    defaults = fm.TransferOptions.defaults()
    assert defaults["policy"] == fm.TransferOptions.DEFAULT_POLICY == fm.TransferPolicy.FAIR
    assert defaults["destination_root"] == fm.TransferOptions.DEFAULT_DESTINATION_ROOT
    assert defaults["chunk_size"] == fm.TransferOptions.DEFAULT_CHUNK_SIZE > 0
    assert defaults["target_rate_kbps"] == 10000 and defaults["tcp_port"] == 22 and defaults["udp_port"] == 33001
    assert defaults["encryption"] is True
    options = fm.TransferOptions(target_rate_kbps=5)
    assert options.opts["target_rate_kbps"] == options.target_rate_kbps == 5
    options.min_rate_kbps = 3
    assert options.opts["min_rate_kbps"] == 3
    with pytest.raises(ValueError):
        options.min_rate_kbps = "3"
    assert options.cipher is None
    assert fm.TransferOptions.valid_options() == sorted(fm.TransferOptions.valid_options())


def test_generated_flags_are_accepted_by_the_engine_parser():
    """Cross-check with the engine's own option table: it must understand every flag we generate."""
    engine_options = pytest.importorskip("fasp.options.flags")
    everything = {name: value for name, (value, _) in FLAG_FORMS.items() if name != "extra_options"}
    args = fm.FileUpload("local.bin", "u", "h", dest_pass="pw", options=fm.TransferOptions(**everything)).ascp_opts()
    values, positional = engine_options.tokenize(args)
    assert positional == ["local.bin", "."]
    assert values["mode"] == "send" and values["target_rate"] == "250000" and values["filters"] == ["- *.tmp", "- a?c"]


def test_pathlike_values_are_accepted(tmp_path):
    order = fm.FileUpload(tmp_path / "a", "u", "h", dest_pass="p", options=fm.TransferOptions(local_log_dir=tmp_path))
    assert order.source_paths == [os.fspath(tmp_path / "a")]
    assert _contains(order.ascp_opts(), ["-L", str(tmp_path)])


def test_orders_survive_copy_and_pickle():
    import copy
    import pickle

    order = fm.FileUpload(
        ["a", "b"],
        "u",
        "h",
        dest_paths=["x", "y"],
        dest_pass="p",
        options=fm.TransferOptions(
            target_rate_kbps=5, policy=fm.TransferPolicy.HIGH, http_fallback_options=fm.HttpFallbackOptions(http_port=3)
        ),
    )
    for clone in (copy.deepcopy(order), pickle.loads(pickle.dumps(order))):
        assert clone.options == order.options and clone.dest_paths == ["x", "y"]
        assert clone.ascp_env() == order.ascp_env()
        assert [a for a in clone.ascp_opts() if "pair-list" not in a] == [
            a for a in order.ascp_opts() if "pair-list" not in a
        ]


def test_the_minimum_rate_may_not_exceed_the_target():
    """ascp refuses -m above -l (usage error 8 once the session ran); where both are kbit/s it is refused here."""
    with pytest.raises(ValueError, match="min_rate_kbps 20000 is above target_rate_kbps 5000"):
        fm.TransferOptions(min_rate_kbps=20000, target_rate_kbps=5000)
    with pytest.raises(ValueError, match="min_rate_kbps"):
        fm.TransferOptions(min_rate_kbps=20000)  # the default target is 10000
    assert fm.TransferOptions(min_rate_kbps=20000, target_rate_kbps=50000).min_rate_kbps == 20000  # any order
    # with auto_detect_capacity the target is a percent of the capacity: nothing to compare
    assert fm.TransferOptions(auto_detect_capacity=True, target_rate_kbps=50, min_rate_kbps=20000).ascp_args()
    options = fm.TransferOptions(target_rate_kbps=50000, min_rate_kbps=20000)
    options.target_rate_kbps = 1000  # one at a time: checked once the options are used
    with pytest.raises(ValueError, match="min_rate_kbps 20000 is above target_rate_kbps 1000"):
        options.ascp_args()


@pytest.mark.parametrize(
    "name, bad",
    [
        ("http_port", 0),
        ("http_port", "80"),
        ("http_proxy_address_port", 70000),
        ("encode_all_as_jpeg", "yes"),
        ("https_key_filename", 5),
        ("https_cert_filename", b"c.pem"),
        ("http_proxy_address_host", ""),
    ],
)
def test_http_fallback_options_are_checked_when_made(name, bad):
    with pytest.raises(ValueError, match=name):
        fm.HttpFallbackOptions(**{name: bad})
