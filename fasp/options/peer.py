"""The file rules both engines of a session apply: one typed record, its defaults written once.

The client builds it from its command line (:meth:`fasp.options.flags.Config.options_for_peer` for the
remote side, :meth:`~fasp.options.flags.Config.local_options` for its own roles); the server receives it in
the ``hello`` message and decodes it strictly (:mod:`fasp.session.messages`): a field it does not know, a
missing one or one of the wrong type ends the session, it never quietly takes its default. The values are
checked here, so a record that exists is a valid one whichever side built it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fasp.options import filters
from fasp.options.vocabulary import CHECKSUMS, OVERWRITE, PRESERVE_MODES, SYMLINK_POLICIES

RESUME_LEVELS = range(4)
"""-k: 0 never resume, 1 by attributes, 2 by a sparse checksum, 3 by a full checksum."""
JsonObject = dict[str, object]
"""A JSON object whose content its reader checks (--tags: metadata only logged)."""


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """What each side's roles need of the client's options (the names say the ascp flag's meaning)."""

    overwrite: str = "diff"  # --overwrite
    resume: int = 0  # -k
    partial_suffix: str = ""  # --partial-file-suffix
    checksum: str = "none"  # --file-checksum: computed on the receiving side
    create_dirs: bool = False  # -d
    preserve_mtime: bool = False  # --preserve-modification-time (-p)
    preserve_atime: bool = False  # --preserve-access-time (-p)
    preserve_source_atime: bool = False  # --preserve-source-access-time
    preserve_uid: bool = False  # --preserve-file-owner-uid
    preserve_gid: bool = False  # --preserve-file-owner-gid
    preserve_ctime: bool = False  # --preserve-creation-time
    xattrs_mode: str = "none"  # --preserve-xattrs / --remote-preserve-xattrs on this side
    acls_mode: str = "none"  # --preserve-acls / --remote-preserve-acls on this side
    remove_after_transfer: bool = False  # --remove-after-transfer
    remove_empty_source_directory: bool = False  # --remove-empty-source-directory
    remove_empty_directories: bool = False  # --remove-empty-directories
    remove_skipped: bool = False  # --remove-skipped
    move_after: str | None = None  # --move-after-transfer DIR
    save_before_overwrite: bool = False  # --save-before-overwrite
    delete_before: bool = False  # --delete-before-transfer
    read_size: int = 0  # -g: bytes per source read (0: the data path's choice)
    write_size: int = 0  # -G: bytes per destination write (0: the data path's choice)
    retransmission_max: int = 0  # -X: largest retransmission request (0: one datagram)
    node: int = 1  # -C NODE:NODES
    nodes: int = 1
    split_above: int = 0  # --multi-session-threshold
    filters: tuple[str, ...] = ()  # -E/-N in order, "- PATTERN"/"+ PATTERN" (fasp/options/filters.py)
    exclude_newer_than: int | None = None  # --exclude-newer-than (epoch seconds)
    exclude_older_than: int | None = None  # --exclude-older-than (epoch seconds)
    src_base: str | None = None  # --src-base
    symlinks: str = "follow"  # --symbolic-links
    skip_special_files: bool = False  # --skip-special-files
    skip_dir_dupes: bool = False  # --skip-dir-traversal-dupes
    log_dir: str | None = None  # -R: the client asks for a server-side log (the server's dir)
    tags: JsonObject | None = field(default=None, hash=False)  # --tags: logged by the server

    def __post_init__(self) -> None:
        """ValueError for a value no command line produces (a peer's is a protocol error, see the module)."""
        for name, value, allowed in (
            ("overwrite", self.overwrite, OVERWRITE),
            ("checksum", self.checksum, CHECKSUMS),
            ("xattrs_mode", self.xattrs_mode, PRESERVE_MODES),
            ("acls_mode", self.acls_mode, PRESERVE_MODES),
            ("symlinks", self.symlinks, SYMLINK_POLICIES),
            ("resume", self.resume, RESUME_LEVELS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(map(str, allowed))}")
        if not 1 <= self.node <= self.nodes:
            raise ValueError(f"node {self.node} of {self.nodes}")
        filters.compiled(self.filters)  # ValueError for a rule no command line writes
        if "/" in self.partial_suffix:
            raise ValueError("partial_suffix holds a slash")
