"""A recording HTTP CONNECT proxy: what the client sent through it and what came back, byte for byte.

Run it where the client runs (``python -m tests.support.tap DIR``); it prints
"listening on PORT" once ready and, per tunnel N, writes DIR/N.up (client to
server, from the first byte after CONNECT) and DIR/N.down (server to client).
The tests read those files to see what the fallback channel looks like on the wire.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

_count = itertools.count()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Path) -> None:
    with open(record, "wb") as out:
        try:
            while data := await reader.read(65536):
                out.write(data)
                out.flush()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


async def _tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, directory: Path) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    method, authority, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
    if method != "CONNECT":
        writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        writer.close()
        return
    host, _, port = authority.rpartition(":")
    up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    n = next(_count)
    await asyncio.gather(
        _copy(reader, up_writer, directory / f"{n}.up"), _copy(up_reader, writer, directory / f"{n}.down")
    )


async def main(directory: Path) -> None:
    server = await asyncio.start_server(lambda r, w: _tunnel(r, w, directory), "127.0.0.1", 0)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
