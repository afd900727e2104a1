"""Files on disk: the confined docroot handle, source walks into jobs, destination naming, resume decisions,
digests, metadata that travels with a file, encrypted envelopes, log files, and the rule that work on a
descriptor (a task's queued writes, a thread's digest) ends before it is closed.

May import ``fasp.errors`` and ``fasp.options``; knows nothing of datagrams or sessions.
"""
