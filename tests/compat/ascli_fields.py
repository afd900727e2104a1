"""The transfer-spec fields aspera-cli's direct agent turns into ascp arguments, with their ascp spelling.

Extracted (by reading, not copying) from IBM/aspera-cli, ``lib/aspera/transfer/spec.schema.yaml`` at commit
093d717751b3069284fbf11c405ede67cf4e4fc4: each field's ``x-cli-option`` (``True``: ``--`` + the field name
with ``-`` for ``_``), ``x-cli-switch`` and ``x-cli-convert``, and ``x-cli-envvar``. How they become argv
follows ``lib/aspera/command_line_builder.rb`` (a switch alone when true; an option as two words, once per
array item; conversions: a table, ``remove_hyphen``, ``base64``, ``json64``) and ``lib/aspera/transfer/
parameters.rb`` (``--dest64`` then the base64 destination last, ``--file-list=F`` or ``--file-pair-list=F``,
``-q`` first when quiet); the direct agent adds ``-M PORT``. Fields only other agents use (node, connect,
transferd, httpgw) are left out; ``special`` fields that still reach argv are listed with what ascli puts there.

``values``: transfer-spec values to try (each gives one command line).
``with``: companion fields the field needs (IBM documents them as required together).
``sshd``: the field is tried against a stock OpenSSH sshd (key authentication) rather than fasp-server.
"""

from __future__ import annotations

SOURCE = ("IBM/aspera-cli", "lib/aspera/transfer/spec.schema.yaml", "093d717751b3069284fbf11c405ede67cf4e4fc4")

CIPHERS = [
    "none",
    "aes-128",
    "aes-192",
    "aes-256",
    "aes-128-cfb",
    "aes-192-cfb",
    "aes-256-cfb",
    "aes-128-gcm",
    "aes-192-gcm",
    "aes-256-gcm",
]
PRESERVE = ["none", "native", "metafile"]


def _f(field, cli, kind, values, convert=None, **extra):
    return {"field": field, "cli": cli, "kind": kind, "values": values, "convert": convert, **extra}


FIELDS = [
    _f("apply_local_docroot", "--apply-local-docroot", "switch", [True]),
    _f("cipher", "-c", "option", CIPHERS, "remove_hyphen"),
    _f("content_protection", "--file-crypt", "option", ["encrypt"], with_={"content_protection_password": "pw"}),
    _f("content_protection_password", "ASPERA_SCP_FILEPASS", "env", ["pw"], with_={"content_protection": "encrypt"}),
    _f("cookie", "ASPERA_SCP_COOKIE", "env", ["app:cookie"]),
    _f("create_dir", "-d", "switch", [True, False]),
    _f("delete_before_transfer", "--delete-before-transfer", "switch", [True]),
    _f("direction", "--mode", "option", ["send", "receive"], {"receive": "recv", "send": "send"}),
    _f("exclude_newer_than", "--exclude-newer-than", "option", ["-86400"]),
    _f("exclude_older_than", "--exclude-older-than", "option", ["-86400"]),
    _f("fail_bad_filepass", "--fail-bad-filepass", "switch", [True]),
    _f("fasp_port", "-O", "option", ["FREE_UDP"]),
    _f("file_checksum", "--file-checksum", "option", ["sha-512", "sha-384", "sha-256", "sha1", "md5", "none"]),
    _f("http_fallback", "-y", "option", [True, False, "force"], {"force": "F", True: "1", False: "0"}),
    _f("http_fallback_port", "-t", "option", [8080]),
    _f("https_fallback_port", "-t", "option", [8443]),
    _f("move_after_transfer", "--move-after-transfer", "option", ["ARCHIVE"]),
    _f("multi_session_threshold", "--multi-session-threshold", "option", [1000]),
    _f("overwrite", "--overwrite", "option", ["never", "always", "diff", "older", "diff+older"]),
    _f("precalculate_job_size", "--precalculate-job-size", "switch", [True]),
    _f("preserve_access_time", "--preserve-access-time", "switch", [True]),
    _f("preserve_acls", "--preserve-acls", "option", PRESERVE),
    _f("preserve_creation_time", "--preserve-creation-time", "switch", [True]),
    _f("preserve_extended_attrs", "--preserve-xattrs", "option", PRESERVE),
    _f("preserve_file_owner_gid", "--preserve-file-owner-gid", "switch", [True]),
    _f("preserve_file_owner_uid", "--preserve-file-owner-uid", "switch", [True]),
    _f("preserve_modification_time", "--preserve-modification-time", "switch", [True]),
    _f("preserve_remote_acls", "--remote-preserve-acls", "option", PRESERVE),
    _f("preserve_remote_extended_attrs", "--remote-preserve-xattrs", "option", PRESERVE),
    _f("preserve_source_access_time", "--preserve-source-access-time", "switch", [True]),
    _f("preserve_times", "-p", "switch", [True]),
    _f("rate_policy", "--policy", "option", ["low", "fair", "high", "fixed"]),
    _f("remote_host", "--host", "option", ["HOST"]),
    _f("remote_password", "ASPERA_SCP_PASS", "env", ["PASSWORD"]),
    _f("remote_user", "--user", "option", ["USER"]),
    _f("remove_after_transfer", "--remove-after-transfer", "switch", [True]),
    _f(
        "remove_empty_directories",
        "--remove-empty-directories",
        "switch",
        [True],
        with_={"remove_after_transfer": True},
    ),
    _f(
        "remove_empty_source_directory",
        "--remove-empty-source-directory",
        "switch",
        [True],
        with_={"remove_after_transfer": True},
    ),
    _f(
        "remove_skipped",
        "--remove-skipped",
        "switch",
        [True],
        with_={"remove_after_transfer": True, "overwrite": "never"},
    ),
    _f("proxy", "--proxy", "option", ["dnat://puser:psecret@proxy.invalid:9091"]),
    _f(
        "resume_policy",
        "-k",
        "option",
        ["none", "attrs", "sparse_csum", "full_csum"],
        {"none": "0", "attrs": "1", "sparse_csum": "2", "full_csum": "3"},
    ),
    _f("save_before_overwrite", "--save-before-overwrite", "switch", [True]),
    _f("skip_duplicate_check", "--skip-dir-traversal-dupes", "switch", [True]),
    _f("skip_special_files", "--skip-special-files", "switch", [True]),
    _f("source_root", "--source-prefix64", "option", ["SRCDIR"], "base64"),
    _f("src_base", "--src-base64", "option", ["SRCDIR"], "base64"),
    _f("src_base64", "--src-base64", "option", ["SRCDIR64"]),
    _f("ssh_port", "-P", "option", ["PORT"]),
    _f("ssh_private_key_passphrase", "ASPERA_SCP_PASS", "env", ["PASSWORD"]),
    _f("ssh_private_key", "ASPERA_SCP_KEY", "env", ["KEY"], sshd=True),
    _f("ssh_private_key_path", "-i", "option", ["KEYFILE"], sshd=True),
    _f("symlink_policy", "--symbolic-links", "option", ["follow", "copy", "copy+force", "skip"]),
    _f("tags", "--tags64", "option", [{"aspera": {"app": "ascli"}, "job": "j-1"}], "json64"),
    _f("tags64", "--tags64", "option", ["TAGS64"]),
    _f("target_rate_kbps", "-l", "option", [50000]),
    _f("token", "ASPERA_SCP_TOKEN", "env", ["Basic dG9rZW4="]),
    _f("use_system_ssh", "-SSH", "switch", [True]),
    _f("keepalive", "--keepalive", "switch", [True]),
    _f("dgram_size", "-Z", "option", [1200]),
    _f("min_rate_kbps", "-m", "option", [100]),
    _f("sshfp", "--check-sshfp", "option", ["FINGERPRINT"]),
    # special fields that still reach argv
    _f("multi_session", "-C", "option", ["1:1"], special=True),
    _f("ssh_args", "--ssh-arg", "option", [["-vv", "-oBatchMode=yes"]], special=True),
    _f("wss_enabled", "--ws-connect", "switch", [True], special=True),
]
