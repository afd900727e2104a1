"""The one interface the session layer moves file bytes through, whatever carries them: UDP
(:class:`fasp.datapath.udpchannel.Transport`) or the HTTP(S) fallback
(:class:`fasp.datapath.httpchannel.FallbackTransport`). Both implement it structurally; mypy checks them
against it where the session holds "the data channel"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fasp.datapath.datagram import Buffer
from fasp.datapath.rate import RateSettings


class DataChannel(Protocol):
    on_capacity: Callable[[int], None] | None
    """Called once with the path capacity (kbit/s) that percent mode measured, if set (never over TCP)."""

    @property
    def local_port(self) -> int: ...

    @property
    def datagram_size(self) -> int:
        """UDP payload bytes of one datagram now (-Z, or what path MTU discovery reached so far); 0 over
        HTTP, where TCP cuts the stream itself."""

    @property
    def rate_settings(self) -> RateSettings:
        """The settings in force (a channel taking over from another starts from them)."""

    def tune(
        self, *, read_size: int | None = None, write_size: int | None = None, retransmission_max: int | None = None
    ) -> None:
        """ascp's -g, -G and -X (0: the engine's choice; None: unchanged)."""

    async def send(
        self,
        file_id: int,
        source: int | Buffer,
        start: int,
        end: int,
        on_progress: Callable[[int], object] | None = None,
    ) -> None:
        """Bytes [start, end) of ``source`` (an fd, or a buffer of exactly those bytes) as ``file_id``;
        returns once the receiver has them all. ``on_progress(n)``: n more bytes the receiver acknowledged (all
        of them once it returns, whatever the channel could tell before). Raises EngineError."""

    async def receive(
        self,
        file_id: int,
        fd: int,
        start: int,
        end: int,
        on_progress: Callable[[int], object] | None = None,
        whole: bool = False,
    ) -> None:
        """Bytes [start, end) of ``file_id`` written into ``fd`` at their offsets (``whole``: with one write,
        never leaving a hole); returns once all are written. Raises EngineError."""

    def window_bytes(self) -> int:
        """Bytes the receiving side may have asked for (pieces registered and requested) and not yet received:
        what the path holds, with room. The receiving session keeps its requests within it."""

    def control_rtt(self, rtt: float) -> None:
        """A round trip (seconds) the session measured over its control channel: what :meth:`window_bytes`
        assumes until the data channel has measured its own."""

    def charge(self, nbytes: int) -> None:
        """``nbytes`` the session sent the peer over its control channel, as the link carries them: they share the
        path, so the rate counts them."""

    def set_rate(self, rate: RateSettings) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    async def close(self) -> None:
        """Idempotent."""
