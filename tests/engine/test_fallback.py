"""HTTP/HTTPS fallback (-y 1) with UDP really blocked: a firewall in the server's own network namespace.

The client runs in one namespace, fasp-server in another, joined by a veth pair;
nftables in the server's namespace drops every UDP packet (its counter proves the
engine tried). Every transfer checks size and sha256; SESSION names the carrier.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fasp import httpwire
from faspmanager.codes import ErrorCode
from tests.engine.helpers import assert_same_file, random_file, sha256
from tests.support.netns import SERVER_ADDR, Lab, udp_blocked_lab
from tests.support.servers import REPO_ROOT, _pythonpath, start_fasp_server

HTTP_PORT = 18080  # not the default 8080: the tests pass -t, so an ignored -t fails them
pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nftables")]


@pytest.fixture(scope="module")
def lab():
    with udp_blocked_lab() as lab:
        yield lab


def _cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for SERVER_ADDR: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(SERVER_ADDR))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    return {"good": _cert(directory, "server"), "other": _cert(directory, "stranger")}


@pytest.fixture(scope="module")
def server(lab, tmp_path_factory):
    """fasp-server in the server namespace with a plain HTTP fallback port."""
    with start_fasp_server(tmp_path_factory.mktemp("http-server"), host=SERVER_ADDR,
                           wrapper=Lab.wrap(lab.server_ns, []), extra_args=["--http-port", str(HTTP_PORT)]) as srv:
        yield srv


@pytest.fixture(scope="module")
def tls_server(lab, certs, tmp_path_factory):
    cert, key = certs["good"]
    with start_fasp_server(tmp_path_factory.mktemp("https-server"), host=SERVER_ADDR,
                           wrapper=Lab.wrap(lab.server_ns, []),
                           extra_args=["--http-port", str(HTTP_PORT + 1), "--https-cert", str(cert),
                                       "--https-key", str(key)]) as srv:
        yield srv


def _in_client(lab: Lab, argv: list[str], env: dict, timeout: float = 90) -> dict:
    proc = subprocess.run(Lab.wrap(lab.client_ns, [sys.executable, "-m", "tests.support.probe", *argv]),
                          env={**env, "PYTHONPATH": _pythonpath()}, cwd=REPO_ROOT, capture_output=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return json.loads(proc.stdout)


def _ascp(lab: Lab, srv, *args: str) -> dict:
    """Run the engine in the client namespace against ``srv``: {"rc", "stderr", "events"}."""
    return _in_client(lab, ["engine", "-P", str(srv.port), *args], srv.env())


def _event(run: dict, kind: str) -> dict:
    found = [fields for event, fields in run["events"] if event == kind]
    assert found, f"no {kind} event; events {[e for e, _ in run['events']]}; stderr {run['stderr']}"
    return found[0]


def _ok(run: dict) -> dict:
    assert run["rc"] == 0, run["stderr"]
    _event(run, "DONE")
    return _event(run, "SESSION")


def test_udp_blocked_without_fallback_fails_with_15(lab, server, tmp_path):
    source = random_file(tmp_path / "nofallback.bin", 10_000)
    dropped = lab.udp_dropped()
    run = _ascp(lab, server, str(source), f"{server.user}@{server.host}:/")
    assert run["rc"] != 0
    assert int(_event(run, "ERROR")["Code"]) == ErrorCode.CONNECTION_TIMEOUT
    assert lab.udp_dropped() > dropped  # the firewall, not something else, stopped it
    assert not (server.docroot / "nofallback.bin").exists()


def test_http_fallback_upload_and_download(lab, server, tmp_path):
    source = random_file(tmp_path / "up.bin", 3_000_000)
    run = _ascp(lab, server, "-y", "1", "-t", str(HTTP_PORT), str(source), f"{server.user}@{server.host}:/")
    session = _ok(run)
    assert (session["Transport"], int(session["Port"])) == ("http", HTTP_PORT)
    assert_same_file(source, server.docroot / "up.bin")

    remote = random_file(server.docroot / "down.bin", 2_500_000)
    dest = tmp_path / "dl"
    dest.mkdir()
    run = _ascp(lab, server, "-y", "1", "-t", str(HTTP_PORT), f"{server.user}@{server.host}:/down.bin", str(dest))
    assert _ok(run)["Transport"] == "http"
    assert_same_file(remote, dest / "down.bin")
