"""The ascp command line: one table of every flag, a parser, and the typed config it yields.

Every flag of ascp's command line (docs/ascp-options.md) is in the table, so the program accepts
what faspmanager (or a user of IBM's ascp) passes. A flag we do not implement
yet is accepted by the parser but rejected by :func:`parse` with usage error 8
"not supported yet" when its value would change behaviour: a transfer never
silently does something other than what was asked.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from dataclasses import dataclass, field
from faspmanager.codes import EngineError, ErrorCode

DEFAULT_TARGET_KBPS = 1_000_000
"""Target rate when -l is absent: high, the rate controller finds the real capacity."""


def usage(message: str) -> EngineError:
    return EngineError(ErrorCode.USAGE, message)


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    key: str
    takes_value: bool = False
    repeat: bool = False


def _flag(names: str, key: str, takes_value: bool = False, repeat: bool = False) -> Flag:
    return Flag(tuple(names.split()), key, takes_value, repeat)


FLAGS: tuple[Flag, ...] = (
    _flag("--mode", "mode", True),
    _flag("--user", "user", True),
    _flag("--host", "host", True),
    _flag("-i", "identity", True),
    _flag("-M", "mgmt_port", True),
    _flag("-q", "quiet"),
    _flag("-v", "verbose"),
    _flag("--keepalive", "keepalive"),
    _flag("-f", "config_file", True),
    _flag("--apply-local-docroot", "apply_local_docroot"),
    _flag("--auto-detect-capacity", "auto_detect_capacity"),
    _flag("--check-sshfp", "check_sshfp", True),
    _flag("--chunk-size", "chunk_size", True),
    _flag("-c", "cipher", True),
    _flag("--file-crypt", "file_crypt", True),
    _flag("-d", "create_dirs"),
    _flag("-Z", "datagram_size", True),
    _flag("--delete-before-transfer", "delete_before_transfer"),
    _flag("-T", "no_encryption"),
    _flag("--exclude-newer-than", "exclude_newer_than", True),
    _flag("--exclude-older-than", "exclude_older_than", True),
    _flag("-E", "exclude", True, repeat=True),
    _flag("--file-checksum", "file_checksum", True),
    _flag("--file-manifest", "file_manifest", True),
    _flag("--file-manifest-path", "file_manifest_path", True),
    _flag("-y", "http_fallback", True),
    _flag("-t", "http_port", True),
    _flag("-j", "jpeg_encoding", True),
    _flag("-Y", "https_key", True),
    _flag("-I", "https_cert", True),
    _flag("-x", "proxy", True),
    _flag("--ignore-host-key", "ignore_host_key"),
    _flag("-L", "local_log_dir", True),
    _flag("-R", "remote_log_dir", True),
    _flag("-m", "min_rate", True),
    _flag("-l", "target_rate", True),
    _flag("--move-after-transfer", "move_after_transfer", True),
    _flag("--multi-session-threshold", "multi_session_threshold", True),
    _flag("-C", "multi_session", True),
    _flag("--overwrite", "overwrite", True),
    _flag("--partial-file-suffix", "partial_file_suffix", True),
    _flag("--policy", "policy", True),
    _flag("-e", "pre_post_command", True),
    _flag("--precalculate-job-size", "precalculate_job_size"),
    _flag("--preserve-access-time", "preserve_atime"),
    _flag("--preserve-modification-time", "preserve_mtime"),
    _flag("--preserve-creation-time", "preserve_ctime"),
    _flag("--preserve-source-access-time", "preserve_source_atime"),
    _flag("-p", "preserve_dates"),
    _flag("--preserve-file-owner-uid", "preserve_uid"),
    _flag("--preserve-file-owner-gid", "preserve_gid"),
    _flag("--preserve-acls", "preserve_acls", True),
    _flag("--preserve-xattrs", "preserve_xattrs", True),
    _flag("--remote-preserve-acls", "remote_preserve_acls", True),
    _flag("--remote-preserve-xattrs", "remote_preserve_xattrs", True),
    _flag("-g", "read_size", True),
    _flag("-G", "write_size", True),
    _flag("--remove-after-transfer", "remove_after_transfer"),
    _flag("--remove-empty-directories", "remove_empty_directories"),
    _flag("--remove-empty-source-directory", "remove_empty_source_directory"),
    _flag("-k", "resume", True),
    _flag("-X", "retransmission_max", True),
    _flag("--retry-timeout", "retry_timeout", True),
    _flag("--save-before-overwrite", "save_before_overwrite"),
    _flag("--skip-dir-traversal-dupes", "skip_dir_traversal_dupes"),
    _flag("--skip-special-files", "skip_special_files"),
    _flag("--src-base", "src_base", True),
    _flag("--source-prefix", "source_prefix", True),
    _flag("--symbolic-links", "symbolic_links", True),
    _flag("-P", "tcp_port", True),
    _flag("-O", "udp_port", True),
    _flag("--file-list", "file_list", True),
    _flag("--file-pair-list", "file_pair_list", True),
    # IBM's further spellings, as aspera-cli (ascli) builds them from a transfer spec
    _flag("--dest64", "dest64"),
    _flag("--src-base64", "src_base64", True),
    _flag("--source-prefix64", "source_prefix64", True),
    _flag("--tags", "tags", True),
    _flag("--tags64", "tags64", True),
    _flag("-D", "debug"),
    _flag("-SSH", "use_system_ssh"),
    _flag("--ssh-arg", "ssh_arg", True, repeat=True),
    _flag("--proxy", "aspera_proxy", True),
    _flag("--remove-skipped", "remove_skipped"),
    _flag("--fail-bad-filepass", "fail_bad_filepass"),
    _flag("--ws-connect", "ws_connect"),
    _flag("--precalculate-disable", "precalculate_disable"),
    # server mode (run by fasp-server or over sshd): not part of ascp's table
    _flag("--server", "server"),
    _flag("--docroot", "docroot", True),
    _flag("--rate-cap", "rate_cap", True),
    _flag("--allowed-policies", "allowed_policies", True),
    _flag("--log-dir", "server_log_dir", True),
    _flag("-h --help", "help"),
    _flag("-A --version", "version"),
)

_BY_NAME = {name: flag for flag in FLAGS for name in flag.names}

CHECKSUMS = ("md5", "sha1", "sha256", "sha384", "sha512", "none")
CHECKSUM_SPELLINGS = {"sha-1": "sha1", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}
"""The transfer spec's spellings (IBM's file_checksum enum), as ascli passes them."""
OVERWRITE = ("always", "never", "diff", "older", "diff+older")
POLICIES = ("fixed", "high", "fair", "low")
CIPHERS = {"aes128": 16, "aes-128": 16, "aes192": 24, "aes-192": 24, "aes256": 32, "aes-256": 32,
           "aes128gcm": 16, "aes192gcm": 24, "aes256gcm": 32, "none": 0,
           "aes128cfb": 16, "aes192cfb": 24, "aes256cfb": 32}
"""-c values: every spelling of IBM's cipher enum, with and without the hyphens ascli removes. The key size
is honoured; the data is always sealed with this engine's own AEAD, so a CFB name gets a note on stderr."""


def tokenize(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """Split argv into {flag key: value} and positional args; ``--opt=v``, ``--opt v``, ``-lV``, ``-l V``."""
    values: dict[str, object] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            flag = _BY_NAME.get(name)
            if flag is None:
                raise usage(f"unknown option {name!r}")
            if not flag.takes_value and eq:
                raise usage(f"option {name} takes no value")
            value = inline if eq else None
        else:
            name = arg if arg in _BY_NAME else arg[:2]   # -SSH is one name, -lV a flag and its value
            flag = _BY_NAME.get(name)
            if flag is None:
                raise usage(f"unknown option {name!r}")
            if flag.takes_value:
                value = arg[len(name):] or None
            else:
                # bundled switches such as -qd or -pT; -DD and -DDD are debug levels
                for letter in arg[len(name):]:
                    more = _BY_NAME.get("-" + letter)
                    if more is None or more.takes_value:
                        raise usage(f"unknown option {'-' + letter!r} in {arg!r}")
                    _switch(values, more.key)
                value = None
        if flag.takes_value:
            if value is None:
                if i >= len(argv):
                    raise usage(f"option {name} needs a value")
                value = argv[i]
                i += 1
            if flag.repeat:
                values.setdefault(flag.key, []).append(value)  # type: ignore[union-attr]
            else:
                values[flag.key] = value
        else:
            _switch(values, flag.key)
    return values, positional


def _switch(values: dict, key: str) -> None:
    """A switch is True; -D counts (each D one more debug level)."""
    values[key] = values.get(key, 0) + 1 if key == "debug" else True


@dataclass
class Endpoint:
    """A remote side: who, where, and the SSH credentials (kept out of repr)."""

    host: str
    user: str
    port: int = 22
    identity: str | None = None
    password: str | None = field(default=None, repr=False)
    key_text: str | None = field(default=None, repr=False)    # ASPERA_SCP_KEY: a private key itself
    check_sshfp: str | None = None
    ignore_host_key: bool = False


@dataclass
class Config:
    """A validated command line."""

    direction: str = "send"                      # client's role: "send" (upload) or "recv" (download)
    sources: list[str] = field(default_factory=list)
    pair_dests: list[str] | None = None          # --file-pair-list: destination per source
    listed: bool = False                         # sources came from --file-list/--file-pair-list, not argv
    dest: str = "."
    remote: Endpoint | None = None
    mgmt_port: int | None = None
    quiet: bool = False
    keepalive: bool = False
    stream_chunk_size: int | None = None
    key_bytes: int = 16                          # 0 = -T, no encryption
    cipher: str = "aes128"
    create_dirs: bool = False
    datagram_size: int = 1400
    exclude: list[str] = field(default_factory=list)
    exclude_newer_than: int | None = None
    exclude_older_than: int | None = None
    file_checksum: str = "none"
    target_kbps: int = DEFAULT_TARGET_KBPS
    min_kbps: int = 0
    policy: str = "fair"
    overwrite: str = "diff"
    partial_suffix: str = ""
    precalculate: bool = False
    preserve_mtime: bool = False
    preserve_atime: bool = False
    preserve_source_atime: bool = False
    preserve_uid: bool = False
    preserve_gid: bool = False
    remove_after_transfer: bool = False
    remove_empty_source_directory: bool = False
    remove_empty_directories: bool = False
    move_after: str | None = None
    save_before_overwrite: bool = False
    delete_before: bool = False
    prepost: str | None = None                   # -e PATH: run at session start/stop and after each file
    node: int = 1                                # -C NODE:NODES: this process's share of the files
    nodes: int = 1
    split_above: int = 0                         # --multi-session-threshold: larger files are cut in NODES ranges
    xattrs: bool = False                         # --preserve-xattrs=native: user xattrs travel
    acls: bool = False                           # --preserve-acls=native: POSIX ACLs travel
    manifest_dir: str | None = None
    file_pass: str | None = field(default=None, repr=False)   # --file-crypt: never sent to the peer
    local_docroot: str | None = None             # --apply-local-docroot: FASP_LOCAL_DOCROOT confines local paths
    resume: int = 0
    src_base: str | None = None
    symlinks: str = "follow"
    skip_special_files: bool = False
    skip_dir_dupes: bool = False
    udp_port: int = 0
    cookie: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    retry_timeout: int | None = None
    local_log_dir: str | None = None
    remote_log_dir: str | None = None
    read_size: int = 0                           # -g: bytes per source read (0: the datapath's own choice)
    write_size: int = 0                          # -G: bytes per destination write (0: the datapath's own choice)
    retransmission_max: int = 0                  # -X: largest retransmission request in bytes (0: one datagram)
    auto_capacity: bool = False                  # --auto-detect-capacity: target_kbps is a percent of capacity
    preserve_ctime: bool = False                 # --preserve-creation-time
    acls_local: str = "none"                     # --preserve-acls: none | native | metafile, on this side
    acls_remote: str = "none"                    # --remote-preserve-acls (defaults to --preserve-acls)
    xattrs_local: str = "none"                   # --preserve-xattrs
    xattrs_remote: str = "none"                  # --remote-preserve-xattrs (defaults to --preserve-xattrs)
    http_fallback: bool = False                  # -y 1: HTTP(S) carries the data when UDP cannot
    http_port: int = 8080                        # -t: the server's HTTP fallback port
    jpeg: bool = False                           # -j 1: fallback payloads travel as JPEG images
    https_key: str | None = None                 # -Y KEYFILE
    https_cert: str | None = None                # -I CERTFILE: HTTPS instead of HTTP
    proxy: tuple[str, int] | None = None         # -x HOST:PORT: reach the fallback port through this proxy
    # server mode
    server: bool = False
    docroot: str | None = None
    rate_cap_kbps: int | None = None
    allowed_policies: tuple[str, ...] = POLICIES
    server_log_dir: str | None = None            # --log-dir: where a client's -R log goes (the client's DIR never)
    # IBM's further options
    tags: dict | None = None                     # --tags / --tags64: JSON metadata, to the peer and in events
    debug: int = 0                               # -D, -DD, -DDD: stderr log level
    remove_skipped: bool = False                 # --remove-skipped: with --remove-after-transfer, skipped go too
    notes: list[str] = field(default_factory=list)  # options accepted without their full effect: told on stderr

    @property
    def lone(self) -> bool:
        """One source named on the command line itself: only then may DEST be its new file name (IBM's rule;
        -d and the target's kind are decided where the file lands, fasp/files/naming.py)."""
        return len(self.sources) == 1 and not self.listed and self.pair_dests is None and not self.src_base

    def options_for_peer(self) -> dict:
        """What the remote side must know to apply this command line's file rules."""
        return {
            "overwrite": self.overwrite, "resume": self.resume, "partial_suffix": self.partial_suffix,
            "checksum": self.file_checksum, "create_dirs": self.create_dirs,
            "preserve_mtime": self.preserve_mtime, "preserve_atime": self.preserve_atime,
            "preserve_source_atime": self.preserve_source_atime,
            "preserve_uid": self.preserve_uid, "preserve_gid": self.preserve_gid,
            "remove_after_transfer": self.remove_after_transfer,
            "remove_empty_source_directory": self.remove_empty_source_directory,
            "remove_empty_directories": self.remove_empty_directories, "move_after": self.move_after,
            "save_before_overwrite": self.save_before_overwrite, "delete_before": self.delete_before,
            "xattrs": self.xattrs, "acls": self.acls,
            "xattrs_mode": self.xattrs_remote, "acls_mode": self.acls_remote,
            "preserve_ctime": self.preserve_ctime, "read_size": self.read_size,
            "write_size": self.write_size, "retransmission_max": self.retransmission_max,
            "node": self.node, "nodes": self.nodes, "split_above": self.split_above,
            "exclude": self.exclude, "exclude_newer_than": self.exclude_newer_than,
            "exclude_older_than": self.exclude_older_than, "src_base": self.src_base,
            "symlinks": self.symlinks, "skip_special_files": self.skip_special_files,
            "skip_dir_dupes": self.skip_dir_dupes,
            "log_dir": self.remote_log_dir, "tags": self.tags, "remove_skipped": self.remove_skipped,
        }

    def local_options(self) -> dict:
        """The same file rules for this side's own roles: only the ACL/xattr modes differ (local vs remote)."""
        return {**self.options_for_peer(), "xattrs_mode": self.xattrs_local, "acls_mode": self.acls_local}


def _int(key: str, raw: object, lo: int = 0, hi: int | None = None) -> int:
    try:
        value = int(str(raw), 10)
    except ValueError:
        raise usage(f"{key}: {raw!r} is not an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise usage(f"{key}: {value} is out of range [{lo}, {hi if hi is not None else 'inf'}]")
    return value


def _choice(key: str, raw: object, choices) -> str:
    value = str(raw).lower()
    if value not in choices:
        raise usage(f"{key}: {raw!r} is not one of {', '.join(choices)}")
    return value


_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([kmgp%]?)$", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1, "m": 1000, "g": 1_000_000}


def rate(key: str, raw: object, lo: int) -> tuple[int, bool]:
    """ascp's rate forms: kbit/s, decimals allowed, with K/M/G suffixes (x1, x1000, x1000000: ``100m``,
    ``1.5G``) or P/p/% for a percent; (value, is_percent). A fraction of a kbit/s rounds to the nearest."""
    match = _RATE.match(str(raw).strip())
    if not match:
        raise usage(f"{key}: {raw!r} is not a rate (kbit/s, with an optional K, M, G or % suffix)")
    number, unit = float(match.group(1)), match.group(2).lower()
    percent = unit in ("p", "%")
    value = round(number * (1 if percent else _RATE_UNITS[unit]))
    if value < lo:
        raise usage(f"{key}: {raw!r} is below {lo}")
    return value, percent


_REMOTE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/@\s]+):(?P<path>.*)$")


def _mtime_bound(key: str, raw: object) -> int:
    """ascp's MTIME: seconds since the epoch, or (negative) seconds before now, fixed when the session starts."""
    value = _int(key, str(raw).removeprefix("-"))
    return int(time.time()) - value if str(raw).startswith("-") else value


def split_remote(arg: str) -> tuple[str | None, str | None, str]:
    """``[user@]host:path`` -> (user, host, path); a local path -> (None, None, path)."""
    match = _REMOTE.match(arg)
    if not match or os.path.exists(arg):
        return None, None, arg
    return match.group("user"), match.group("host").strip("[]"), match.group("path")


def _read_list(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.rstrip("\r\n") for line in handle if line.rstrip("\r\n")]
    except OSError as exc:
        raise EngineError(ErrorCode.NO_SUCH_FILE, f"cannot read list file {path!r}: {exc.strerror}") from None


PRESERVE_MODES = ("none", "native", "metafile")


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    """A validated :class:`Config`, or EngineError(8) naming what is wrong."""
    env = os.environ if environ is None else environ
    values, positional = tokenize(argv)
    if values.get("config_file"):
        from fasp.options import asperaconf
        # the file supplies defaults; a flag on the command line wins
        values = {**asperaconf.load(str(values["config_file"])).defaults(values, positional), **values}
    cfg = Config()
    _ibm_forms(cfg, values)
    get = values.get
    if get("file_manifest") is not None:
        _choice("--file-manifest", get("file_manifest"), ("none", "text"))
    if get("file_crypt") is not None:
        _choice("--file-crypt", get("file_crypt"), ("encrypt", "decrypt"))

    cfg.server = bool(get("server"))
    if cfg.server:
        cfg.docroot = str(get("docroot")) if get("docroot") else env.get("FASP_DOCROOT") or None
        if get("rate_cap") is not None:
            cfg.rate_cap_kbps = _int("--rate-cap", get("rate_cap"), 1)
        if get("allowed_policies"):
            cfg.allowed_policies = tuple(_choice("--allowed-policies", p.strip(), POLICIES)
                                         for p in str(get("allowed_policies")).split(",") if p.strip())
        if get("udp_port") is not None:
            cfg.udp_port = _int("-O", get("udp_port"), 0, 65535)
        cfg.server_log_dir = str(get("server_log_dir") or env.get("FASP_LOG_DIR") or "") or None
        if positional:
            raise usage(f"--server takes no paths, got {positional[0]!r}")
        return cfg

    cfg.quiet = bool(get("quiet"))
    cfg.keepalive = bool(get("keepalive"))
    if get("mgmt_port") is not None:
        cfg.mgmt_port = _int("-M", get("mgmt_port"), 1, 65535)
    if get("chunk_size") is not None:
        cfg.stream_chunk_size = _int("--chunk-size", get("chunk_size"), 1)
    if get("no_encryption"):
        cfg.key_bytes, cfg.cipher = 0, "none"
    elif get("cipher") is not None:
        name = _choice("-c", str(get("cipher")).replace("-", ""), CIPHERS)  # aes-128-gcm as aes128gcm
        cfg.key_bytes, cfg.cipher = CIPHERS[name], name
        if name.endswith("cfb"):
            cfg.notes.append(f"-c {name}: the key size is honoured, but data is sealed with this engine's "
                             f"authenticated AES (GCM), not CFB")
        if cfg.key_bytes == 0:
            cfg.cipher = "none"
    cfg.create_dirs = bool(get("create_dirs"))
    if get("datagram_size") is not None:
        cfg.datagram_size = _int("-Z", get("datagram_size"), 296, 65000)
    cfg.exclude = list(get("exclude") or [])
    for key in ("exclude_newer_than", "exclude_older_than"):
        if get(key) is not None:
            setattr(cfg, key, _mtime_bound(f"--{key.replace('_', '-')}", get(key)))
    if get("file_checksum") is not None:
        raw = str(get("file_checksum")).lower()
        cfg.file_checksum = _choice("--file-checksum", CHECKSUM_SPELLINGS.get(raw, raw), CHECKSUMS)
    target_percent = None
    if get("target_rate") is not None:
        value, percent = rate("-l", get("target_rate"), 1)
        if percent or get("auto_detect_capacity"):
            target_percent = _int("-l (a percent of capacity)", value, 1, 100)
        else:
            cfg.target_kbps = value
    if get("target_cap") is not None:   # -f's <cap> is a ceiling for -l too
        cfg.target_kbps = min(cfg.target_kbps, int(get("target_cap")))
    if get("min_rate") is not None:
        value, percent = rate("-m", get("min_rate"), 0)
        if percent and target_percent is not None:
            raise usage("-m N% is a percent of -l, which is itself a percent of capacity here: give -m in kbit/s")
        cfg.min_kbps = cfg.target_kbps * _int("-m (percent)", value, 0, 100) // 100 if percent else value
    if cfg.min_kbps > cfg.target_kbps and target_percent is None:
        raise usage(f"-m {cfg.min_kbps} is above -l {cfg.target_kbps}")
    if get("policy") is not None:
        cfg.policy = _choice("--policy", get("policy"), POLICIES)
    if get("overwrite") is not None:
        cfg.overwrite = _choice("--overwrite", get("overwrite"), OVERWRITE)
    if get("partial_file_suffix") is not None:
        cfg.partial_suffix = str(get("partial_file_suffix"))
        if "/" in cfg.partial_suffix:
            raise usage("--partial-file-suffix may not contain '/'")
    cfg.precalculate = bool(get("precalculate_job_size"))
    cfg.preserve_mtime = bool(get("preserve_mtime") or get("preserve_dates"))
    cfg.preserve_atime = bool(get("preserve_atime") or get("preserve_dates"))
    cfg.preserve_source_atime = bool(get("preserve_source_atime"))
    cfg.preserve_uid = bool(get("preserve_uid"))
    cfg.preserve_gid = bool(get("preserve_gid"))
    cfg.remove_after_transfer = bool(get("remove_after_transfer"))
    cfg.remove_empty_source_directory = bool(get("remove_empty_source_directory"))
    cfg.remove_empty_directories = bool(get("remove_empty_directories"))
    if get("move_after_transfer") is not None:
        cfg.move_after = str(get("move_after_transfer"))
    if cfg.remove_after_transfer and cfg.move_after:
        raise usage("--remove-after-transfer and --move-after-transfer exclude each other")
    for key, name in (("remove_empty_source_directory", "--remove-empty-source-directory"),
                      ("remove_empty_directories", "--remove-empty-directories")):
        if getattr(cfg, key) and not (cfg.remove_after_transfer or cfg.move_after):
            raise usage(f"{name} needs --remove-after-transfer or --move-after-transfer")
    cfg.save_before_overwrite = bool(get("save_before_overwrite"))
    cfg.delete_before = bool(get("delete_before_transfer"))
    if get("pre_post_command") is not None:
        cfg.prepost = str(get("pre_post_command"))
        if not os.access(cfg.prepost, os.X_OK) or os.path.isdir(cfg.prepost):
            raise usage(f"-e {cfg.prepost}: not an executable program")
    if get("multi_session") is not None:
        node, _, nodes = str(get("multi_session")).partition(":")
        cfg.node, cfg.nodes = _int("-C", node, 1), _int("-C", nodes or "0", 1)
        if cfg.node > cfg.nodes:
            raise usage(f"-C {get('multi_session')}: node {cfg.node} of only {cfg.nodes}")
    if get("multi_session_threshold") is not None:
        cfg.split_above = _int("--multi-session-threshold", get("multi_session_threshold"), 0)
    for what in ("acls", "xattrs"):
        local, remote = (None if get(k) is None else _choice(f"--{k.replace('_', '-')}", get(k), PRESERVE_MODES)
                         for k in (f"preserve_{what}", f"remote_preserve_{what}"))
        setattr(cfg, f"{what}_local", local or remote or "none")
        setattr(cfg, f"{what}_remote", remote or local or "none")
    cfg.xattrs = (cfg.xattrs_local, cfg.xattrs_remote) != ("none", "none")
    cfg.acls = (cfg.acls_local, cfg.acls_remote) != ("none", "none")
    cfg.preserve_ctime = bool(get("preserve_ctime"))
    for key, flag_name, attr in (("read_size", "-g", "read_size"), ("write_size", "-G", "write_size"),
                                 ("retransmission_max", "-X", "retransmission_max")):
        if get(key) is not None:
            setattr(cfg, attr, _int(flag_name, get(key), 1, 1 << 30))
    cfg.auto_capacity = bool(get("auto_detect_capacity")) or target_percent is not None
    if cfg.auto_capacity:  # -l is a percent of the measured capacity
        cfg.target_kbps = target_percent if target_percent is not None else 100
    if str(get("file_manifest", "none")).lower() == "text":
        if not get("file_manifest_path"):
            raise usage("--file-manifest=text needs --file-manifest-path=DIR")
        cfg.manifest_dir = str(get("file_manifest_path"))
    if get("resume") is not None:
        cfg.resume = _int("-k", get("resume"), 0, 3)
    if get("src_base") is not None:
        cfg.src_base = str(get("src_base"))
    if get("symbolic_links") is not None:
        cfg.symlinks = _choice("--symbolic-links", get("symbolic_links"), ("follow", "copy", "copy+force", "skip"))
    cfg.skip_special_files = bool(get("skip_special_files"))
    cfg.skip_dir_dupes = bool(get("skip_dir_traversal_dupes"))
    if get("udp_port") is not None:
        cfg.udp_port = _int("-O", get("udp_port"), 0, 65535)
    _http_fallback(cfg, get)
    if get("retry_timeout") is not None:
        cfg.retry_timeout = _int("--retry-timeout", get("retry_timeout"))
    cfg.local_log_dir = str(get("local_log_dir")) if get("local_log_dir") else None
    cfg.remote_log_dir = str(get("remote_log_dir")) if get("remote_log_dir") else None
    cfg.cookie = env.get("ASPERA_SCP_COOKIE")
    cfg.token = env.get("ASPERA_SCP_TOKEN")

    mode = get("mode")
    if mode is not None:
        mode = _choice("--mode", mode, ("send", "recv"))
    _place(cfg, values, positional, mode, env)
    _content_protection(cfg, get("file_crypt"), env.get("ASPERA_SCP_FILEPASS"))
    if get("apply_local_docroot"):
        cfg.local_docroot = get("local_docroot") or env.get("FASP_LOCAL_DOCROOT")
        if not cfg.local_docroot:
            raise usage("--apply-local-docroot needs a local docroot: an <absolute> in -f FILE, "
                        "or FASP_LOCAL_DOCROOT")
    return cfg


def _b64(key: str, raw: object) -> str:
    """A ``*64`` option's value: standard base64 of UTF-8 text (ascli's strict_encode64)."""
    try:
        return base64.b64decode(str(raw), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise usage(f"{key}: {raw!r} is not base64 of UTF-8 text") from None


MAX_TAGS = 64 * 1024
"""Bytes of --tags JSON accepted: metadata for events and logs, not a payload."""

NOT_HERE = {
    "use_system_ssh": "-SSH: this engine always uses its built-in SSH client (asyncssh); ssh's own "
                      "configuration and programs are not used",
    "ssh_arg": "--ssh-arg: ignored (it is for the system ssh of -SSH, which this engine does not run)",
    "aspera_proxy": "--proxy: Aspera's DNAT proxy is not supported here; connecting directly "
                    "(-x HOST:PORT is the HTTP fallback's proxy)",
    "ws_connect": "--ws-connect: WebSocket sessions are not supported here; using SSH",
}
"""Options accepted for IBM compatibility that cannot have their effect here: one note each on stderr
(docs/ascp-options.md says the same). A value (a proxy URL may hold a password) is never repeated."""


def _ibm_forms(cfg: Config, values: dict) -> None:
    """IBM's other spellings, folded into the plain options: the ``*64`` forms (base64), --tags/--tags64,
    -D levels, switches that are how this engine works anyway, and the notes for what cannot be done here."""
    for encoded, plain, name in (("src_base64", "src_base", "--src-base64"),
                                 ("source_prefix64", "source_prefix", "--source-prefix64")):
        if values.get(encoded) is not None:
            values[plain] = _b64(name, values[encoded])
    raw, name = (values["tags64"], "--tags64") if values.get("tags64") is not None else (values.get("tags"), "--tags")
    if raw is not None:
        text = _b64(name, raw) if name == "--tags64" else str(raw)
        if len(text.encode()) > MAX_TAGS:
            raise usage(f"{name}: more than {MAX_TAGS} bytes of JSON")
        try:
            tags = json.loads(text)
        except ValueError as exc:
            raise usage(f"{name}: not JSON ({exc})") from None
        if not isinstance(tags, dict):
            raise usage(f"{name}: the JSON must be an object")
        cfg.tags = tags
    cfg.debug = int(values.get("debug") or 0)
    if values.get("precalculate_disable"):
        values.pop("precalculate_job_size", None)
    cfg.notes = [note for key, note in NOT_HERE.items() if values.get(key)]
    cfg.remove_skipped = bool(values.get("remove_skipped"))
    if cfg.remove_skipped and not values.get("remove_after_transfer"):
        cfg.notes.append("--remove-skipped has no effect without --remove-after-transfer")


def _http_fallback(cfg: Config, get) -> None:
    """-y 1 with its port (-t), JPEG wrapping (-j 1), HTTPS key and certificate (-Y, -I) and proxy (-x)."""
    fallback = _choice("-y", get("http_fallback", "0"), ("0", "1", "f"))
    cfg.http_fallback = fallback != "0"
    if fallback == "f":
        cfg.notes.append("-y F: HTTP fallback is on, but UDP is tried first (forcing HTTP is not supported)")
    cfg.jpeg = _choice("-j", get("jpeg_encoding", "0"), ("0", "1")) == "1"
    if get("http_port") is not None:
        cfg.http_port = _int("-t", get("http_port"), 1, 65535)
    cfg.https_key = str(get("https_key")) if get("https_key") else None
    cfg.https_cert = str(get("https_cert")) if get("https_cert") else None
    if cfg.https_key and not cfg.https_cert:
        raise usage("-Y KEYFILE needs -I CERTFILE")
    if get("proxy"):
        host, sep, port = str(get("proxy")).rpartition(":")
        if not sep or not host:
            raise usage(f"-x {get('proxy')!r}: expected HOST:PORT")
        cfg.proxy = (host.strip("[]"), _int("-x", port, 1, 65535))


def _content_protection(cfg: Config, mode: object, passphrase: str | None) -> None:
    """--file-crypt=encrypt on uploads, decrypt on downloads, passphrase from ASPERA_SCP_FILEPASS only."""
    if mode is None:
        if passphrase:
            raise usage("ASPERA_SCP_FILEPASS is set but --file-crypt is not given")
        return
    mode = str(mode).lower()
    if not passphrase:
        raise usage(f"--file-crypt={mode} needs the passphrase in ASPERA_SCP_FILEPASS")
    if (mode == "encrypt") != (cfg.direction == "send"):
        raise usage(f"--file-crypt={mode} does not fit a {'upload' if cfg.direction == 'send' else 'download'}")
    cfg.file_pass = passphrase


def _place(cfg: Config, values: dict, positional: list[str], mode: str | None, env) -> None:
    """Sources, destination, direction and the remote endpoint from positional args and flags."""
    get = values.get
    if get("file_list") and get("file_pair_list"):
        raise usage("--file-list and --file-pair-list cannot be combined")
    if not positional:
        raise usage("missing destination argument")
    *source_args, dest_arg = positional
    if get("dest64"):  # ascli: DEST is base64, a path only (the host comes from --host)
        dest_arg = _b64("--dest64", dest_arg)
    listed: list[str] = []
    if get("file_list"):
        listed = _read_list(str(get("file_list")))
    elif get("file_pair_list"):
        pairs = _read_list(str(get("file_pair_list")))
        if len(pairs) % 2:
            raise usage("--file-pair-list needs an even number of lines (source, destination)")
        listed = pairs[0::2]
        cfg.pair_dests = pairs[1::2]
    if listed and source_args:
        raise usage("sources come either from the command line or from a list file, not both")

    d_user, d_host, d_path = (None, None, dest_arg) if get("dest64") else split_remote(dest_arg)
    split_sources = [split_remote(s) for s in source_args]
    remote_sources = [s for s in split_sources if s[1] is not None]
    if d_host is not None:
        direction = "send"
        user, host = d_user, d_host
        if remote_sources:
            raise usage("both sources and destination are remote")
        sources = [p for _, _, p in split_sources]
    elif remote_sources:
        direction = "recv"
        if len(remote_sources) != len(split_sources):
            raise usage("mixing local and remote sources")
        hosts = {(u, h) for u, h, _ in remote_sources}
        if len(hosts) > 1:
            raise usage("all remote sources must be on the same host")
        user, host = next(iter(hosts))
        sources = [p for _, _, p in remote_sources]
    else:
        direction = mode or "send"
        user, host = None, None
        sources = [p for _, _, p in split_sources]
    if mode is not None and mode != direction:
        raise usage(f"--mode={mode} contradicts the paths given")
    cfg.direction = direction
    cfg.dest = d_path if d_host is not None else dest_arg
    if d_host is None and direction == "send" and get("host") is None:
        raise usage("no remote host: give [user@]host:DEST or --host")
    cfg.sources = listed or sources
    cfg.listed = bool(get("file_list") or get("file_pair_list"))
    prefix = get("source_prefix")
    if prefix:
        cfg.sources = [str(prefix).rstrip("/") + "/" + s.lstrip("/") for s in cfg.sources]
    if cfg.pair_dests is not None and not cfg.sources:
        cfg.pair_dests = []
    if not cfg.sources and not cfg.keepalive and cfg.stream_chunk_size is None and cfg.mgmt_port is None:
        raise usage("no source given")
    host = get("host") or host
    user = get("user") or user or env.get("USER") or "root"
    if not host:
        raise usage("no remote host given")
    cfg.remote = Endpoint(
        host=str(host), user=str(user),
        port=_int("-P", get("tcp_port"), 1, 65535) if get("tcp_port") is not None else 22,
        identity=str(get("identity")) if get("identity") else None,
        password=env.get("ASPERA_SCP_PASS"),
        key_text=env.get("ASPERA_SCP_KEY"),
        check_sshfp=str(get("check_sshfp")) if get("check_sshfp") else None,
        ignore_host_key=bool(get("ignore_host_key")),
    )
    if cfg.keepalive and cfg.mgmt_port is None:
        raise usage("--keepalive needs -M (files arrive as management START commands)")


def all_flag_names() -> list[str]:
    return sorted(_BY_NAME)

