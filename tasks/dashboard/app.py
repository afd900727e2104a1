"""The dashboard's web server (aiohttp): the page, its live stream and its two controls.

Routes (every one behind auth.Guard):
  GET  /                              the page (static/index.html; its script and style beside it)
  GET  /api/transfers                 a snapshot of every row
  GET  /api/events                    server-sent events: a snapshot, then changed rows as they change
  GET  /api/transfers/{id}/rate       the transfer's rate over time, from its retained events
  POST /api/transfers/{id}/rate       {"kbps": N}: the same set_rate control message ``faspq rate`` sends
  POST /api/transfers/{id}/cancel     the same cancel ``faspq cancel`` sends

Redis calls are blocking (the project's clients, store/redisconn.py), so they run in the default executor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
from functools import partial
from importlib import resources
from typing import Any

import redis
from aiohttp import web

from config.settings import Settings

from ..client import TransferHandle
from ..secrets import SecretKeyError
from ..store.control import ControlError
from ..store.events import EventLog, UnknownTransfer
from ..store.keys import Keys
from ..store.redisconn import redis_for
from .auth import AccessLogger, Guard
from .feed import Feed, Message, Subscribers, rate_points

log = logging.getLogger(__name__)

STATIC = resources.files(__package__) / "static"
KEEPALIVE_S = 15.0
TRANSFER_ID = r"[A-Za-z0-9_.:@-]{1,200}"

SETTINGS = web.AppKey("settings", Settings)
FEED = web.AppKey("feed", Feed)
SUBSCRIBERS = web.AppKey("subscribers", Subscribers)


def make_app(settings: Settings, guard: Guard) -> web.Application:
    app = web.Application(middlewares=[guard.middleware])
    # the control messages name their sender: this dashboard, on behalf of the deployment's client name
    app[SETTINGS] = dataclasses.replace(settings, client_name=f"{settings.client_name or 'faspq'}/dashboard")
    app.on_response_prepare.append(guard.harden)
    app.router.add_get("/", _page)
    app.router.add_get("/static/{name:[a-z]+\\.(?:js|css)}", _static)
    app.router.add_get("/api/transfers", _snapshot)
    app.router.add_get("/api/events", _events)
    app.router.add_get(f"/api/transfers/{{id:{TRANSFER_ID}}}/rate", _rate_history)
    app.router.add_post(f"/api/transfers/{{id:{TRANSFER_ID}}}/rate", _set_rate)
    app.router.add_post(f"/api/transfers/{{id:{TRANSFER_ID}}}/cancel", _cancel)
    app.on_startup.append(_start_feed)
    app.on_shutdown.append(_end_streams)
    app.on_cleanup.append(_stop_feed)
    return app


async def _start_feed(app: web.Application) -> None:
    settings = app[SETTINGS]
    subscribers = app[SUBSCRIBERS] = Subscribers(asyncio.get_running_loop())
    feed = app[FEED] = Feed(redis_for(settings.events_url), settings.prefix, settings.secret_key, subscribers.deliver)
    feed.start()


async def _end_streams(app: web.Application) -> None:
    app[SUBSCRIBERS].end_all()


async def _stop_feed(app: web.Application) -> None:
    await asyncio.to_thread(app[FEED].stop)


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=(STATIC / "index.html").read_text(), content_type="text/html")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    resource = STATIC / name
    if not resource.is_file():
        raise web.HTTPNotFound()
    kind = "text/javascript" if name.endswith(".js") else "text/css"
    return web.Response(text=resource.read_text(), content_type=kind)


async def _snapshot(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(request.app[FEED].snapshot))


async def _events(request: web.Request) -> web.StreamResponse:
    subscribers = request.app[SUBSCRIBERS]
    queue = subscribers.add()  # before the snapshot: no change falls between the two
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    try:
        await response.prepare(request)
        message: Message | None = await asyncio.to_thread(request.app[FEED].snapshot)
        while message is not None:
            await response.write(f"data: {json.dumps(message, separators=(',', ':'))}\n\n".encode())
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    break
                except TimeoutError:  # a comment line: proxies keep the stream open, a gone client shows
                    await response.write(b": keepalive\n\n")
    except ConnectionResetError:  # the page went away
        pass
    finally:
        subscribers.remove(queue)
    return response


async def _rate_history(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    events = EventLog(
        redis_for(settings.events_url), Keys(settings.prefix, request.match_info["id"]), settings.secret_key
    )
    points = rate_points(await asyncio.to_thread(events.history))
    return web.json_response({"points": points})


async def _set_rate(request: web.Request) -> web.Response:
    try:
        kbps = (await request.json())["kbps"]
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='{"kbps": N} expected\n') from None
    if not isinstance(kbps, int) or isinstance(kbps, bool) or kbps < 1:
        raise web.HTTPBadRequest(text="kbps must be a positive integer\n")
    return await _control(request, "set_rate", kbps)


async def _cancel(request: web.Request) -> web.Response:
    return await _control(request, "cancel")


async def _control(request: web.Request, op: str, *args: Any) -> web.Response:
    """One control message through tasks.client, as the CLI sends it; its outcome as JSON."""
    transfer_id = request.match_info["id"]
    handle = TransferHandle(transfer_id, request.app[SETTINGS])
    try:
        sent = await asyncio.to_thread(partial(getattr(handle, op), *args))
    except UnknownTransfer:
        raise web.HTTPNotFound(text=f"no transfer {transfer_id}\n") from None
    except (ControlError, SecretKeyError) as exc:
        raise web.HTTPConflict(text=f"not sent: {exc}\n") from None
    except redis.RedisError as exc:
        raise web.HTTPServiceUnavailable(text=f"Redis: {exc}\n") from None
    log.info("%s of %s sent (%s)", op, transfer_id, args)
    return web.json_response({"op": op, "transfer_id": transfer_id, "control_id": sent})


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def serve(settings: Settings, guard: Guard, host: str, port: int, tls: ssl.SSLContext | None, ready: Any) -> None:
    """Run until cancelled; ``ready(url)`` is called once the socket listens (``port`` 0: a free one)."""
    runner = web.AppRunner(make_app(settings, guard), access_log_class=AccessLogger, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        ready(f"{'https' if tls else 'http'}://{shown}:{bound}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
