"""The engine: ``fasp-ascp`` (an ascp-compatible transfer program) and ``fasp-server`` (its SSH front door).

Layers, bottom to top; a package imports only from those below it (``tests/test_layers.py`` enforces it):

- ``fasp.errors``   errors every layer raises (a peer off the protocol, local OS errors as ascp codes)
- ``fasp.options``  the ascp vocabulary: the flag table, its parser and ``Config``, aspera.conf, help text
- ``fasp.files``    files on disk: the docroot handle, jobs, naming, resume, digests, attributes, envelopes, logs
- ``fasp.datapath`` datagrams, sealing, send/receive state, rate control, and the UDP and HTTP channels
- ``fasp.session``  a session between two engines: control messages and channel, client and server roles,
                    sending and receiving, streams, the management port
- ``fasp.server``   ``fasp-server``: SSH front door, users, the HTTP fallback port
- ``fasp.cli``      ``fasp-ascp``'s command line and its human progress line

The process picture and the per-file protocol are in docs/architecture.md.
"""
