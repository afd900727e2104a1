"""``fasp-server``: the SSH front door of a transfer server, its users file, and the HTTP fallback port.

May import every layer below it (errors, options, files, datapath, session); nothing imports it but tests.
"""
