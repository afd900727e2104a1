"""``faspq dashboard`` beyond loopback, as an operator runs it: a real process on 0.0.0.0 with a certificate.
It speaks only TLS there (a plain HTTP request gets no page), the token still guards every read, and the
cookie the token becomes is Secure, so a browser never sends it over plain HTTP."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tasks.dashboard.auth import COOKIE
from tests.support.certs import self_signed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]
TOKEN = "t0ken-of-the-tls-test-" + "y" * 20


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_beyond_loopback_it_serves_tls_only_with_a_secure_cookie(tmp_path):
    cert, key = (str(path) for path in self_signed(tmp_path, "dashboard", "127.0.0.1"))
    env = {**os.environ, "FASPQ_DASHBOARD_TOKEN": TOKEN, "FASPQ_REDIS_URL": "redis://127.0.0.1:1/0"}
    argv = [sys.executable, "-m", "tasks.cli", "dashboard", "--host", "0.0.0.0", "--port", "0"]
    proc = subprocess.Popen([*argv, "--tls-cert", cert, "--tls-key", key], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        found = re.search(r"https://\S+:(\d+)/", line)
        assert found, line
        port = int(found.group(1))
        trusted = ssl.create_default_context(cafile=cert)
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=trusted), _NoRedirect)

        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)) as plain:  # no page over HTTP
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        assert not isinstance(plain.value, urllib.error.HTTPError)

        with pytest.raises(urllib.error.HTTPError) as refused:  # TLS, but no token
            opener.open(f"https://127.0.0.1:{port}/api/transfers", timeout=5)
        assert refused.value.code == 401

        with pytest.raises(urllib.error.HTTPError) as moved:  # the token in the URL: a cookie, then the page
            opener.open(f"https://127.0.0.1:{port}/?token={TOKEN}", timeout=5)
        assert moved.value.code == 303
        cookie = moved.value.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "Secure" in cookie and "HttpOnly" in cookie, cookie
        page = opener.open(
            urllib.request.Request(f"https://127.0.0.1:{port}/", headers={"Cookie": cookie.split(";")[0]}), timeout=5
        )
        assert page.status == 200 and "faspq" in page.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
