"""Stream upload (management PUT / WRITE / CLOSE): bytes of unknown total length, landing in order.

WRITE payloads are gathered into segments; each segment is announced to the
receiver (``chunk``), which registers it and answers ``piece``, and then goes
through the transport like any piece of a file. A bounded number of segments
may be in flight: beyond that, :meth:`OutStream.write` waits, which stops the
management reader and pushes back on the manager over TCP. Nothing is dropped.

With ``--file-crypt=encrypt`` the stream is sealed as it comes (:class:`~fasp.files.envelope.StreamSealer`)
and lands as ``DEST.aspera-env``, an envelope a decrypting download opens like any other: the segments
carry envelope bytes, never the plain ones.
"""

from __future__ import annotations

import asyncio

from fasp.errors import ProtocolError
from fasp.files.envelope import SUFFIX, StreamSealer
from fasp.session.messages import Begin, Chunk, Eof, FileDone, FileError, Offer, Piece
from fasp.session.sending import SendingRole
from fasp.session.tally import Tally
from faspmanager.codes import EngineError, ErrorCode

SEGMENT = 1 << 20
SEGMENTS_IN_FLIGHT = 16


class OutStream:
    def __init__(self, sender: SendingRole, tally: Tally, arg: int, dest: str, file_pass: str | None = None) -> None:
        self._sender = sender
        self._tally = tally
        self._arg = arg
        self._dest = dest
        self._sealer = None if file_pass is None else StreamSealer(file_pass)
        self._fid, self._box = sender.new_file()
        self._buffer = bytearray()
        self._offset = 0
        self._waiting: dict[int, bytes] = {}  # announced segments by start offset
        self._sends: set[asyncio.Task] = set()
        self._room = asyncio.Semaphore(SEGMENTS_IN_FLIGHT)
        self._done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pump: asyncio.Task | None = None

    async def open(self) -> None:
        await self._sender.channel.send(
            Offer(
                fid=self._fid,
                arg=self._arg,
                rel=self._dest if self._sealer is None else self._dest + SUFFIX,
                lone=False,
                size=None,
                mtime=0.0,
                mode=0o100644,
                sealed=self._sealer is not None,
            )
        )
        self._pump = asyncio.create_task(self._replies())

    async def write(self, data: bytes) -> None:
        self._check()
        self._buffer += data if self._sealer is None else self._sealer.feed(data)
        while len(self._buffer) >= SEGMENT:
            await self._flush(SEGMENT)

    async def close(self) -> str | None:
        """Send what is buffered, end the file, wait for the receiver's confirmation; the checksum."""
        self._check()
        if self._sealer is not None:
            self._buffer += self._sealer.close()
        if self._buffer:
            await self._flush(len(self._buffer))
        await self._sender.channel.send(Eof(fid=self._fid, size=self._offset))
        try:
            return await self._done
        finally:
            self._sender.forget(self._fid)

    async def abort(self) -> None:
        for task in [self._pump, *self._sends]:
            if task is not None:
                task.cancel()
        self._sender.forget(self._fid)

    def _check(self) -> None:
        if self._done.done():
            self._done.result()  # raises the stream's failure

    async def _flush(self, length: int) -> None:
        await self._room.acquire()
        self._check()
        segment = bytes(self._buffer[:length])
        del self._buffer[:length]
        start = self._offset
        self._offset += length
        self._waiting[start] = segment
        await self._sender.channel.send(Chunk(fid=self._fid, start=start, end=start + length))

    async def _replies(self) -> None:
        key = self._dest
        try:
            while True:
                match await self._box.get():
                    case Begin():
                        self._tally.started(key, self._arg, 0, 0)
                    case Piece(pid=pid, start=start, end=end):
                        segment = self._waiting.pop(start, None)
                        if segment is None or end - start != len(segment):
                            raise ProtocolError(f"piece for an unknown stream segment at {start}")
                        task = asyncio.create_task(self._send(pid, segment, start, end))
                        self._sends.add(task)
                        task.add_done_callback(self._sent)
                    case FileDone(written=written, checksum=checksum):
                        if self._sends:
                            await asyncio.gather(*self._sends)
                        self._tally.stopped(key, self._arg, self._offset, written, checksum)
                        self._done.set_result(checksum)
                        return
                    case FileError(code=code, desc=desc):
                        self._tally.failed(key, self._arg, code, desc)
                        raise EngineError(code, desc)
                    case other:
                        raise ProtocolError(f"unexpected {type(other).__name__} in a stream upload")
        except BaseException as exc:
            if not self._done.done():
                self._done.set_exception(
                    exc if isinstance(exc, Exception) else EngineError(ErrorCode.USER_CANCEL, "stream cancelled")
                )
            raise

    async def _send(self, pid: int, segment: bytes, start: int, end: int) -> None:
        await self._sender.transport.send(pid, segment, start, end, self._tally.progress)

    def _sent(self, task: asyncio.Task) -> None:
        self._sends.discard(task)
        self._room.release()
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not self._done.done():
            self._done.set_exception(exc)
