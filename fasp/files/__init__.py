"""Files on disk: the confined docroot handle, source walks into jobs, destination naming, resume decisions,
digests, metadata that travels with a file, encrypted envelopes, and log files.

May import ``fasp.errors`` and ``fasp.options``; knows nothing of datagrams or sessions.
"""
