"""Settings of the distributed layer (from the environment) and the Celery configuration built from them."""
