from collections.abc import Sequence
from typing import Any

from fasp.datapath.datagram import Buffer

WIRE: tuple[int, int, int, int, int]

def seal_data(
    key: bytes,
    encrypted: bool,
    direction: int,
    seq: int,
    prefix: bytes,
    ts: int,
    file_id: int,
    base: int,
    block: Buffer,
    runs: Sequence[tuple[int, int]],
) -> list[bytes]: ...
def open_batch(
    key: bytes,
    encrypted: bool,
    version: int,
    peer_direction: int,
    cid: bytes,
    header_sizes: bytes,
    expected: int,
    packets: Sequence[Buffer],
) -> list[tuple[int, int, int, int, bytes] | None]: ...
def recv_batch(fd: int, buffer: bytearray, count: int) -> list[tuple[bytes, tuple[Any, ...]]]: ...
