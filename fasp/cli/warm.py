"""``python -m fasp.cli.warm PATH``: the fork server of warm engines (faspmanager.forkserver).

It imports everything an engine run needs, client and server role alike, once; each engine is then a fork
of it running ``fasp.cli.ascp.main`` with its own argv, environment and stdio, for a few milliseconds of CPU
instead of a new interpreter's quarter second of imports.
"""

from __future__ import annotations

from faspmanager.forkserver import main

PRELOAD = (
    "fasp.cli.ascp",
    "fasp.cli.progressline",
    "fasp.session.client",
    "fasp.session.server",
    "fasp.session.mgmtport",
    "fasp.session.prepost",
    "fasp.options.asperaconf",
    "concurrent.futures.thread",  # asyncio's default executor (name resolution)
    "encodings.idna",
    "pwd",
)


def warm_up() -> None:
    """Use once each cryptographic primitive an engine uses, so that OpenSSL's lazy per-algorithm set-up
    (fetching an implementation: about 0.3-1.5 ms each, 2-3 ms an engine in all) happens here, once, instead
    of in every fork: the session key's HKDF, the datagrams' AES-GCM (compiled and pure paths), and SSH's
    ed25519 (and reading an OpenSSH key), X25519, ML-KEM and ChaCha20."""
    import os

    import asyncssh
    from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    from fasp.datapath import datagram
    from fasp.datapath.seal import KEY_SIZES, SHARE_BYTES, Seal, SessionKey

    share = os.urandom(SHARE_BYTES)
    for size in KEY_SIZES:
        key = SessionKey.derive(share, share, bytes(16), size)
        seal, peer = Seal(bytes(16), key, 0), Seal(bytes(16), key, 1)
        peer.open(seal.seal(datagram.FEEDBACK, b"warm", 0, 0))
        peer.open_batch(seal.seal_data(1, 0, b"warm", [(0, 4)]))
    signer = ed25519.Ed25519PrivateKey.from_private_bytes(share[:32])
    signer.public_key().verify(signer.sign(b"warm"), b"warm")
    # reading an OpenSSH private key (-i) compiles asyncssh's PEM patterns: compiled here, cached for the forks
    asyncssh.import_private_key(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    x25519.X25519PrivateKey.generate().exchange(x25519.X25519PrivateKey.generate().public_key())
    try:  # ML-KEM (SSH's mlkem768x25519 key exchange) is in newer cryptography releases only
        from cryptography.hazmat.primitives.asymmetric import mlkem

        mlkem.MLKEM768PrivateKey.generate()
    except ImportError:
        pass
    Cipher(algorithms.ChaCha20(share[:32], share[:16]), None).encryptor().update(b"warm")


if __name__ == "__main__":
    from fasp.cli.ascp import main as engine

    warm_up()
    main(engine, PRELOAD)
