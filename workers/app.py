"""The Celery application (``celery -A workers.app worker``).

Besides the transfer tasks, each worker process that consumes (the main
process, whatever the pool) runs the reaper that hands dead owners'
transfers to the queue again.
"""
from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from config.celery import celery_config
from config.settings import get_settings

settings = get_settings()
app = Celery("faspq")
app.conf.update(celery_config(settings))
app.conf.include = ["tasks.transfer"]

_reaper = None


@worker_ready.connect
def _start_reaper(sender=None, **_):
    global _reaper
    from .reaper import Reaper
    _reaper = Reaper(app, settings)
    _reaper.start()


@worker_shutdown.connect
def _stop_reaper(**_):
    if _reaper is not None:
        _reaper.stop()
