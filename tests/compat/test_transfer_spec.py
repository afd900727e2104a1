"""TransferOptions from an IBM transfer spec and back; the enums take the spec's spellings."""

from __future__ import annotations

import json

import pytest

import faspmanager as fm
from faspmanager.transferspec import order_fields

SPEC = {  # every field the options carry, in the schema's spellings (non-default values)
    "apply_local_docroot": True,
    "cookie": "c",
    "create_dir": True,
    "delete_before_transfer": True,
    "destination_root": "/in",
    "fasp_port": 33002,
    "file_checksum": "sha-256",
    "min_rate_kbps": 10,
    "move_after_transfer": "/archive",
    "multi_session_threshold": 1000,
    "overwrite": "diff+older",
    "precalculate_job_size": True,
    "preserve_access_time": True,
    "preserve_acls": "native",
    "preserve_creation_time": True,
    "preserve_extended_attrs": "metafile",
    "preserve_file_owner_gid": True,
    "preserve_file_owner_uid": True,
    "preserve_modification_time": True,
    "preserve_remote_acls": "metafile",
    "preserve_remote_extended_attrs": "native",
    "preserve_source_access_time": True,
    "preserve_times": True,
    "rate_policy": "high",
    "remove_after_transfer": True,
    "remove_empty_directories": True,
    "remove_empty_source_directory": True,
    "resume_policy": "full_csum",
    "save_before_overwrite": True,
    "skip_duplicate_check": True,
    "skip_special_files": True,
    "source_root": "/src",
    "src_base": "/src/base",
    "ssh_port": 33001,
    "sshfp": "SHA256:abc",
    "symlink_policy": "copy+force",
    "target_rate_kbps": 100000,
    "token": "Basic x",
    "dgram_size": 1200,
    "content_protection_password": "pw",
    "cipher": "aes-192",
    "exclude_newer_than": "-86400",
    "exclude_older_than": "1700000000",
    "http_fallback": True,
    "http_fallback_port": 8080,
    "tags": {"aspera": {"app": "x"}, "job": 7},
}


def test_round_trips():
    options = fm.TransferOptions.from_transfer_spec(SPEC)
    assert options.to_transfer_spec() == SPEC
    assert fm.TransferOptions.from_transfer_spec(json.dumps(SPEC)) == options  # JSON text too
    again = fm.TransferOptions(
        target_rate_kbps=5000,
        cipher=fm.CipherType.AES_256,
        encryption=True,
        resume_check=fm.ResumeCheck.SPARSE_CHECKSUM,
        overwrite_policy="never",
    )
    assert fm.TransferOptions.from_transfer_spec(again.to_transfer_spec()) == again
    plain = fm.TransferOptions(encryption=False)
    assert plain.to_transfer_spec() == {"cipher": "none"}
    assert fm.TransferOptions.from_transfer_spec({"cipher": "none"}) == plain


def test_what_ascp_gets():
    options = fm.TransferOptions.from_transfer_spec(
        {
            "cipher": "aes-128-gcm",
            "resume_policy": "attrs",
            "file_checksum": "sha-512",
            "target_rate": "1.5g",
            "exclude_newer_than": "-3600",
            "tags64": "eyJqb2IiOiAxfQ==",
        }
    )
    args = options.ascp_args()
    for pair in (["-c", "aes128"], ["-k", "1"], ["-l", "1500000"]):
        assert args[args.index(pair[0]) : args.index(pair[0]) + 2] == pair
    assert "--file-checksum=sha512" in args and "--exclude-newer-than=-3600" in args
    assert options.extra_options == ["--tags64", "eyJqb2IiOiAxfQ=="]  # orders put extra options after these


def test_enums_take_transfer_spec_spellings():
    assert fm.TransferOptions(cipher="aes-256").cipher is fm.CipherType.AES_256
    assert fm.TransferOptions(file_checksum="sha-384").file_checksum is fm.FileChecksumType.SHA_384
    assert fm.TransferOptions(resume_check="sparse_csum").resume_check is fm.ResumeCheck.SPARSE_CHECKSUM
    assert fm.TransferOptions(resume_check="full_checksum").resume_check is fm.ResumeCheck.FULL_CHECKSUM
    with pytest.raises(ValueError):
        fm.TransferOptions(cipher="rot13")


def test_order_fields_and_unknown_fields():
    ts = {
        "remote_host": "h",
        "remote_user": "u",
        "direction": "send",
        "paths": [{"source": "a"}],
        "title": "informational",
        "target_rate_cap_kbps": 5,
    }
    assert set(order_fields(ts)) == {"remote_host", "remote_user", "direction", "paths"}
    assert fm.TransferOptions.from_transfer_spec(ts) == fm.TransferOptions()
    with pytest.raises(ValueError, match="bogus_field"):
        fm.TransferOptions.from_transfer_spec({"bogus_field": 1})
