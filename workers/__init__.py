"""The worker side: Celery app, session runner, Redis event log and control stream, leases and takeover."""
