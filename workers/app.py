"""The Celery application (``celery -A workers.app worker``).

``app`` is configured from the environment at import and declares the task
bodies (workers/transfer.py); importing this module makes this process a
worker's (its signal handlers connect). Clients never import it: they send
tasks by name through tasks.transfer.celery_app. Each consuming worker
process (the main one, whatever the pool) also runs the reaper that hands
dead owners' transfers back to the queue, and keeps the queue's Lua scripts
in Redis's script cache for the clients (workers/scriptcache.py).

A worker refuses to start without the shared key, and before its pool starts
it keeps its settings in memory and strips its environment to what engines
need (config.settings.pin_settings), so no engine or ``-e`` program it runs
inherits the key, Redis URLs or passwords. With FASPQ_METRICS_PORT it then
serves its Prometheus metrics (workers/metrics.py) on FASPQ_METRICS_ADDRESS
(default 127.0.0.1).
"""

from __future__ import annotations

import logging
import os

import redis
from celery import Celery
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import task_prerun, worker_init, worker_ready, worker_shutdown, worker_shutting_down
from celery.worker import WorkController
from kombu.transport import redis as kombu_redis
from prometheus_client import start_http_server

from config.celery import celery_config
from config.settings import get_settings, pin_settings, redacted, strip_environment
from tasks.secrets import SecretKeyError, derive
from tasks.store.keys import draining_key
from tasks.store.redisconn import redis_for

from .reaper import Reaper
from .scriptcache import ScriptKeeper

settings = get_settings()
app = Celery("faspq", include=["workers.transfer"])
app.conf.update(celery_config(settings))
_threads: list[Reaper | ScriptKeeper] = []  # started when the worker is ready
_metrics: list[tuple[str, int]] = []  # where the endpoint listens
log = logging.getLogger(__name__)


_connparams = kombu_redis.Channel._connparams
_KEPT = "_faspq_connparams"


def _connparams_kept(channel: kombu_redis.Channel, asynchronous: bool = False) -> dict:
    """kombu's connection parameters of a broker channel, kept for once Celery has collected its connection.

    On a lost broker connection (a Redis restart) Celery 5.7 ``collect()``s the connection, which detaches its
    transport from the channel (kombu's parameters then raise AttributeError, which Celery treats as
    unrecoverable: the worker exits), then ``close()``s the channel, restoring its unacknowledged messages
    (``acks_late``: a running transfer's). The transfer's ack at its end goes to the same detached channel. Redis
    keeps those messages by delivery tag, not per connection, so both are right on a new connection to the same
    broker: the parameters the channel last connected with. Otherwise the ack failed (a CRITICAL "Couldn't ack")
    and the message stayed unacked until the visibility timeout (12 h) delivered it again, to be dropped. The
    restore is as harmless: the running transfer's lease drops that delivery. A Sentinel channel finds the primary
    through its transport, so it keeps that connection error (and its message the visibility timeout). No kombu
    or Celery setting covers this (worker_cancel_long_running_tasks_on_connection_loss would stop every running
    transfer instead).
    """
    transport = channel.connection
    if transport is not None and transport.client is not None:
        params = _connparams(channel, asynchronous)
        # the pool of acks, restores and publishes (the event loop's is the channel's own)
        if not asynchronous and not isinstance(channel, kombu_redis.SentinelChannel):
            channel.__dict__[_KEPT] = params
        return params
    kept = channel.__dict__.get(_KEPT)
    if kept is None or asynchronous:
        raise redis.ConnectionError("the broker connection of this channel was closed")
    log.warning("broker connection lost: the messages delivered on it are acknowledged (or restored) over a new one")
    return dict(kept)


kombu_redis.Channel._connparams = _connparams_kept  # type: ignore[method-assign]


@worker_init.connect
def _harden(sender: object = None, **_: object) -> None:
    """Runs in the main worker process before any pool process or transfer exists."""
    os.environ.setdefault("FASPMANAGER_WARM", "1")  # engines forked warm (faspmanager.forkserver) unless =0
    pinned = pin_settings()
    try:
        derive(pinned.secret_key, "check")
    except SecretKeyError as exc:
        raise SystemExit(f"faspq worker refuses to start: {exc}") from None
    if pinned.metrics_port is not None:
        _serve_metrics(sender, pinned.metrics_address, pinned.metrics_port)


def _serve_metrics(worker: object, address: str, port: int) -> None:
    """The Prometheus endpoint of workers/metrics.py's registry, in this process: only with a pool that runs
    transfers here."""
    pool = get_implementation(getattr(worker, "pool_cls", None) or "prefork")
    if isinstance(pool, type) and issubclass(pool, PreforkPool):
        raise SystemExit(
            "faspq worker refuses to start: FASPQ_METRICS_PORT needs --pool threads (or solo): a prefork "
            "pool runs transfers in child processes the metrics endpoint does not see"
        )
    try:
        server, _thread = start_http_server(port, addr=address)  # /metrics, on a daemon thread
    except OSError as exc:
        raise SystemExit(f"faspq worker refuses to start: metrics on {address}:{port}: {exc.strerror}") from None
    _metrics.append((str(server.server_address[0]), server.server_address[1]))  # logged at worker_ready


@task_prerun.connect
def _strip(**_: object) -> None:
    """Again in the process about to run a transfer: Celery sets CELERY_LOG_* after worker_init (a prefork
    pool's processes read them at start, so the main process keeps them)."""
    strip_environment()


def _draining(node: str, on: bool) -> None:
    client = redis_for(settings.events_url)
    key = draining_key(settings.prefix, node)
    if on:
        client.set(key, "1", ex=24 * 3600)
    else:
        client.delete(key)


@worker_ready.connect
def _start(sender: WorkController, **_: object) -> None:
    _draining(sender.hostname, on=False)  # a restarted node is not draining
    policy = settings.policy
    log.info(
        "faspq worker: events %s, read dirs %s, write dirs %s, -e programs %s, extra options %s, "
        "ignore_host_key %s, rate caps %s",
        redacted(settings.events_url),
        list(policy.read_dirs),
        list(policy.write_dirs),
        list(policy.prepost_programs),
        list(policy.extra_options),
        "allowed" if policy.allow_ignore_host_key else "refused",
        dict(policy.rate_caps) or "none",
    )
    for host, port in _metrics:
        log.info("faspq worker metrics on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)
    for thread in (ScriptKeeper(redis_for(settings.events_url)), Reaper(app, settings)):
        thread.start()
        _threads.append(thread)


@worker_shutting_down.connect
def _begin_handover(sender: object = None, **_: object) -> None:
    """Warm shutdown: transfers that may hand over (runner.Attempt._check_shutdown) see this and do."""
    _draining(str(sender), on=True)


@worker_shutdown.connect
def _stop_threads(**_: object) -> None:
    while _threads:
        _threads.pop().stop()
