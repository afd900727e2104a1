"""Whole transfers between two real Transports over loopback UDP."""
from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from .conftest import aio, pair, sha256_file, transfer

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("size", [0, 1, 10 << 20])
@pytest.mark.parametrize("key", [b"k" * 16, None], ids=["aes", "clear"])
@aio
async def test_file_arrives_intact(tmp_path, size, key):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(size))
    async with pair(key=key) as (client, server):
        await transfer(client, server, 7, src, dst)
        assert client.stats()["bytes_sent"] >= size
        assert server.stats()["bytes_received"] == size
    assert dst.stat().st_size == size
    assert sha256_file(dst) == sha256_file(src)
