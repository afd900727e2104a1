"""The dashboard refuses whoever does not hold its token, over real HTTP on loopback (no Redis reached: the
checks come first), and ``faspq dashboard`` will not listen beyond loopback without TLS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from config.settings import Settings
from tasks.cli import main
from tasks.dashboard.app import make_app
from tasks.dashboard.auth import COOKIE, Guard, is_loopback

TOKEN = "t0ken-of-the-tests-" + "x" * 20
CONTROLS = ["/api/transfers/abc/rate", "/api/transfers/abc/cancel"]
READS = ["/", "/static/dashboard.js", "/api/transfers", "/api/events", "/api/transfers/abc/rate"]


@contextlib.asynccontextmanager
async def _dashboard():
    # nothing listens there: a request that got past the checks to Redis would fail
    settings = dataclasses.replace(Settings.from_env(), events_url="redis://127.0.0.1:1/0")
    server = TestServer(make_app(settings, Guard(TOKEN, secure_cookie=False)), host="127.0.0.1")
    await server.start_server()
    try:
        # unsafe: keep cookies of an IP address host
        async with aiohttp.ClientSession(str(server.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield http
    finally:
        await server.close()


def _run(check):
    async def body():
        async with _dashboard() as http:
            await check(http)

    asyncio.run(body())


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Cookie": f"{COOKIE}=x"}]
)
def test_reads_and_controls_without_the_token_are_401(headers):
    async def check(http):
        for path in READS:
            async with http.get(path, headers=headers) as reply:
                assert reply.status == 401, path
                assert TOKEN not in await reply.text()
        for path in CONTROLS:
            async with http.post(path, json={"kbps": 5}, headers=headers) as reply:
                assert reply.status == 401, path

    _run(check)


def test_a_wrong_token_in_the_url_sets_no_cookie():
    async def check(http):
        async with http.get("/?token=nope", allow_redirects=False) as reply:
            assert reply.status == 401 and COOKIE not in reply.cookies

    _run(check)


def test_the_token_in_the_url_becomes_a_strict_httponly_cookie_that_opens_the_page():
    async def check(http):
        async with http.get(f"/?token={TOKEN}", allow_redirects=False) as reply:
            assert reply.status == 303 and reply.headers["Location"] == "/"
            morsel = reply.cookies[COOKIE]
            assert morsel.value == TOKEN and morsel["httponly"] and morsel["samesite"] == "Strict"
        async with http.get("/") as page:  # the session's cookie jar carries it now
            assert page.status == 200 and "faspq" in await page.text()
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]

    _run(check)


def test_controls_need_json_from_the_same_origin():
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def check(http):
        async with http.post(CONTROLS[1], data="x=1", headers=bearer) as reply:  # what a cross-site form sends
            assert reply.status == 403
        async with http.post(CONTROLS[1], json={}, headers={**bearer, "Origin": "http://evil.example"}) as reply:
            assert reply.status == 403
        async with http.post(CONTROLS[0], json={"kbps": "fast"}, headers=bearer) as reply:
            assert reply.status == 400  # past the checks, refused before Redis

    _run(check)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "dashboard.example"])
def test_no_listening_beyond_loopback_without_tls(host):
    assert not is_loopback(host)
    result = CliRunner().invoke(main, ["dashboard", "--host", host, "--port", "0"])
    assert result.exit_code == 2 and "--tls-cert" in result.output


def test_a_short_configured_token_is_refused():
    result = CliRunner().invoke(main, ["dashboard", "--port", "0"], env={"FASPQ_DASHBOARD_TOKEN": "short"})
    assert result.exit_code == 1 and "at least 16" in result.output


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.8.9.10"))
