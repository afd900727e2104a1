"""Key logins as ssh and IBM's ascp make them: the user's default keys when nothing else is given, and an
encrypted key opened with ASPERA_SCP_PASS (IBM's transfer spec: the SSH key's passphrase travels there)."""

from __future__ import annotations

import os

import asyncssh
import pytest

from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, random_file
from tests.support.servers import start_fasp_server

SECRETS = ("ASPERA_SCP_PASS", "ASPERA_SCP_KEY")


def _clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in SECRETS}, **extra}


@pytest.mark.timeout(60)
def test_without_a_key_or_a_password_the_user_s_default_key_logs_in(tmp_path):
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "authorized_keys").write_bytes(key.export_public_key())
    ssh_dir = tmp_path / "home" / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    key.write_private_key(ssh_dir / "id_ed25519")
    with start_fasp_server(tmp_path / "srv", authorized_keys=tmp_path / "authorized_keys") as server:
        src = random_file(tmp_path / "a.bin", 100_000)
        result = run_ascp(
            fasp_args(server, str(src), remote(server, "/a.bin")), _clean_env(HOME=str(tmp_path / "home"))
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert_same_file(src, server.docroot / "a.bin")


@pytest.mark.timeout(60)
def test_an_encrypted_key_opens_with_aspera_scp_pass(tmp_path):
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "authorized_keys").write_bytes(key.export_public_key())
    key.write_private_key(tmp_path / "id_enc", passphrase="key-passphrase-7")
    with start_fasp_server(tmp_path / "srv", authorized_keys=tmp_path / "authorized_keys") as server:
        src = random_file(tmp_path / "b.bin", 100_000)
        args = fasp_args(server, "-i", str(tmp_path / "id_enc"), str(src), remote(server, "/b.bin"))
        wrong = run_ascp(args, _clean_env(ASPERA_SCP_PASS="not-it"))
        assert wrong.returncode == 19, wrong.stderr.decode(errors="replace")
        assert not (server.docroot / "b.bin").exists()
        result = run_ascp(args, _clean_env(ASPERA_SCP_PASS="key-passphrase-7"))
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert_same_file(src, server.docroot / "b.bin")
