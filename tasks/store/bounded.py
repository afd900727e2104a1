"""Reads of what a client's Redis user may write, bounded before the bytes leave Redis.

Clients' Redis users may write a transfer's order and status hashes and its event and control streams, values up
to Redis's 512 MB each, and a MAC is checked only once a value is read. So those are read through Lua scripts that
measure first: a hash field longer than its limit is not sent (its size is), a stream entry whose fields add up to
more than the limit comes as a stub ``{b"oversize": size}``, and a stream read stops at READ_BUDGET bytes. A
reader holds at most READ_BUDGET plus one limit of them, whatever was written; honest writers stay within the
limits (MAX_EVENT_BYTES, MAX_ORDER_BYTES, a control entry: FASPQ_STREAM_CHUNK + CONTROL_OVERHEAD).

Measuring a stream entry copies it inside Redis, which serves nothing else meanwhile (a worker's lease renewal
waits too), so an oversize entry counts toward READ_BUDGET by its measured size: one read copies at most one huge
entry, and a caller that needs more reads on from the last id returned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

import redis

from .redisconn import stream_entries
from .scripts import Script

MAX_EVENT_BYTES = 1 << 20
"""The largest event entry (its JSON and MAC) and status field: a worker's events are a few KB, and its RESULT
keeps as many failed file names as fit (tasks/store/result.py)."""
MAX_ORDER_BYTES = 16 << 20
"""The largest field of a stored order (``submit`` refuses a bigger order)."""
CONTROL_OVERHEAD = 4 << 10
"""A control entry's bytes besides its stream data (message JSON, MAC): a worker reads entries up to
FASPQ_STREAM_CHUNK plus this, so clients must not use a larger FASPQ_STREAM_CHUNK than workers."""
READ_BUDGET = 4 << 20
"""Bytes of entries one stream read measures at most (beyond them, the one that crossed it), oversize ones
included."""
OVERSIZE = b"oversize"

log = logging.getLogger(__name__)

_HASH = Script("""
local out = {}
for i = 2, #ARGV do
  local size = redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if size > tonumber(ARGV[1]) then
    out[i - 1] = size
  else
    out[i - 1] = redis.call('HGET', KEYS[1], ARGV[i])
  end
end
return out
""")

_STREAM = Script("""
local cmd, stop = 'XRANGE', '+'
if ARGV[2] == '1' then cmd, stop = 'XREVRANGE', '-' end
local cursor, count, limit, budget = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out, total = {}, 0
while #out < count and total < budget do
  local got = redis.call(cmd, KEYS[1], cursor, stop, 'COUNT', 1)
  if #got == 0 then break end
  local id, fields, size = got[1][1], got[1][2], 0
  for i = 1, #fields do size = size + #fields[i] end
  if size > limit then
    fields = {'oversize', tostring(size)}
  end
  out[#out + 1] = {id, fields}
  total = total + size
  cursor = '(' .. id
end
return out
""")


def hash_fields(client: redis.Redis, key: str, names: Sequence[str], limit: int) -> dict[str, bytes]:
    """The fields ``names`` of hash ``key`` that exist and hold at most ``limit`` bytes; a longer one is left
    out, logged."""
    values = _HASH(client, [key], [limit, *names])
    out = {}
    for name, value in zip(names, cast(list[object], values)):
        if isinstance(value, int):
            log.warning("%s: field %s of %d bytes, over the limit of %d, was not read", key, name, value, limit)
        elif isinstance(value, bytes):
            out[name] = value
    return out


def hash_has(client: redis.Redis, key: str, name: str) -> bool:
    """Whether hash ``key`` has a field ``name``, none of its bytes sent (the README's client ACL has no HEXISTS)."""
    return cast(list[object], _HASH(client, [key], [0, name]))[0] is not None


def stream_range(
    client: redis.Redis, key: str, after: str | None, count: int, limit: int, reverse: bool = False
) -> list[tuple[str, dict[bytes, bytes]]]:
    """Up to ``count`` entries of stream ``key`` after id ``after`` (from the start, or with ``reverse`` from the
    end backwards, when None), no more than about READ_BUDGET bytes, oversize ones included: at least one if there
    is any, but maybe fewer than there are, so read on from the last id returned. An entry over ``limit`` bytes
    comes as ``{b"oversize": size}`` (see :func:`oversize`)."""
    start = ("+" if reverse else "-") if after is None else f"({after}"
    reply = _STREAM(client, [key], [start, int(reverse), count, limit, READ_BUDGET])
    pairs = cast(list[tuple[bytes, list[bytes]]], reply)
    return stream_entries([(entry_id, dict(zip(fields[::2], fields[1::2]))) for entry_id, fields in pairs])


def stream_has(client: redis.Redis, key: str, entry_id: str) -> bool:
    """Whether stream ``key`` holds entry ``entry_id``, none of its bytes sent (a limit of 0: a stub at most): a
    client asks this of its own control entry after a failover, and an entry planted at that id may be huge."""
    ms, seq = (int(part) for part in entry_id.split("-"))
    before = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{2**64 - 1}"
    got = stream_range(client, key, before, 1, 0)
    return bool(got) and got[0][0] == entry_id


def entry_bytes(fields: dict[bytes, bytes]) -> int:
    """The bytes a reader holds of an entry :func:`stream_range` returned (of a stub: its own few)."""
    return sum(len(name) + len(value) for name, value in fields.items())


def oversize(fields: dict[bytes, bytes]) -> int | None:
    """The size of an entry :func:`stream_range` did not read, else None (a writer's look-alike is an entry like
    any other: its MAC does not verify)."""
    size = fields.get(OVERSIZE, b"")
    return int(size) if len(fields) == 1 and size.isdigit() and len(size) < 20 else None
