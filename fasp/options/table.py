"""One entry per ascp flag: spellings, value form, help line, the ``Config`` field it fills, aspera.conf element.

Everything else follows from this table: the tokenizer knows the spellings, :func:`fasp.options.flags.parse`
sets each entry's field from its parsed value (the few flags that combine are rules there, read from the
entry's key), ``--help`` and docs/ascp-options.md print the help lines, aspera.conf's schema is the entries'
elements. Adding a flag is adding an entry (and its ``Config`` field, when it has one of its own).

The flags of IBM ascp's usage (``ascp --help``, and the further ones of IBM's option reference that
docs/ascp-options.md lists) are here, so the program takes what faspmanager or a user of IBM's ascp passes.
Each does what its help line says, except: one whose effect cannot be had here is accepted with a ``note``
on stderr (e.g. -6, -u, -SSH), and one that would mean doing something else is ``refused`` with usage error
8 (-@, -w, -K); never silently ignored. -Q, older ascp's switch for adaptive rate control (not in IBM's current
reference; NCBI's SRA Aspera guide gives it as "adaptive flow control"), is --policy=fair; -QQ is refused. -r, the
same era's recursive switch (NCBI's and others' guides give ``-QTr``), is what this program always does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Literal

from fasp.options import filters
from fasp.options.values import (
    absolute,
    as_text,
    base64_text,
    boolean01,
    checksum,
    choice,
    cipher,
    executable,
    file_suffix,
    host_port,
    integer,
    json_object,
    json_object64,
    mtime_bound,
    node_of_nodes,
    policies,
    rate,
    resume_policy,
    size,
    text,
)
from fasp.options.vocabulary import OVERWRITE, POLICIES, PRESERVE_MODES, SYMLINK_POLICIES

Side = Literal["client", "server", "both"]
"""Whose flag: a client's, --server mode's, or both; the other side's flags are ignored."""


@dataclass(frozen=True)
class Conf:
    """Where a flag's default sits in aspera.conf, under ``<default>``."""

    path: str
    """Element names joined by '/'; ``{side}`` stands for ``in`` and ``out`` (a setting per direction)."""
    convert: Callable[[str], str | None] | None = None
    """The element's text -> the flag's spelling of it (None: not set); absent: checked by the flag's own form."""
    aliases: Mapping[str, str | None] = field(default_factory=dict)
    """aspera.conf's own words for a value (None: not set), e.g. <overwrite>deny</overwrite> = never."""


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    key: str
    """Its name in what :func:`fasp.options.flags.tokenize` and aspera.conf yield."""
    value: str
    """The value's placeholder in the help ("" for a switch, which takes none)."""
    help: str
    parse: Callable[[str], object] | None = None
    """Text -> typed value, ValueError saying why not; absent: the text itself (a switch: True, -D a count)."""
    field: str | None = None
    """The ``Config`` attribute its value goes to; None: read by a rule of parse() (or by no one)."""
    side: Side = "client"
    repeat: bool = False
    conf: Conf | None = None
    note: str | None = None
    """Accepted for IBM compatibility without its effect: this note goes to stderr when given."""
    refused: str | None = None
    """Known to ascp but not done here: given, it is usage error 8 with this reason (never silently ignored)."""
    rule: str = ""
    """-E, -N: the sign their PATTERN takes as a filter rule; both append, in command-line order, to the one list
    :data:`FILTERS` (the order decides, fasp/options/filters.py)."""
    counted: bool = False
    """A switch given N times (-DD, -QQ) counts N; any other switch is True however often it is given."""

    @property
    def takes_value(self) -> bool:
        return bool(self.value)


def _flag(
    names: str,
    key: str,
    value: str,
    help: str,
    parse: Callable[[str], object] | None = None,
    *,
    field: str | None | EllipsisType = ...,
    side: Side = "client",
    repeat: bool = False,
    conf: Conf | None = None,
    note: str | None = None,
    refused: str | None = None,
    rule: str = "",
    counted: bool = False,
) -> Flag:
    """An entry; its ``Config`` field is named as its key unless ``field`` says otherwise."""
    field_name = key if field is ... else field
    return Flag(
        tuple(names.split()), key, value, help, parse, field_name, side, repeat, conf, note, refused, rule, counted
    )


FILTERS = "filters"
"""The tokenizer's key for -E and -N rules, in command-line order."""


_FLOW = "transfer/{side}/bandwidth/flow"

FLAGS: tuple[Flag, ...] = (
    _flag(
        "--mode",
        "mode",
        "send|recv",
        "direction when no path names the remote host (with --host)",
        choice(("send", "recv")),
        field=None,
    ),
    _flag(
        "--user",
        "user",
        "USER",
        "remote SSH user (default: the user@ of the remote path, else $USER; one other than the path's is refused)",
        field=None,
    ),
    _flag(
        "--host",
        "host",
        "HOST",
        "remote host, when no path names it (file lists, --dest64); one other than the path's is refused",
        field=None,
    ),
    _flag("-i", "identity", "FILE", "SSH private key file (the key itself may come in ASPERA_SCP_KEY)", field=None),
    _flag("-M", "mgmt_port", "PORT", "management port on 127.0.0.1: events out, commands in", integer(1, 65535)),
    _flag("-q", "quiet", "", "no progress line"),
    _flag("-v", "verbose", "", "accepted; progress is shown unless -q", field=None),
    _flag("--keepalive", "keepalive", "", "persistent session: files arrive as management START commands (needs -M)"),
    _flag(
        "-f",
        "config_file",
        "FILE",
        "defaults from an aspera.conf (the subset fasp/options/asperaconf.py reads); flags win",
        field=None,
        side="both",
    ),
    _flag(
        "--apply-local-docroot",
        "apply_local_docroot",
        "",
        "confine local paths to the docroot of -f FILE or FASP_LOCAL_DOCROOT",
        field=None,
    ),
    _flag(
        "--auto-detect-capacity",
        "auto_detect_capacity",
        "",
        "-l is a percent of the measured path capacity",
        field=None,
    ),
    _flag(
        "--check-sshfp",
        "check_sshfp",
        "FINGERPRINT",
        "trust the server host key with this fingerprint (SHA256:... or MD5 hex)",
        field=None,
    ),
    _flag(
        "--chunk-size",
        "chunk_size",
        "BYTES",
        "stream mode (PUT/WRITE/CLOSE on the management port): bytes per chunk",
        integer(1),
    ),
    _flag(
        "-c",
        "cipher",
        "NAME",
        "aes128|aes192|aes256 (also aes-128..., *gcm, *cfb: the key size) or none",
        cipher,
        field=None,
        conf=Conf("transfer/encryption/cipher"),
    ),
    _flag(
        "--file-crypt",
        "file_crypt",
        "encrypt|decrypt",
        "content protection; passphrase in ASPERA_SCP_FILEPASS",
        choice(("encrypt", "decrypt")),
        field=None,
    ),
    _flag("-d", "create_dirs", "", "DEST is a directory, created if missing (see the destination rule below)"),
    _flag(
        "-Z",
        "datagram_size",
        "BYTES",
        "UDP datagram size (296..65000; default: the path MTU, discovered)",
        integer(296, 65000),
        conf=Conf("transfer/protocol_options/datagram_size"),
    ),
    _flag(
        "--delete-before-transfer",
        "delete_before_transfer",
        "",
        "delete destination files the source directory does not have (a directory of up to 10,000,000 entries, "
        "1 GiB of names)",
        field="delete_before",
    ),
    _flag("-T", "no_encryption", "", "no encryption of the data (still authenticated)", field=None),
    _flag(
        "--exclude-newer-than",
        "exclude_newer_than",
        "MTIME",
        "skip files modified after MTIME (epoch seconds, or -SECONDS: that long ago)",
        mtime_bound,
    ),
    _flag(
        "--exclude-older-than",
        "exclude_older_than",
        "MTIME",
        "skip files modified before MTIME (epoch seconds, or -SECONDS: that long ago)",
        mtime_bound,
    ),
    _flag(
        "-E",
        "exclude",
        "PATTERN",
        "exclude rule: leave out what PATTERN matches (/X anchored at the top, X/ directories only, /** any depth);"
        " repeatable, and with -N the first rule that matches decides (256 rules, 3 runs of * per pattern at most)",
        field=None,
        repeat=True,
        rule=filters.EXCLUDE,
    ),
    _flag(
        "-N",
        "include",
        "PATTERN",
        "include rule: keep what PATTERN matches whatever later -E rules say (only those: -N PATTERN -N '/**/' -E "
        "'/**')",
        field=None,
        repeat=True,
        rule=filters.INCLUDE,
    ),
    _flag(
        "--file-checksum",
        "file_checksum",
        "ALG",
        "md5|sha1|sha256|sha384|sha512|none (also sha-256...): reported per file",
        checksum,
        conf=Conf("file_system/file_checksum", aliases={"any": None}),
    ),
    _flag(
        "--file-manifest",
        "file_manifest",
        "none|text",
        "write a manifest of the session's files",
        choice(("none", "text")),
        field=None,
    ),
    _flag("--file-manifest-path", "file_manifest_path", "DIR", "where --file-manifest=text writes", field=None),
    _flag(
        "--file-manifest-inprogress-suffix",
        "file_manifest_inprogress_suffix",
        "SUFFIX",
        "the manifest is named NAME+SUFFIX until it is complete",
        file_suffix,
        field="manifest_inprogress_suffix",
    ),
    _flag(
        "-y",
        "http_fallback",
        "0|1|F",
        "HTTP(S) carries the data when UDP cannot (F: as 1, see notes)",
        choice(("0", "1", "f")),
        field=None,
    ),
    _flag("-t", "http_port", "PORT", "the server's HTTP fallback port", integer(1, 65535)),
    _flag("-j", "jpeg_encoding", "0|1", "fallback payloads travel as JPEG images", boolean01, field="jpeg"),
    _flag("-Y", "https_key", "FILE", "HTTPS fallback: key file (with -I)", text),
    _flag("-I", "https_cert", "FILE", "HTTPS fallback: certificate file", text),
    _flag(
        "-x", "proxy", "HOST[:PORT]", "reach the HTTP fallback port through this proxy (port 80 by default)", host_port
    ),
    _flag("--ignore-host-key", "ignore_host_key", "", "do not check the server's host key (insecure)", field=None),
    _flag(
        "-L",
        "local_log_dir",
        "DIR",
        "write this client's event log to DIR/fasp-ascp.log",
        text,
        conf=Conf("logging/log_dir"),
    ),
    _flag(
        "-R", "remote_log_dir", "DIR", "ask the server for a session log (written only where the server allows)", text
    ),
    _flag(
        "-m",
        "min_rate",
        "RATE",
        "minimum rate: kbit/s, decimals and K/M/G suffixes (100m, 1.5G), or N% of -l",
        rate(0),
        field=None,
        conf=Conf(f"{_FLOW}/min_rate/default", as_text(integer(0))),
    ),
    _flag(
        "-l",
        "target_rate",
        "RATE",
        "target rate, and FAIR's and HIGH's initial rate: kbit/s, decimals and K/M/G suffixes (100m, 1.5G), or N% of "
        "capacity",
        rate(1),
        field=None,
        conf=Conf(f"{_FLOW}/target_rate/default", as_text(integer(1))),
    ),
    _flag(
        "--move-after-transfer", "move_after_transfer", "DIR", "move each sent source file into DIR", field="move_after"
    ),
    _flag(
        "--multi-session-threshold",
        "multi_session_threshold",
        "BYTES",
        "with -C: files at least this big are split between the sessions (not with --file-crypt)",
        integer(0),
        field="split_above",
    ),
    _flag(
        "-C",
        "multi_session",
        "N:M",
        "this is session N of M: it sends its share of the files",
        node_of_nodes,
        field=None,
    ),
    _flag(
        "--overwrite",
        "overwrite",
        "POLICY",
        "always|never|diff|older|diff+older",
        choice(OVERWRITE),
        conf=Conf("file_system/overwrite", aliases={"allow": None, "deny": "never"}),
    ),
    _flag(
        "--partial-file-suffix",
        "partial_file_suffix",
        "SUFFIX",
        "a file being received is named NAME+SUFFIX until complete",
        file_suffix,
        field="partial_suffix",
        conf=Conf("file_system/partial_file_suffix"),
    ),
    _flag(
        "--policy",
        "policy",
        "POLICY",
        "fixed|high|fair|low rate policy",
        choice(POLICIES),
        conf=Conf(f"{_FLOW}/policy/default"),
    ),
    _flag(
        "-Q",
        "fair_switch",
        "",
        "--policy=fair, as older ascp command lines spell it (adaptive rate control); -QQ is refused",
        field=None,
        counted=True,
    ),
    _flag(
        "-r",
        "recursive",
        "",
        "copy directories recursively, as this program always does (older ascp command lines give it: -QTr)",
        field=None,
    ),
    _flag("-e", "pre_post_command", "PROGRAM", "run PROGRAM at session start/stop and after each file", executable),
    _flag(
        "--precalculate-job-size",
        "precalculate_job_size",
        "",
        "count the job's files and bytes before starting",
        field="precalculate",
    ),
    _flag("--preserve-access-time", "preserve_atime", "", "set the destination's access time to the source's"),
    _flag(
        "--preserve-modification-time", "preserve_mtime", "", "set the destination's modification time to the source's"
    ),
    _flag("--preserve-creation-time", "preserve_ctime", "", "preserve creation time (where the file system has one)"),
    _flag(
        "--preserve-source-access-time",
        "preserve_source_atime",
        "",
        "restore the source's access time after reading it",
    ),
    _flag("-p", "preserve_dates", "", "--preserve-access-time and --preserve-modification-time", field=None),
    _flag("--preserve-file-owner-uid", "preserve_uid", "", "preserve the file owner's uid"),
    _flag("--preserve-file-owner-gid", "preserve_gid", "", "preserve the file owner's gid"),
    _flag(
        "--preserve-acls",
        "preserve_acls",
        "MODE",
        "none|native|metafile: POSIX ACLs, this side",
        choice(PRESERVE_MODES),
        field=None,
    ),
    _flag(
        "--preserve-xattrs",
        "preserve_xattrs",
        "MODE",
        "none|native|metafile: user extended attributes, this side",
        choice(PRESERVE_MODES),
        field=None,
    ),
    _flag(
        "--remote-preserve-acls",
        "remote_preserve_acls",
        "MODE",
        "as --preserve-acls, on the remote side",
        choice(PRESERVE_MODES),
        field=None,
    ),
    _flag(
        "--remote-preserve-xattrs",
        "remote_preserve_xattrs",
        "MODE",
        "as --preserve-xattrs, on the remote side",
        choice(PRESERVE_MODES),
        field=None,
    ),
    _flag(
        "-g",
        "read_size",
        "SIZE",
        "bytes per source read: bytes, or K/M (x1024, x1024*1024)",
        size(1, 1 << 30),
        conf=Conf("file_system/read_block_size", as_text(integer(0, 1 << 30), unset="0")),
    ),
    _flag(
        "-G",
        "write_size",
        "SIZE",
        "bytes per destination write: bytes, or K/M (x1024, x1024*1024)",
        size(1, 1 << 30),
        conf=Conf("file_system/write_block_size", as_text(integer(0, 1 << 30), unset="0")),
    ),
    _flag("--remove-after-transfer", "remove_after_transfer", "", "remove each source file once it is transferred"),
    _flag(
        "--remove-empty-directories",
        "remove_empty_directories",
        "",
        "with --remove/--move-after-transfer: remove emptied directories",
    ),
    _flag(
        "--remove-empty-source-directory",
        "remove_empty_source_directory",
        "",
        "... and the source directory itself when empty",
    ),
    _flag(
        "-k",
        "resume",
        "0|1|2|3",
        "resume check: 0 none, 1 size, 2 sparse checksum, 3 full checksum",
        integer(0, 3),
        conf=Conf("transfer/resume_policy", resume_policy),
    ),
    _flag("-X", "retransmission_max", "BYTES", "largest retransmission request", integer(1, 1 << 30)),
    _flag(
        "--retry-timeout",
        "retry_timeout",
        "SECONDS",
        "reported in INIT for monitoring (no IBM ascp flag; this engine does not retry by itself)",
        integer(0),
    ),
    _flag(
        "--save-before-overwrite",
        "save_before_overwrite",
        "",
        "keep an overwritten file as NAME.yyyy.mm.dd.hh.mm.ss.index.EXT",
    ),
    _flag(
        "--skip-dir-traversal-dupes",
        "skip_dir_traversal_dupes",
        "",
        "send a directory reached twice (links) only once",
        field="skip_dir_dupes",
    ),
    _flag("--skip-special-files", "skip_special_files", "", "skip devices, FIFOs and sockets instead of failing"),
    _flag("--src-base", "src_base", "PREFIX", "strip PREFIX from source paths; the rest is kept below DEST"),
    _flag("--source-prefix", "source_prefix", "PREFIX", "prepend PREFIX to every source path"),
    _flag(
        "--symbolic-links",
        "symbolic_links",
        "POLICY",
        "follow|copy|copy+force|skip",
        choice(SYMLINK_POLICIES),
        field="symlinks",
    ),
    _flag("-P", "tcp_port", "PORT", "SSH port (default 22)", integer(1, 65535), field=None),
    _flag(
        "-S",
        "remote_command",
        "COMMAND",
        "the remote engine's command line (as FASP_REMOTE_COMMAND, which it overrides)",
        text,
        field=None,
    ),
    _flag("-W", "token", "TOKEN", "transfer token (as ASPERA_SCP_TOKEN, which it overrides)", text),
    _flag(
        "-6",
        "ipv6",
        "",
        "IPv6 (see notes)",
        field=None,
        note="-6: not needed here: the host's IPv6 addresses are used as it resolves, an IPv6 literal as is",
    ),
    _flag(
        "-u",
        "user_string",
        "STRING",
        "user-specific string (see notes)",
        field=None,
        note="-u: the user string is accepted but not used (no -e program or log here reads it)",
    ),
    _flag(
        "-@",
        "byte_range",
        "LOW:HIGH",
        "transfer a byte range of a file: refused here",
        field=None,
        refused="a byte range of a file cannot be asked for on the command line here (a -M START command's range can)",
    ),
    _flag(
        "-w",
        "bandwidth_test",
        "r|f",
        "bandwidth test: refused here",
        field=None,
        refused="ascp's bandwidth test is not part of this engine (--auto-detect-capacity measures the path)",
    ),
    _flag(
        "-K",
        "probe_rate",
        "RATE",
        "bandwidth test probes per second: refused here",
        field=None,
        refused="ascp's bandwidth test is not part of this engine (--auto-detect-capacity measures the path)",
    ),
    _flag("-O", "udp_port", "PORT", "UDP port (the server's, in server mode)", integer(0, 65535), side="both"),
    _flag(
        "--file-list",
        "file_list",
        "FILE",
        "sources, one per line (DEST is then a directory, created if missing: -d is implied)",
        field=None,
    ),
    _flag(
        "--file-pair-list",
        "file_pair_list",
        "FILE",
        "source and destination lines, alternating; destinations are below DEST (-d is implied)",
        field=None,
    ),
    _flag(
        "--dest64",
        "dest64",
        "",
        "the DEST argument is base64 (a path; the host comes from --host), as ascli passes it",
        field=None,
    ),
    _flag("--src-base64", "src_base64", "BASE64", "--src-base, base64-encoded", base64_text, field="src_base"),
    _flag(
        "--source-prefix64",
        "source_prefix64",
        "BASE64",
        "--source-prefix, base64-encoded",
        base64_text,
        field="source_prefix",
    ),
    _flag(
        "--tags",
        "tags",
        "JSON",
        "metadata (a JSON object): sent to the peer (its log) and in every event but STATS as Tags",
        json_object,
    ),
    _flag("--tags64", "tags64", "BASE64", "--tags, base64-encoded", json_object64, field="tags"),
    _flag("-D", "debug", "", "debug log on stderr; -DD, -DDD: more", counted=True),
    _flag(
        "-SSH",
        "use_system_ssh",
        "",
        "system ssh client (see notes)",
        field=None,
        note="-SSH: this engine always uses its built-in SSH client (asyncssh); ssh's own "
        "configuration and programs are not used",
    ),
    _flag(
        "--ssh-arg",
        "ssh_arg",
        "ARG",
        "argument for the system ssh client (see notes)",
        field=None,
        repeat=True,
        note="--ssh-arg: ignored (it is for the system ssh of -SSH, which this engine does not run)",
    ),
    _flag(
        "--proxy",
        "aspera_proxy",
        "URL",
        "Aspera DNAT proxy dnat(s)://... (see notes)",
        field=None,
        note="--proxy: Aspera's DNAT proxy is not supported here; connecting directly "
        "(-x HOST[:PORT] is the HTTP fallback's proxy)",
    ),
    _flag(
        "--remove-skipped",
        "remove_skipped",
        "",
        "with --remove-after-transfer, also remove source files skipped because the destination has them",
    ),
    _flag(
        "--fail-bad-filepass",
        "fail_bad_filepass",
        "",
        "fail on a wrong decryption passphrase (always so here)",
        field=None,
    ),
    _flag(
        "--ws-connect",
        "ws_connect",
        "",
        "WebSocket session (see notes)",
        field=None,
        note="--ws-connect: WebSocket sessions are not supported here; using SSH",
    ),
    _flag("--precalculate-disable", "precalculate_disable", "", "cancel --precalculate-job-size", field=None),
    _flag("--server", "server", "", "server mode: the remote end, run by fasp-server or over sshd", side="both"),
    _flag(
        "--docroot",
        "docroot",
        "DIR",
        "server mode: confine the client to DIR (or FASP_DOCROOT)",
        text,
        side="server",
        conf=Conf("file_system/access/paths/path/absolute", absolute),
    ),
    _flag(
        "--rate-cap",
        "rate_cap",
        "KBPS",
        "server mode: cap every session's rate",
        integer(1),
        field="rate_cap_kbps",
        side="server",
        conf=Conf(f"{_FLOW}/target_rate/cap", as_text(integer(1))),
    ),
    _flag(
        "--allowed-policies",
        "allowed_policies",
        "LIST",
        "server mode: the rate policies a client may ask for",
        policies,
        side="server",
    ),
    _flag(
        "--log-dir",
        "server_log_dir",
        "DIR",
        "server mode: where a client's -R log goes (or FASP_LOG_DIR)",
        text,
        side="server",
    ),
    _flag("-h --help", "help", "", "this list, then exit 0", field=None, side="both"),
    _flag("-A --version", "version", "", "print the version, then exit 0", field=None, side="both"),
)

BY_NAME = {name: flag for flag in FLAGS for name in flag.names}
