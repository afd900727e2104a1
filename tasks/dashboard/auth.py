"""The dashboard's one credential: a bearer token, compared in constant time, and the checks around it.

The token comes from FASPQ_DASHBOARD_TOKEN or is drawn at start (printed once, as a URL). Opening ``/?token=...``
trades it for an HttpOnly, SameSite=Strict cookie and a redirect that drops it from the address bar; scripts may
send ``Authorization: Bearer ...`` instead. Every route needs one or the other (401); a state-changing request
must also be JSON from the page's own origin (403), which a form or script of another site cannot send with
the cookie. The access log never shows a query string (the token travels in one once).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

COOKIE = "faspq_dashboard"
TOKEN_ENV = "FASPQ_DASHBOARD_TOKEN"
MIN_TOKEN_CHARS = 16

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenError(ValueError):
    """A configured token too short to guard anything."""


def configured_token() -> tuple[str, bool]:
    """The token and whether it was drawn here (then only the printed URL carries it)."""
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        return secrets.token_urlsafe(32), True
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"${TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters")
    return token, False


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine (an unresolved name counts as remote)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    def __init__(self, token: str, secure_cookie: bool) -> None:
        self._token = token.encode()
        self._secure = secure_cookie

    def _matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self._token)

    def authenticated(self, request: web.Request) -> bool:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._matches(credential.strip()):
            return True
        return self._matches(request.cookies.get(COOKIE))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/" and "token" in request.query:
            if not self._matches(request.query["token"]):
                raise web.HTTPUnauthorized(text="wrong token\n")
            found = web.HTTPSeeOther("/")
            found.set_cookie(COOKIE, self._token.decode(), httponly=True, samesite="Strict", secure=self._secure)
            raise found
        if not self.authenticated(request):
            raise web.HTTPUnauthorized(
                text="faspq dashboard: open the URL it printed at start (or send Authorization: Bearer TOKEN)\n",
                headers={"WWW-Authenticate": 'Bearer realm="faspq dashboard"'},
            )
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                raise web.HTTPForbidden(text="cross-origin request refused\n")
            if request.content_type != "application/json":
                raise web.HTTPForbidden(text="controls take application/json\n")
        return await handler(request)

    @staticmethod
    async def harden(request: web.Request, response: web.StreamResponse) -> None:
        """Every response, refusals included (on_response_prepare): only this page's own scripts run, nothing
        frames it or caches it, and no address leaks to another site."""
        response.headers.update(
            {
                "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            }
        )


class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query: a token may be in it), status, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.3fs", request.remote, request.method, request.path, response.status, time)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
