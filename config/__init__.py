"""Settings of the distributed layer, read from the environment (settings), the worker's policy (policy) and
the Celery configuration built from them (celery); shared by clients (tasks/) and workers (workers/).

May import faspmanager and tasks.orders (the order-type table, which imports nothing); nothing else of tasks/,
nothing of workers/.
"""
