"""The faspmanager reference API as a table: what tests/manager/test_api_doc.py checks the library against.

Extracted by scripts/reference_tables.py from the reference documentation shared/spec/faspmanager-api.txt
(the pdoc page of the faspmanager module): FUNCTIONS from its "Functions" section, CLASSES from "Classes"
(each class's methods with their argument names and defaults, class and instance variables, ancestors),
OPTIONS from TransferOptions' "Options:" list (the type and default each description names), EXAMPLES
the "Example:" blocks that run a session. Generated: edit the documentation and regenerate, not this file.
"""

from __future__ import annotations

from typing import Any

Signature = list[tuple[str, str | None]]  # (argument, default as written or None), in order

FUNCTIONS: dict[str, Signature] = {
    "session": [("order", None), ("ascp_path", "None"), ("port", "0"), ("listener", "None")],
}

CLASSES: dict[str, dict[str, Any]] = {
    "BaseTransferOrder": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": [],
        "methods": {"ascp_opts": [("self", None)]},
    },
    "CipherType": {
        "ancestors": [],
        "class_vars": ["AES_128", "AES_192", "AES_256"],
        "instance_vars": [],
        "methods": {},
    },
    "FileChecksumType": {
        "ancestors": [],
        "class_vars": ["MD5", "NONE", "SHA1", "SHA_256", "SHA_384", "SHA_512"],
        "instance_vars": [],
        "methods": {},
    },
    "FileDownload": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": [
            "dest_paths",
            "options",
            "source_host",
            "source_identity",
            "source_pass",
            "source_paths",
            "source_user",
        ],
        "methods": {
            "__init__": [
                ("self", None),
                ("source_paths", None),
                ("source_user", None),
                ("source_host", None),
                ("dest_paths", "None"),
                ("source_pass", "None"),
                ("source_identity", "None"),
                ("options", "None"),
            ],
            "ascp_opts": [("self", None)],
        },
    },
    "FileManifestFormat": {"ancestors": [], "class_vars": ["NONE", "TEXT"], "instance_vars": [], "methods": {}},
    "FileState": {
        "ancestors": [],
        "class_vars": ["FAILED", "FINISHED", "SKIPPED", "TRANSFERRING"],
        "instance_vars": [],
        "methods": {},
    },
    "FileUpload": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": [
            "dest_host",
            "dest_identity",
            "dest_pass",
            "dest_paths",
            "dest_user",
            "options",
            "source_paths",
        ],
        "methods": {
            "__init__": [
                ("self", None),
                ("source_paths", None),
                ("dest_user", None),
                ("dest_host", None),
                ("dest_paths", "None"),
                ("dest_pass", "None"),
                ("dest_identity", "None"),
                ("options", "None"),
            ],
            "ascp_opts": [("self", None)],
        },
    },
    "HttpFallbackOptions": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": [
            "encode_all_as_jpeg",
            "http_port",
            "http_proxy_address_host",
            "http_proxy_address_port",
            "https_cert_filename",
            "https_key_filename",
        ],
        "methods": {
            "__init__": [
                ("self", None),
                ("encode_all_as_jpeg", "None"),
                ("http_port", "None"),
                ("https_key_filename", "None"),
                ("https_cert_filename", "None"),
                ("http_proxy_address_host", "None"),
                ("http_proxy_address_port", "None"),
            ],
            "build_ascp_options": [("self", None)],
        },
    },
    "OverwritePolicy": {
        "ancestors": [],
        "class_vars": ["ALWAYS", "DIFF", "DIFF_AND_OLDER", "NEVER", "OLDER"],
        "instance_vars": [],
        "methods": {},
    },
    "PersistentDownload": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": ["options", "source_host", "source_identity", "source_pass", "source_user"],
        "methods": {
            "__init__": [
                ("self", None),
                ("source_user", None),
                ("source_host", None),
                ("source_pass", "None"),
                ("source_identity", "None"),
                ("options", "None"),
            ],
            "ascp_opts": [("self", None)],
        },
    },
    "PersistentSession": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": [],
        "methods": {
            "__init__": [
                ("self", None),
                ("order", None),
                ("ascp_path", "None"),
                ("listener", "None"),
                ("port", "None"),
            ],
            "add_source": [
                ("self", None),
                ("source_path", None),
                ("dest_path", None),
                ("start_offset", "None"),
                ("end_offset", "None"),
            ],
            "cancel": [("self", None)],
            "close": [("self", None)],
            "failed_files": [("self", None)],
            "file_stats": [("self", None), ("filename", "None")],
            "finish": [("self", None)],
            "set_rate": [("self", None), ("target_kbps", None)],
            "start": [("self", None)],
            "state": [("self", None)],
            "stats": [("self", None)],
        },
    },
    "PersistentUpload": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": ["dest_host", "dest_identity", "dest_pass", "dest_user", "options"],
        "methods": {
            "__init__": [
                ("self", None),
                ("dest_user", None),
                ("dest_host", None),
                ("dest_pass", "None"),
                ("dest_identity", "None"),
                ("options", "None"),
            ],
            "ascp_opts": [("self", None)],
        },
    },
    "PreserveMode": {"ancestors": [], "class_vars": ["METAFILE", "NATIVE", "NONE"], "instance_vars": [], "methods": {}},
    "ResumeCheck": {
        "ancestors": [],
        "class_vars": ["FILE_ATTRIBUTES", "FULL_CHECKSUM", "OFF", "SPARSE_CHECKSUM"],
        "instance_vars": [],
        "methods": {},
    },
    "Session": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": ["ascp_path", "listener", "order", "port"],
        "methods": {
            "__init__": [
                ("self", None),
                ("order", None),
                ("ascp_path", "None"),
                ("listener", "None"),
                ("port", "None"),
            ],
            "cancel": [("self", None)],
            "close": [("self", None)],
            "failed_files": [("self", None)],
            "file_stats": [("self", None), ("filename", "None")],
            "finish": [("self", None)],
            "set_rate": [("self", None), ("target_kbps", None)],
            "start": [("self", None)],
            "state": [("self", None)],
            "stats": [("self", None)],
        },
    },
    "SessionResult": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": [],
        "methods": {
            "__init__": [("self", None), ("end_state", None), ("stats", None), ("failed_files", None)],
            "failed": [("self", None)],
            "failed_files": [("self", None)],
            "ok": [("self", None)],
            "reason": [("self", None)],
            "stats": [("self", None)],
        },
    },
    "SessionState": {
        "ancestors": [],
        "class_vars": ["FAILED", "FINISHED", "NOTSTARTED", "RUNNING"],
        "instance_vars": [],
        "methods": {},
    },
    "SessionStateError": {
        "ancestors": [
            "SessionStateError",
            "builtins.ValueError",
            "builtins.Exception",
            "builtins.BaseException",
            "builtins.object",
        ],
        "class_vars": ["args"],
        "instance_vars": [],
        "methods": {},
    },
    "Stream": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": [],
        "methods": {
            "__init__": [("self", None), ("dest_path", None), ("mgmt_conn", None), ("chunk_size", None)],
            "close": [("self", None)],
            "open": [("self", None)],
            "send": [("self", None), ("data", None)],
        },
    },
    "StreamSession": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": ["ascp_path"],
        "methods": {
            "__init__": [
                ("self", None),
                ("order", None),
                ("chunk_size", None),
                ("ascp_path", "None"),
                ("listener", "None"),
                ("port", "None"),
            ],
            "cancel": [("self", None)],
            "close": [("self", None)],
            "failed_files": [("self", None)],
            "file_stats": [("self", None), ("filename", "None")],
            "finish": [("self", None)],
            "open_stream": [("self", None), ("dest_path", None)],
            "set_rate": [("self", None), ("target_kbps", None)],
            "start": [("self", None)],
            "state": [("self", None)],
            "stats": [("self", None)],
        },
    },
    "StreamStateError": {
        "ancestors": [
            "StreamStateError",
            "builtins.ValueError",
            "builtins.Exception",
            "builtins.BaseException",
            "builtins.object",
        ],
        "class_vars": ["args"],
        "instance_vars": [],
        "methods": {},
    },
    "StreamUpload": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": ["dest_host", "dest_identity", "dest_pass", "dest_user", "options"],
        "methods": {
            "__init__": [
                ("self", None),
                ("dest_user", None),
                ("dest_host", None),
                ("dest_pass", "None"),
                ("dest_identity", "None"),
                ("options", "None"),
            ],
            "ascp_opts": [("self", None)],
        },
    },
    "SymlinkPolicy": {
        "ancestors": [],
        "class_vars": ["COPY", "COPY_FORCE", "FOLLOW", "SKIP"],
        "instance_vars": [],
        "methods": {},
    },
    "TransferEvent": {
        "ancestors": [],
        "class_vars": [],
        "instance_vars": ["event_type", "file_stats", "session_stats"],
        "methods": {
            "__init__": [("self", None), ("event_type", None), ("session_stats", None), ("file_stats", "None")]
        },
    },
    "TransferEventType": {
        "ancestors": [],
        "class_vars": ["ARGSTOP", "DONE", "ERROR", "FILEERROR", "INIT", "SESSION", "SKIP", "STATS", "STOP"],
        "instance_vars": [],
        "methods": {},
    },
    "TransferOptions": {
        "ancestors": [],
        "class_vars": ["DEFAULT_CHUNK_SIZE", "DEFAULT_DESTINATION_ROOT", "DEFAULT_POLICY"],
        "instance_vars": ["opts"],
        "methods": {"__init__": [("self", None), ("**kwargs", None)], "defaults": [], "valid_options": []},
    },
    "TransferPolicy": {
        "ancestors": [],
        "class_vars": ["FAIR", "FIXED", "HIGH", "LOW"],
        "instance_vars": [],
        "methods": {},
    },
}

OPTIONS: dict[str, dict[str, str | None]] = {
    "alternate_config_filename": {"default": None, "type": "str"},
    "apply_local_docroot": {"default": "False", "type": "bool"},
    "auto_detect_capacity": {"default": "False", "type": "bool"},
    "check_ssh_fingerprint": {"default": None, "type": "str"},
    "chunk_size": {"default": None, "type": "int"},
    "cipher": {"default": None, "type": "constant"},
    "content_protection_passphrase": {"default": None, "type": "str"},
    "cookie": {"default": None, "type": None},
    "create_dirs": {"default": None, "type": "bool"},
    "datagram_size": {"default": None, "type": "int"},
    "delete_before_transfer": {"default": None, "type": "bool"},
    "destination_root": {"default": "destination", "type": "str"},
    "encryption": {"default": "on", "type": "bool"},
    "exclude_newer_than": {"default": None, "type": "int"},
    "exclude_older_than": {"default": None, "type": "int"},
    "exclude_patterns": {"default": None, "type": "list"},
    "extra_options": {"default": None, "type": "list"},
    "file_checksum": {"default": None, "type": "constant"},
    "file_manifest_format": {"default": None, "type": "constant"},
    "file_manifest_path": {"default": None, "type": "str"},
    "http_fallback_options": {"default": None, "type": "HttpFallbackOptions"},
    "ignore_host_key": {"default": None, "type": "bool"},
    "local_log_dir": {"default": None, "type": "str"},
    "min_rate_kbps": {"default": None, "type": "int"},
    "move_after_transfer_path": {"default": None, "type": "str"},
    "multi_session_threshold": {"default": None, "type": None},
    "overwrite_policy": {"default": None, "type": "constant"},
    "partial_file_suffix": {"default": ".partial", "type": "str"},
    "policy": {"default": None, "type": "constant"},
    "pre_post_command_path": {"default": None, "type": "str"},
    "precalculate_job_size": {"default": "False", "type": "bool"},
    "preserve_access_time": {"default": None, "type": "bool"},
    "preserve_acls": {"default": None, "type": "constant"},
    "preserve_creation_time": {"default": None, "type": "bool"},
    "preserve_dates": {"default": None, "type": "bool"},
    "preserve_file_owner_gid": {"default": None, "type": "bool"},
    "preserve_file_owner_uid": {"default": None, "type": "bool"},
    "preserve_modification_time": {"default": None, "type": "bool"},
    "preserve_source_access_time": {"default": None, "type": "bool"},
    "preserve_xattrs": {"default": None, "type": "constant"},
    "read_size": {"default": None, "type": "int"},
    "remote_log_dir": {"default": None, "type": "str"},
    "remote_preserve_acls": {"default": None, "type": "constant"},
    "remote_preserve_xattrs": {"default": None, "type": "constant"},
    "remove_empty_directories": {"default": None, "type": "bool"},
    "remove_empty_source_dir": {"default": None, "type": "bool"},
    "remove_files_after_transfer": {"default": None, "type": "bool"},
    "resume_check": {"default": None, "type": "constant"},
    "retransmission_request_max_size": {"default": None, "type": "int"},
    "retry_timeout": {"default": None, "type": "int"},
    "save_before_overwrite": {"default": None, "type": "bool"},
    "skip_dir_traversal_dups": {"default": "false", "type": None},
    "skip_special_files": {"default": None, "type": "bool"},
    "source_base": {"default": None, "type": "str"},
    "source_prefix": {"default": None, "type": "str"},
    "symlink_policy": {"default": None, "type": "constant"},
    "target_rate_kbps": {"default": "10000", "type": "int"},
    "tcp_port": {"default": "22", "type": "int"},
    "token": {"default": None, "type": "str"},
    "udp_port": {"default": "33001", "type": "int"},
    "write_size": {"default": None, "type": "int"},
}

EXAMPLES: list[str] = [
    (
        "\n"
        "import faspmanager as fm\n"
        "\n"
        "order = fm.FileUpload(\n"
        "    source_paths='myfile.txt',\n"
        "    dest_user='remote_user',\n"
        "    dest_host='127.0.0.1',\n"
        "    dest_pass='password'\n"
        ")\n"
        "\n"
        "with fm.session(order=order) as session:\n"
        "    session.start()\n"
        "    session.set_rate(target_kbps=100000)\n"
        "    result = session.finish()\n"
        "    print(result.ok())\n"
    ),
    (
        "\n"
        "import faspmanager as fm\n"
        "\n"
        "order = fm.PersistentUpload(\n"
        "    dest_user='remote_user',\n"
        "    dest_host='127.0.0.1',\n"
        "    dest_pass='password',\n"
        ")\n"
        "\n"
        "with fm.session(order=order) as session:\n"
        "    session.start()\n"
        "    session.add_source(source_path='file1.txt', dest_path='file1.txt')\n"
        "    session.add_source(source_path='file2.txt', dest_path='file2.txt')\n"
        "    result = session.finish()\n"
        "    print(result.ok())\n"
    ),
    (
        "\n"
        "import faspmanager as fm\n"
        "\n"
        "order = fm.StreamUpload(\n"
        "    dest_user='remote_user',\n"
        "    dest_host='127.0.0.1',\n"
        "    dest_pass='password',\n"
        ")\n"
        "\n"
        "with fm.session(order=order) as session:\n"
        "    session.start()\n"
        '    stream = session.open_stream(dest_path="destination.txt")\n'
        '    data = open("some_file.txt").read()\n'
        "    stream.send(data)\n"
        "    stream.close()\n"
        "    result = session.finish()\n"
        "    print(result.ok())\n"
    ),
]
