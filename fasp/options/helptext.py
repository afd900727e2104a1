"""One line of help per ascp flag: ``fasp-ascp --help`` and docs/ascp-options.md are both made from it.

Keys are those of :data:`fasp.options.flags.FLAGS`; a test checks every flag has its line and that the document
in the repository is what :func:`markdown` writes (``python -m fasp.options.helptext > docs/ascp-options.md``).
"""
from __future__ import annotations

from fasp.options.flags import FLAGS, NOT_HERE

DOC_PATH = "docs/ascp-options.md"

LINES: dict[str, tuple[str, str]] = {
    # key: (value placeholder, what it does)
    "mode": ("send|recv", "direction when no path names the remote host (with --host)"),
    "user": ("USER", "remote SSH user (default: the user@ of the remote path, else $USER)"),
    "host": ("HOST", "remote host, when no path names it (file lists, --dest64)"),
    "identity": ("FILE", "SSH private key file (the key itself may come in ASPERA_SCP_KEY)"),
    "mgmt_port": ("PORT", "management port on 127.0.0.1: events out, commands in"),
    "quiet": ("", "no progress line"),
    "verbose": ("", "accepted; progress is shown unless -q"),
    "keepalive": ("", "persistent session: files arrive as management START commands (needs -M)"),
    "config_file": ("FILE", "defaults from an aspera.conf (the subset fasp/options/asperaconf.py reads); flags win"),
    "apply_local_docroot": ("", "confine local paths to the docroot of -f FILE or FASP_LOCAL_DOCROOT"),
    "auto_detect_capacity": ("", "-l is a percent of the measured path capacity"),
    "check_sshfp": ("FINGERPRINT", "trust the server host key with this fingerprint (SHA256:... or MD5 hex)"),
    "chunk_size": ("BYTES", "stream mode (PUT/WRITE/CLOSE on the management port): bytes per chunk"),
    "cipher": ("NAME", "aes128|aes192|aes256 (also aes-128..., *gcm, *cfb: the key size) or none"),
    "file_crypt": ("encrypt|decrypt", "content protection; passphrase in ASPERA_SCP_FILEPASS"),
    "create_dirs": ("", "DEST is a directory, created if missing (see the destination rule below)"),
    "datagram_size": ("BYTES", "UDP datagram size (296..65000)"),
    "delete_before_transfer": ("", "delete destination files the source directory does not have"),
    "no_encryption": ("", "no encryption of the data (still authenticated)"),
    "exclude_newer_than": ("MTIME", "skip files modified after MTIME (epoch seconds, or -N: N seconds ago)"),
    "exclude_older_than": ("MTIME", "skip files modified before MTIME (epoch seconds, or -N: N seconds ago)"),
    "exclude": ("PATTERN", "skip paths matching PATTERN (repeatable)"),
    "file_checksum": ("ALG", "md5|sha1|sha256|sha384|sha512|none (also sha-256...): reported per file"),
    "file_manifest": ("none|text", "write a manifest of the session's files"),
    "file_manifest_path": ("DIR", "where --file-manifest=text writes"),
    "http_fallback": ("0|1|F", "HTTP(S) carries the data when UDP cannot (F: as 1, see notes)"),
    "http_port": ("PORT", "the server's HTTP fallback port"),
    "jpeg_encoding": ("0|1", "fallback payloads travel as JPEG images"),
    "https_key": ("FILE", "HTTPS fallback: key file (with -I)"),
    "https_cert": ("FILE", "HTTPS fallback: certificate file"),
    "proxy": ("HOST:PORT", "reach the HTTP fallback port through this proxy"),
    "ignore_host_key": ("", "do not check the server's host key (insecure)"),
    "local_log_dir": ("DIR", "write this client's event log to DIR/fasp-ascp.log"),
    "remote_log_dir": ("DIR", "ask the server for a session log (written only where the server allows)"),
    "min_rate": ("RATE", "minimum rate: kbit/s, decimals and K/M/G suffixes (100m, 1.5G), or N% of -l"),
    "target_rate": ("RATE", "target rate: kbit/s, decimals and K/M/G suffixes (100m, 1.5G), or N% of capacity"),
    "move_after_transfer": ("DIR", "move each sent source file into DIR"),
    "multi_session_threshold": ("BYTES", "with -C: files at least this big are split between the sessions"),
    "multi_session": ("N:M", "this is session N of M: it sends its share of the files"),
    "overwrite": ("POLICY", "always|never|diff|older|diff+older"),
    "partial_file_suffix": ("SUFFIX", "a file being received is named NAME+SUFFIX until complete"),
    "policy": ("POLICY", "fixed|high|fair|low rate policy"),
    "pre_post_command": ("PROGRAM", "run PROGRAM at session start/stop and after each file"),
    "precalculate_job_size": ("", "count the job's files and bytes before starting"),
    "preserve_atime": ("", "set the destination's access time to the source's"),
    "preserve_mtime": ("", "set the destination's modification time to the source's"),
    "preserve_ctime": ("", "preserve creation time (where the file system has one)"),
    "preserve_source_atime": ("", "restore the source's access time after reading it"),
    "preserve_dates": ("", "--preserve-access-time and --preserve-modification-time"),
    "preserve_uid": ("", "preserve the file owner's uid"),
    "preserve_gid": ("", "preserve the file owner's gid"),
    "preserve_acls": ("MODE", "none|native|metafile: POSIX ACLs, this side"),
    "preserve_xattrs": ("MODE", "none|native|metafile: user extended attributes, this side"),
    "remote_preserve_acls": ("MODE", "as --preserve-acls, on the remote side"),
    "remote_preserve_xattrs": ("MODE", "as --preserve-xattrs, on the remote side"),
    "read_size": ("BYTES", "bytes per source read"),
    "write_size": ("BYTES", "bytes per destination write"),
    "remove_after_transfer": ("", "remove each source file once it is transferred"),
    "remove_empty_directories": ("", "with --remove/--move-after-transfer: remove emptied directories"),
    "remove_empty_source_directory": ("", "... and the source directory itself when empty"),
    "resume": ("0|1|2|3", "resume check: 0 none, 1 size, 2 sparse checksum, 3 full checksum"),
    "retransmission_max": ("BYTES", "largest retransmission request"),
    "retry_timeout": ("SECONDS", "reported in INIT (this engine does not retry by itself)"),
    "save_before_overwrite": ("", "keep an overwritten file as NAME.yyyy.mm.dd.hh.mm.ss.index.EXT"),
    "skip_dir_traversal_dupes": ("", "send a directory reached twice (links) only once"),
    "skip_special_files": ("", "skip devices, FIFOs and sockets instead of failing"),
    "src_base": ("PREFIX", "strip PREFIX from source paths; the rest is kept below DEST"),
    "source_prefix": ("PREFIX", "prepend PREFIX to every source path"),
    "symbolic_links": ("POLICY", "follow|copy|copy+force|skip"),
    "tcp_port": ("PORT", "SSH port (default 22)"),
    "udp_port": ("PORT", "UDP port (the server's, in server mode)"),
    "file_list": ("FILE", "sources, one per line (DEST is then always a directory)"),
    "file_pair_list": ("FILE", "source and destination lines, alternating; destinations are below DEST"),
    "dest64": ("", "the DEST argument is base64 (a path; the host comes from --host), as ascli passes it"),
    "src_base64": ("BASE64", "--src-base, base64-encoded"),
    "source_prefix64": ("BASE64", "--source-prefix, base64-encoded"),
    "tags": ("JSON", "metadata (a JSON object): sent to the peer (its log) and in every event but STATS as Tags"),
    "tags64": ("BASE64", "--tags, base64-encoded"),
    "debug": ("", "debug log on stderr; -DD, -DDD: more"),
    "use_system_ssh": ("", "system ssh client (see notes)"),
    "ssh_arg": ("ARG", "argument for the system ssh client (see notes)"),
    "aspera_proxy": ("URL", "Aspera DNAT proxy dnat(s)://... (see notes)"),
    "remove_skipped": ("", "with --remove-after-transfer, also remove source files skipped because the destination has them"),
    "fail_bad_filepass": ("", "fail on a wrong decryption passphrase (always so here)"),
    "ws_connect": ("", "WebSocket session (see notes)"),
    "precalculate_disable": ("", "cancel --precalculate-job-size"),
    "server": ("", "server mode: the remote end, run by fasp-server or over sshd"),
    "docroot": ("DIR", "server mode: confine the client to DIR (or FASP_DOCROOT)"),
    "rate_cap": ("KBPS", "server mode: cap every session's rate"),
    "allowed_policies": ("LIST", "server mode: the rate policies a client may ask for"),
    "server_log_dir": ("DIR", "server mode: where a client's -R log goes (or FASP_LOG_DIR)"),
    "help": ("", "this list, then exit 0"),
    "version": ("", "print the version, then exit 0"),
}

USAGE = """usage: fasp-ascp [options] SOURCE... [user@]host:DEST      (upload)
       fasp-ascp [options] [user@]host:SOURCE... DEST      (download)
       fasp-ascp --server [--docroot DIR] [--rate-cap KBPS] [--allowed-policies LIST] [-O PORT] [--log-dir DIR]"""

RULES = """Destination rule (IBM's): DEST is a directory (created by -d when missing) unless -d is absent, exactly
one source file is given on the command line and DEST is not an existing directory nor ends with '/': only
then is DEST the file's new name.
Credentials come from ASPERA_SCP_PASS / ASPERA_SCP_KEY / -i FILE, never the command line;
ASPERA_SCP_FILEPASS with --file-crypt; ASPERA_SCP_TOKEN and ASPERA_SCP_COOKIE.
Environment: FASP_REMOTE_COMMAND (remote engine command, default "fasp-ascp"), FASP_DOCROOT and FASP_LOG_DIR
(server mode under sshd), FASP_UDP_BIND (server UDP address), FASP_LOCAL_DOCROOT (--apply-local-docroot),
FASP_KNOWN_HOSTS (known_hosts file to check the server's host key against)."""


def _spelling(flag) -> str:
    value = LINES[flag.key][0]
    names = ", ".join(flag.names)
    return f"{names} {value}" if value else names


def help_text() -> str:
    """``fasp-ascp --help``: usage, every option on one line, the notes, where the reference is."""
    width = max(len(_spelling(f)) for f in FLAGS)
    options = "\n".join(f"  {_spelling(f):<{width}}  {LINES[f.key][1]}" for f in FLAGS)
    notes = "\n".join(f"  {note}" for note in NOT_HERE.values())
    return (f"{USAGE}\n\nOptions:\n{options}\n\n{RULES}\n\nAccepted without their effect (a note on stderr):\n"
            f"{notes}\n\nThe full reference: {DOC_PATH} in the openfasp source.")


def markdown() -> str:
    """docs/ascp-options.md, from the same table."""
    rows = "\n".join(f"| `{_spelling(f)}` | {LINES[f.key][1].replace('|', chr(92) + '|')} |" for f in FLAGS)
    notes = "\n".join(f"- {note}" for note in NOT_HERE.values())
    return (f"# fasp-ascp options\n\n<!-- generated by `python -m fasp.options.helptext`: edit fasp/options/helptext.py, not this file -->\n\n"
            f"```\n{USAGE}\n```\n\n| option | effect |\n|---|---|\n{rows}\n\n## Destination and environment\n\n"
            f"{RULES}\n\n## Accepted without their effect\n\nEach prints one note on stderr when given.\n\n{notes}\n"
            f"- `-c aes128cfb` (and the other CFB names): the key size is honoured; the data is sealed with "
            f"AES-GCM.\n- `-y F`: HTTP fallback is on, but UDP is tried first.\n")


if __name__ == "__main__":
    print(markdown(), end="")
