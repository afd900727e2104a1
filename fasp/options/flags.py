"""The ascp command line: a tokenizer over the flag table, and the typed ``Config`` the parser yields.

:data:`fasp.options.table.FLAGS` says what each flag is; :func:`parse` fills each entry's ``Config`` field
from its parsed value, then applies the rules that span flags (a rate that is a percent of another, flags
that exclude or need each other, paths and the remote endpoint). A flag we cannot honour is rejected with
usage error 8, or accepted with a note on stderr: a transfer never silently does something other than
what was asked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from fasp.options import filters
from fasp.options.peer import PeerOptions
from fasp.options.table import BY_NAME, FILTERS, FLAGS, Flag, Side
from fasp.options.values import base64_text, integer
from fasp.options.vocabulary import CIPHERS, DEFAULT_TARGET_KBPS, POLICIES, split_remote
from faspmanager.codes import EngineError, ErrorCode

__all__ = ["FLAGS", "Config", "Endpoint", "all_flag_names", "parse", "split_remote", "tokenize", "usage"]

Raw = str | bool | int | list[str]
"""A flag's value as tokenized: its text, True for a switch, a count for -D, a list for a repeatable flag."""

T = TypeVar("T")


def usage(message: str) -> EngineError:
    return EngineError(ErrorCode.USAGE, message)


def tokenize(argv: list[str]) -> tuple[dict[str, Raw], list[str]]:
    """Split argv into {flag key: value} and positional args; ``--opt=v``, ``--opt v``, ``-lV``, ``-l V``."""
    values: dict[str, Raw] = {}
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
        value: str | None
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            flag = BY_NAME.get(name)
            if flag is None:
                raise usage(f"unknown option {name!r}")
            if not flag.takes_value and eq:
                raise usage(f"option {name} takes no value")
            value = inline if eq else None
        else:
            name = arg if arg in BY_NAME else arg[:2]  # -SSH is one name, -lV a flag and its value
            flag = BY_NAME.get(name)
            if flag is None:
                raise usage(f"unknown option {name!r}")
            rest = arg[len(name) :]
            # getopt's bundles, as ascp parses them: switches (-qd, -DD: debug level 2), ended by at most one
            # value option whose value is the rest of the element or the next one (-Tl100m, -qP 33001)
            while rest and not flag.takes_value:
                _switch(values, flag)
                name, rest = "-" + rest[0], rest[1:]
                more = BY_NAME.get(name)
                if more is None:
                    raise usage(f"unknown option {name!r} in {arg!r}")
                flag = more
            value = rest or None
        if flag.takes_value:
            if value is None:
                if i >= len(argv):
                    raise usage(f"option {name} needs a value")
                value = argv[i]
                i += 1
            if flag.repeat:
                listed = values.setdefault(FILTERS if flag.rule else flag.key, [])
                assert isinstance(listed, list)
                listed.append(flag.rule + value)
            else:
                values[flag.key] = value
        else:
            _switch(values, flag)
    return values, positional


def _switch(values: dict[str, Raw], flag: Flag) -> None:
    """A switch is True; a counted one counts (-DDD: debug level 3)."""
    count = values.get(flag.key, 0)
    values[flag.key] = count + 1 if flag.counted and isinstance(count, int) else True


ROOTS_ENV = {"send": "FASP_SEND_ROOTS", "recv": "FASP_RECV_ROOTS"}
"""The environment naming the local directories an engine of each direction is confined to."""


@dataclass
class Endpoint:
    """A remote side: who, where, and the SSH credentials (kept out of repr)."""

    host: str
    user: str
    port: int = 22
    identity: str | None = None
    password: str | None = field(default=None, repr=False)
    key_text: str | None = field(default=None, repr=False)  # ASPERA_SCP_KEY: a private key itself
    check_sshfp: str | None = None
    ignore_host_key: bool = False
    command: str | None = None  # -S: the remote engine's command line (else FASP_REMOTE_COMMAND)


@dataclass
class Config:
    """A validated command line: the fields the table's entries name (filled from their flags), and what
    parse()'s rules derive from several flags, the paths and the environment."""

    direction: str = "send"  # client's role: "send" (upload) or "recv" (download)
    sources: list[str] = field(default_factory=list)
    pair_dests: list[str] | None = None  # --file-pair-list: destination per source
    listed: bool = False  # sources came from --file-list/--file-pair-list, not argv
    dest: str = "."
    remote: Endpoint | None = None
    mgmt_port: int | None = None
    quiet: bool = False
    keepalive: bool = False
    chunk_size: int | None = None  # --chunk-size: stream mode (PUT/WRITE/CLOSE on -M)
    key_bytes: int = 16  # 0 = -T, no encryption
    cipher: str = "aes128"
    create_dirs: bool = False
    datagram_size: int = 0  # -Z; 0: discover the path MTU
    filters: list[str] = field(default_factory=list)  # -E/-N in order: "- PATTERN"/"+ PATTERN"
    exclude_newer_than: int | None = None
    exclude_older_than: int | None = None
    file_checksum: str = "none"
    target_kbps: int = DEFAULT_TARGET_KBPS
    target_set: bool = False  # -l (or aspera.conf's target rate) gave target_kbps: FAIR's and HIGH's initial rate
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
    pre_post_command: str | None = None  # -e PATH: run at session start/stop and after each file
    node: int = 1  # -C NODE:NODES: this process's share of the files
    nodes: int = 1
    split_above: int = 0  # --multi-session-threshold: larger files are cut in NODES ranges
    xattrs: bool = False  # --preserve-xattrs=native: user xattrs travel
    acls: bool = False  # --preserve-acls=native: POSIX ACLs travel
    manifest_dir: str | None = None
    manifest_inprogress_suffix: str = ""  # --file-manifest-inprogress-suffix
    file_pass: str | None = field(default=None, repr=False)  # --file-crypt: never sent to the peer
    local_docroot: str | None = None  # --apply-local-docroot: FASP_LOCAL_DOCROOT confines local paths
    local_roots: tuple[str, ...] | None = None  # FASP_SEND_ROOTS / FASP_RECV_ROOTS: local paths only beneath these
    resume: int = 0
    src_base: str | None = None
    source_prefix: str | None = None  # prepended to every source path
    symlinks: str = "follow"
    skip_special_files: bool = False
    skip_dir_dupes: bool = False
    udp_port: int = 0
    cookie: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)  # -W, else ASPERA_SCP_TOKEN: never logged
    retry_timeout: int | None = None
    local_log_dir: str | None = None
    remote_log_dir: str | None = None
    read_size: int = 0  # -g: bytes per source read (0: the datapath's own choice)
    write_size: int = 0  # -G: bytes per destination write (0: the datapath's own choice)
    retransmission_max: int = 0  # -X: largest retransmission request in bytes (0: one datagram)
    auto_capacity: bool = False  # --auto-detect-capacity: target_kbps is a percent of capacity
    preserve_ctime: bool = False  # --preserve-creation-time
    acls_local: str = "none"  # --preserve-acls: none | native | metafile, on this side
    acls_remote: str = "none"  # --remote-preserve-acls (defaults to --preserve-acls)
    xattrs_local: str = "none"  # --preserve-xattrs
    xattrs_remote: str = "none"  # --remote-preserve-xattrs (defaults to --preserve-xattrs)
    http_fallback: bool = False  # -y 1: HTTP(S) carries the data when UDP cannot
    http_port: int = 8080  # -t: the server's HTTP fallback port
    jpeg: bool = False  # -j 1: fallback payloads travel as JPEG images
    https_key: str | None = None  # -Y KEYFILE
    https_cert: str | None = None  # -I CERTFILE: HTTPS instead of HTTP
    proxy: tuple[str, int] | None = None  # -x HOST[:PORT]: reach the fallback port through this proxy
    # server mode
    server: bool = False
    docroot: str | None = None
    rate_cap_kbps: int | None = None
    allowed_policies: tuple[str, ...] = POLICIES
    server_log_dir: str | None = None  # --log-dir: where a client's -R log goes (the client's DIR never)
    # IBM's further options
    tags: dict[str, object] | None = None  # --tags / --tags64: JSON metadata, to the peer and in events
    debug: int = 0  # -D, -DD, -DDD: stderr log level
    remove_skipped: bool = False  # --remove-skipped: with --remove-after-transfer, skipped go too
    notes: list[str] = field(default_factory=list)  # options accepted without their full effect: told on stderr

    @property
    def lone(self) -> bool:
        """One source named on the command line itself: only then may DEST be its new file name (IBM's rule;
        -d and the target's kind are decided where the file lands, fasp/files/naming.py)."""
        return len(self.sources) == 1 and not self.listed and self.pair_dests is None and not self.src_base

    def options_for_peer(self) -> PeerOptions:
        """What the remote side must know to apply this command line's file rules."""
        return PeerOptions(
            overwrite=self.overwrite,
            resume=self.resume,
            partial_suffix=self.partial_suffix,
            checksum=self.file_checksum,
            create_dirs=self.create_dirs,
            preserve_mtime=self.preserve_mtime,
            preserve_atime=self.preserve_atime,
            preserve_source_atime=self.preserve_source_atime,
            preserve_uid=self.preserve_uid,
            preserve_gid=self.preserve_gid,
            preserve_ctime=self.preserve_ctime,
            xattrs_mode=self.xattrs_remote,
            acls_mode=self.acls_remote,
            remove_after_transfer=self.remove_after_transfer,
            remove_empty_source_directory=self.remove_empty_source_directory,
            remove_empty_directories=self.remove_empty_directories,
            remove_skipped=self.remove_skipped,
            move_after=self.move_after,
            save_before_overwrite=self.save_before_overwrite,
            delete_before=self.delete_before,
            read_size=self.read_size,
            write_size=self.write_size,
            retransmission_max=self.retransmission_max,
            node=self.node,
            nodes=self.nodes,
            split_above=self.split_above,
            filters=tuple(self.filters),
            exclude_newer_than=self.exclude_newer_than,
            exclude_older_than=self.exclude_older_than,
            src_base=self.src_base,
            symlinks=self.symlinks,
            skip_special_files=self.skip_special_files,
            skip_dir_dupes=self.skip_dir_dupes,
            log_dir=self.remote_log_dir,
            tags=self.tags,
        )

    def local_options(self) -> PeerOptions:
        """The same file rules for this side's own roles: only the ACL/xattr modes differ (local vs remote)."""
        return replace(self.options_for_peer(), xattrs_mode=self.xattrs_local, acls_mode=self.acls_local)


def _checked(name: str, parse: Callable[[str], T], raw: object) -> T:
    """``parse(raw)``, its ValueError as usage error 8 naming the flag."""
    try:
        return parse(str(raw))
    except ValueError as exc:
        raise usage(f"{name}: {exc}") from None


def _given(values: Mapping[str, Raw], side: Side) -> dict[str, object]:
    """Each flag of ``side`` on the command line (or from -f), by key, as its entry's form parses it."""
    given: dict[str, object] = {}
    for flag in FLAGS:
        raw = values.get(flag.key)
        if raw is None or flag.side not in (side, "both"):
            continue
        given[flag.key] = _checked(flag.names[0], flag.parse, raw) if flag.parse else raw
    return given


def parse(argv: list[str], environ: Mapping[str, str] | None = None) -> Config:
    """A validated :class:`Config`, or EngineError(8) naming what is wrong."""
    env = os.environ if environ is None else environ
    values, positional = tokenize(argv)
    _fair_switch(values)
    if values.get("config_file"):
        from fasp.options import asperaconf  # -f only: its XML reader stays out of every other start

        # the file supplies defaults; a flag on the command line wins
        values = {**asperaconf.load(str(values["config_file"])).defaults(values, positional), **values}
    cfg = Config()
    given = _given(values, "server" if values.get("server") else "client")
    for flag in FLAGS:
        value = given.get(flag.key)
        if flag.field is not None and value is not None:
            setattr(cfg, flag.field, list(value) if flag.repeat and isinstance(value, list) else value)
    cfg.notes = [flag.note for flag in FLAGS if flag.note and values.get(flag.key)]
    refused = next((flag for flag in FLAGS if flag.refused and flag.key in values), None)
    if refused is not None:
        raise usage(f"{refused.names[0]}: {refused.refused}")
    if cfg.server:
        cfg.docroot = cfg.docroot or env.get("FASP_DOCROOT") or None
        cfg.server_log_dir = cfg.server_log_dir or env.get("FASP_LOG_DIR") or None
        if positional:
            raise usage(f"--server takes no paths, got {positional[0]!r}")
        return cfg
    if cfg.remove_skipped and not cfg.remove_after_transfer:
        cfg.notes.append("--remove-skipped has no effect without --remove-after-transfer")
    if given.get("precalculate_disable"):
        cfg.precalculate = False
    _cipher(cfg, given)
    _rates(cfg, given, values.get("target_cap"))
    _file_rules(cfg, given)
    _filter_rules(cfg, values.get(FILTERS))
    _http_fallback(cfg, given)
    cfg.cookie = env.get("ASPERA_SCP_COOKIE")
    cfg.token = cfg.token or env.get("ASPERA_SCP_TOKEN")  # -W first
    _place(cfg, given, positional, env)
    _content_protection(cfg, given.get("file_crypt"), env.get("ASPERA_SCP_FILEPASS"))
    if cfg.split_above and cfg.nodes > 1 and (cfg.remove_after_transfer or cfg.move_after):
        after = "--remove-after-transfer" if cfg.remove_after_transfer else "--move-after-transfer"
        cfg.notes.append(
            f"{after}: a file above --multi-session-threshold travels in -C ranges and stays where it is "
            f"(no node knows when all of its ranges have landed)"
        )
    if given.get("apply_local_docroot"):
        cfg.local_docroot = str(values.get("local_docroot") or env.get("FASP_LOCAL_DOCROOT") or "") or None
        if not cfg.local_docroot:
            raise usage("--apply-local-docroot needs a local docroot: an <absolute> in -f FILE, or FASP_LOCAL_DOCROOT")
    _local_roots(cfg, env)
    return cfg


def _local_roots(cfg: Config, env: Mapping[str, str]) -> None:
    """FASP_SEND_ROOTS (an upload) or FASP_RECV_ROOTS (a download), set by whoever starts the engine on
    others' behalf (a queue worker): the only local directories it may reach, each path beneath the one that
    holds it. Set but empty, nothing is in reach."""
    name = ROOTS_ENV[cfg.direction]
    if name not in env:
        return
    if cfg.local_docroot:
        raise usage(f"--apply-local-docroot cannot be combined with {name} (both say where local paths are)")
    cfg.local_roots = tuple(root for root in env[name].split(os.pathsep) if root)


def _fair_switch(values: dict[str, Raw]) -> None:
    """-Q: older ascp's switch for adaptive rate control (NCBI's SRA guide: "-Q (for adaptive flow control)"; IBM's
    current reference has no -Q), which is the fair policy: --policy=fair on the command line, so an aspera.conf
    default does not override it. -QQ has no documented meaning (a guess would pick a policy): usage error 8."""
    count = values.pop("fair_switch", None)
    if count is None:
        return
    if count != 1:
        raise usage("-QQ: no documented meaning (-Q is the fair policy); give --policy=low|fair|high|fixed")
    policy = values.get("policy")
    if policy is not None and policy != "fair":
        raise usage(f"-Q (the fair policy) contradicts --policy={policy}")
    values["policy"] = "fair"


def _cipher(cfg: Config, given: Mapping[str, object]) -> None:
    """-T, else -c: the key size (0: no encryption); a CFB name gets a note, the data is sealed with GCM."""
    name = given.get("cipher")
    if given.get("no_encryption"):
        cfg.key_bytes, cfg.cipher = 0, "none"
    elif isinstance(name, str):
        cfg.key_bytes, cfg.cipher = CIPHERS[name], name
        if name.endswith("cfb"):
            cfg.notes.append(
                f"-c {name}: the key size is honoured, but data is sealed with this engine's "
                f"authenticated AES (GCM), not CFB"
            )
        if cfg.key_bytes == 0:
            cfg.cipher = "none"


def _rates(cfg: Config, given: Mapping[str, object], target_cap: object) -> None:
    """-l, -m and --auto-detect-capacity, and -f's <cap> as a ceiling for -l: kbit/s or percents."""
    target_percent = None
    auto = bool(given.get("auto_detect_capacity"))
    target = given.get("target_rate")
    if isinstance(target, tuple):
        value, percent = target
        if percent or auto:
            target_percent = _checked("-l (a percent of capacity)", integer(1, 100), value)
        else:
            cfg.target_kbps, cfg.target_set = value, True
    if target_cap is not None:
        cfg.target_kbps = min(cfg.target_kbps, int(str(target_cap)))
    minimum = given.get("min_rate")
    if isinstance(minimum, tuple):
        value, percent = minimum
        if percent and target_percent is not None:
            raise usage("-m N% is a percent of -l, which is itself a percent of capacity here: give -m in kbit/s")
        cfg.min_kbps = cfg.target_kbps * _checked("-m (percent)", integer(0, 100), value) // 100 if percent else value
    if cfg.min_kbps > cfg.target_kbps and target_percent is None:
        raise usage(f"-m {cfg.min_kbps} is above -l {cfg.target_kbps}")
    cfg.auto_capacity = auto or target_percent is not None
    if cfg.auto_capacity:  # -l is a percent of the measured capacity
        cfg.target_kbps = target_percent if target_percent is not None else 100


def _file_rules(cfg: Config, given: Mapping[str, object]) -> None:
    """-p, what to do with sources after the transfer, -C's share, ACL/xattr modes per side, the manifest."""
    if given.get("preserve_dates"):
        cfg.preserve_mtime = cfg.preserve_atime = True
    if cfg.remove_after_transfer and cfg.move_after:
        raise usage("--remove-after-transfer and --move-after-transfer exclude each other")
    for key, name in (
        ("remove_empty_source_directory", "--remove-empty-source-directory"),
        ("remove_empty_directories", "--remove-empty-directories"),
    ):
        if getattr(cfg, key) and not (cfg.remove_after_transfer or cfg.move_after):
            raise usage(f"{name} needs --remove-after-transfer or --move-after-transfer")
    share = given.get("multi_session")
    if isinstance(share, tuple):
        cfg.node, cfg.nodes = share
    for what in ("acls", "xattrs"):
        local, remote = given.get(f"preserve_{what}"), given.get(f"remote_preserve_{what}")
        setattr(cfg, f"{what}_local", local or remote or "none")
        setattr(cfg, f"{what}_remote", remote or local or "none")
    cfg.xattrs = (cfg.xattrs_local, cfg.xattrs_remote) != ("none", "none")
    cfg.acls = (cfg.acls_local, cfg.acls_remote) != ("none", "none")
    if given.get("file_manifest") == "text":
        if not given.get("file_manifest_path"):
            raise usage("--file-manifest=text needs --file-manifest-path=DIR")
        cfg.manifest_dir = str(given["file_manifest_path"])


def _filter_rules(cfg: Config, rules: object) -> None:
    """-E/-N's rules in command-line order, each checked (usage error 8 naming the flag and its pattern); a
    note when the last is -N, which then keeps what every file is kept by anyway (IBM: an include rule must be
    followed by an exclude rule)."""
    cfg.filters = list(rules) if isinstance(rules, list) else []
    if len(cfg.filters) > filters.MAX_RULES:
        raise usage(f"-E/-N: {len(cfg.filters)} rules, more than {filters.MAX_RULES}")
    for text in cfg.filters:
        name = "-N" if text.startswith(filters.INCLUDE) else "-E"
        _checked(f"{name} {text[2:]!r}", filters.rule, text)
    if cfg.filters and cfg.filters[-1].startswith(filters.INCLUDE):
        cfg.notes.append(
            "-N: no -E follows the last -N rule, so it excludes nothing; -N PATTERN -N '/**/' -E '/**' sends only "
            "what PATTERN matches"
        )


def _http_fallback(cfg: Config, given: Mapping[str, object]) -> None:
    """-y 1 (F: on, UDP first) and -Y's need of -I; -t, -j, -x are plain fields."""
    fallback = given.get("http_fallback", "0")
    cfg.http_fallback = fallback != "0"
    if fallback == "f":
        cfg.notes.append("-y F: HTTP fallback is on, but UDP is tried first (forcing HTTP is not supported)")
    if cfg.https_key and not cfg.https_cert:
        raise usage("-Y KEYFILE needs -I CERTFILE")


def _content_protection(cfg: Config, mode: object, passphrase: str | None) -> None:
    """--file-crypt=encrypt on uploads, decrypt on downloads, passphrase from ASPERA_SCP_FILEPASS only."""
    if mode is None:
        if passphrase:
            raise usage("ASPERA_SCP_FILEPASS is set but --file-crypt is not given")
        return
    if not passphrase:
        raise usage(f"--file-crypt={mode} needs the passphrase in ASPERA_SCP_FILEPASS")
    if (mode == "encrypt") != (cfg.direction == "send"):
        raise usage(f"--file-crypt={mode} does not fit a {'upload' if cfg.direction == 'send' else 'download'}")
    cfg.file_pass = passphrase
    if cfg.split_above and cfg.nodes > 1:  # one node seals (opens) an envelope whole: none may send a range of it
        cfg.split_above = 0
        cfg.notes.append("--multi-session-threshold has no effect with --file-crypt: each node sends whole files")


def _place(cfg: Config, given: Mapping[str, object], positional: list[str], env: Mapping[str, str]) -> None:
    """Sources, destination, direction and the remote endpoint from positional args and flags."""
    get = given.get
    mode = get("mode")
    if get("file_list") and get("file_pair_list"):
        raise usage("--file-list and --file-pair-list cannot be combined")
    if not positional:
        raise usage("missing destination argument")
    *source_args, dest_arg = positional
    if get("dest64"):  # ascli: DEST is base64, a path only (the host comes from --host)
        dest_arg = _checked("--dest64", base64_text, dest_arg)
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
    user: object
    host: object
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
        direction = str(mode or "send")
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
    cfg.create_dirs = cfg.create_dirs or cfg.listed  # ascp: -d is "implied for file/file-pair lists"
    if cfg.source_prefix:
        cfg.sources = [cfg.source_prefix.rstrip("/") + "/" + s.lstrip("/") for s in cfg.sources]
    if cfg.pair_dests is not None and not cfg.sources:
        cfg.pair_dests = []
    if not cfg.sources and not cfg.keepalive and cfg.mgmt_port is None:
        raise usage(
            "--chunk-size with no source needs -M (the stream's PUT/WRITE/CLOSE arrive on the management port)"
            if cfg.chunk_size is not None
            else "no source given"
        )
    host = _agreed("--host", get("host"), host, str.lower)  # host names ignore case
    user = _agreed("--user", get("user"), user, str) or env.get("USER") or "root"
    if not host:
        raise usage("no remote host given")
    port = get("tcp_port")
    cfg.remote = Endpoint(
        host=str(host),
        user=str(user),
        port=port if isinstance(port, int) else 22,
        identity=str(get("identity")) if get("identity") else None,
        password=env.get("ASPERA_SCP_PASS"),
        key_text=env.get("ASPERA_SCP_KEY"),
        check_sshfp=str(get("check_sshfp")) if get("check_sshfp") else None,
        ignore_host_key=bool(get("ignore_host_key")),
        command=str(get("remote_command")) if get("remote_command") else None,
    )
    if cfg.keepalive and cfg.mgmt_port is None:
        raise usage("--keepalive needs -M (files arrive as management START commands)")


def _agreed(flag: str, given: object, named: object, same: Callable[[str], str]) -> object:
    """The flag's value, else the one the paths name. IBM has --host/--user stand "instead of" naming it in a path
    and gives no precedence: two that differ (as ``same`` sees them) are a usage error, never one silently chosen."""
    if given and named and same(str(given)) != same(str(named)):
        raise usage(f"{flag} {given} contradicts the {flag[2:]} {named} in the paths")
    return given or named


def _read_list(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.rstrip("\r\n") for line in handle if line.rstrip("\r\n")]
    except OSError as exc:
        raise EngineError(ErrorCode.NO_SUCH_FILE, f"cannot read list file {path!r}: {exc.strerror}") from None


def all_flag_names() -> list[str]:
    return sorted(BY_NAME)
