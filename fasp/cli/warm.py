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

if __name__ == "__main__":
    from fasp.cli.ascp import main as engine

    main(engine, PRELOAD)
