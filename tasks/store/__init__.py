"""The Redis model of a transfer, shared by clients (tasks/) and workers (workers/): the one place both import.

Key names (keys), the event log and status hash (events), control messages and
their stream (control), the lease record (lease), the final result (result) and
the Redis connections (redisconn). Imports config/, faspmanager and tasks'
orders and secrets; nothing of workers/ or Celery.
"""
