"""Transfers as Celery tasks: order schema, one task per order type, the client API (``submit``) and ``faspq``."""
