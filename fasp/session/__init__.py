"""A session between two engines: control messages and their channel, the client and server roles, the sending
and receiving roles per file, streams, pre/post programs, the management port (FASPMGR) client, and the server
engine's usage reports to fasp-server.

May import ``fasp.errors``, ``fasp.options``, ``fasp.files`` and ``fasp.datapath``.
"""
