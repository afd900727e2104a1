"""The worker runtime: the Celery app (app), the task bodies (transfer), one attempt of a transfer (runner),
the lease heartbeat (heartbeat), the reaper that hands dead owners' transfers on (reaper) and the
Prometheus metrics (metrics).

Started as ``celery -A workers.app worker``; applications never import it. May import tasks/ (the order
schema, task names, TransferFailed and the Redis model in tasks/store), config/ and faspmanager.
"""
