"""``fasp-server``: the SSH front door of a transfer server, its users file, the HTTP fallback port,
and its Prometheus metrics.

May import every layer below it (errors, options, files, datapath, session); nothing imports it but tests.
"""
