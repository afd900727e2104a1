"""The users file: salted hashes only, strict validation, and a CLI that never takes a password in argv."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from fasp.server.users import (
    User,
    UsersFileError,
    format_users,
    hash_password,
    load_users,
    parse_users,
    read_public_keys,
    save_users,
    verify_password,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM4lVZ3e6pAvm1vL2T7kQd0dS8zq5yPpv5u6O3bJw1Xf alice@host"


@pytest.mark.slow
def test_hash_verifies_only_its_password():
    stored = hash_password("correct horse")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsf")
    assert not verify_password(stored, "")
    assert "correct horse" not in stored


@pytest.mark.slow
def test_hashes_are_salted():
    assert hash_password("same") != hash_password("same")


def test_malformed_hash_is_a_users_file_error():
    for bad in ("plaintext", "scrypt$1$2$3$!!$!!", "md5$a$b$c$d$e"):
        with pytest.raises(UsersFileError):
            User(name="u", docroot="/d", password_hash=bad)


@pytest.mark.slow
def test_file_round_trip(tmp_path):
    users = {
        "alice": User("alice", "/srv/alice", hash_password("pw"), (KEY,), 50_000, ("fair", "low")),
        "bob": User("bob", "/srv/bob"),
    }
    path = tmp_path / "users.toml"
    save_users(path, users)
    assert load_users(path) == users
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@settings(max_examples=100, deadline=None)
@given(
    name=st.text(min_size=1, max_size=20),
    docroot=st.text(min_size=1, max_size=40),
    keys=st.lists(st.sampled_from([KEY, KEY.rsplit(" ", 1)[0], f'from="10.0.0.0/8" {KEY}']), max_size=3),
    cap=st.none() | st.integers(1, 10**9),
    policies=st.none() | st.lists(st.sampled_from(["fixed", "high", "fair", "low"]), min_size=1, unique=True),
)
def test_any_user_survives_format_and_parse(name, docroot, keys, cap, policies):
    user = User(name, docroot, None, tuple(keys), cap, None if policies is None else tuple(policies))
    assert parse_users(format_users({name: user})) == {name: user}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[users.a]\nrate_cap_kbps = 5\n", "docroot"),
        ('[users.a]\ndocroot = "/d"\nrate_cap_kbps = 0\n', "rate_cap_kbps"),
        ('[users.a]\ndocroot = "/d"\nrate_cap_kbps = true\n', "rate_cap_kbps"),
        ('[users.a]\ndocroot = "/d"\nallowed_policies = ["turbo"]\n', "allowed_policies"),
        ('[users.a]\ndocroot = "/d"\nmax_sessions = 0\n', "max_sessions"),
        ('[users.a]\ndocroot = "/d"\nmax_sessions = "4"\n', "max_sessions"),
        ('[users.a]\ndocroot = "/d"\npassword = "clear"\n', "unknown"),
        ('[users.a]\ndocroot = "/d"\nauthorized_keys = [1]\n', "OpenSSH public key"),
        ('[users.a]\ndocroot = "/d"\nauthorized_keys = ["ssh-ed25519 bm90IGEga2V5"]\n', "OpenSSH public key"),
        ("[users\n", "TOML"),
    ],
)
def test_invalid_files_are_refused_clearly(text, message):
    with pytest.raises(UsersFileError, match=message):
        parse_users(text)


def test_max_sessions_round_trips():
    users = parse_users('[users.a]\ndocroot = "/d"\nmax_sessions = 4\n')
    assert users["a"].max_sessions == 4 and parse_users(format_users(users)) == users


def test_read_public_keys_skips_comments_and_blanks():
    assert read_public_keys(f"# header\n\n  {KEY}  \n#{KEY}\n") == (KEY,)


def _users_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "fasp.server.users", *args], capture_output=True, text=True, timeout=30, **kwargs
    )


@pytest.mark.slow
def test_cli_adds_users_with_password_from_stdin_or_env(tmp_path):
    path, keys = tmp_path / "users.toml", tmp_path / "keys"
    keys.write_text(KEY + "\n")
    done = _users_cli(
        "add",
        "--file",
        str(path),
        "--user",
        "alice",
        "--docroot",
        str(tmp_path / "a"),
        "--password-stdin",
        "--authorized-keys",
        str(keys),
        "--rate-cap",
        "1000",
        "--allowed-policies",
        "fair,low",
        input="s3cret-stdin\n",
    )
    assert done.returncode == 0, done.stderr
    done = _users_cli(
        "add",
        "--file",
        str(path),
        "--user",
        "bob",
        "--docroot",
        str(tmp_path / "b"),
        "--password-env",
        "BOB_PW",
        env={**os.environ, "BOB_PW": "s3cret-env"},
    )
    assert done.returncode == 0, done.stderr
    users = load_users(path)
    assert verify_password(users["alice"].password_hash, "s3cret-stdin")
    assert verify_password(users["bob"].password_hash, "s3cret-env")
    assert users["alice"].authorized_keys == (KEY,)
    assert users["alice"].rate_cap_kbps == 1000 and users["alice"].allowed_policies == ("fair", "low")
    assert users["bob"].docroot == str(tmp_path / "b")
    text = path.read_text()
    assert "s3cret" not in text


@pytest.mark.slow
def test_cli_hash_and_refusals(tmp_path):
    done = _users_cli("hash", input="long-enough-pw\n")
    assert done.returncode == 0 and verify_password(done.stdout.strip(), "long-enough-pw")
    done = _users_cli(
        "add", "--file", str(tmp_path / "u.toml"), "--user", "x", "--docroot", "/d", "--allowed-policies", "warp"
    )
    assert done.returncode == 1 and "allowed_policies" in done.stderr
    assert not (tmp_path / "u.toml").exists()
