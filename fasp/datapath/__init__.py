"""The data path: datagram codec, AEAD sealing, send and receive state, rate control (all sans-IO), and the
asyncio channels that move them over UDP (or HTTP when UDP cannot pass).

May import ``fasp.errors`` and ``fasp.options``; knows nothing of sessions, control messages or the server.
"""
