"""The Celery application (``celery -A workers.app worker``).

``app`` is configured from the environment at import; ``app_for(settings)``
gives a client the app of other settings (another Redis) without touching it.
Each consuming worker process (the main one, whatever the pool) also runs the
reaper that hands dead owners' transfers back to the queue.
"""
from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from config.celery import celery_config
from config.settings import Settings, get_settings

_apps: dict[Settings, Celery] = {}


def app_for(settings: Settings) -> Celery:
    if settings not in _apps:
        app = Celery("faspq")
        app.conf.update(celery_config(settings))
        app.conf.include = ["tasks.transfer"]
        _apps[settings] = app
    return _apps[settings]


settings = get_settings()
app = app_for(settings)
_reaper = []


@worker_ready.connect
def _start_reaper(sender=None, **_):
    from .reaper import Reaper
    reaper = Reaper(app, settings)
    reaper.start()
    _reaper.append(reaper)


@worker_shutting_down.connect
def _begin_handover(**_):
    from .runner import shutting_down
    shutting_down.set()


@worker_shutdown.connect
def _stop_reaper(**_):
    while _reaper:
        _reaper.pop().stop()
