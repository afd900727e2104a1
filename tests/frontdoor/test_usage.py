"""The usage pipe between a server engine and fasp-server, both real ends over a real pipe: totals become counter
increments once, and whatever else comes down the pipe (garbage, a lie about the direction, an endless line)
counts nothing."""

from __future__ import annotations

import asyncio
import os

from prometheus_client import REGISTRY

from fasp.server.metrics import SessionMeter
from fasp.session.usage import USAGE_FD_ENV, UsageReport


def _value(name: str, user: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"user": user, **labels}) or 0.0


def test_reports_carry_totals_counted_once(monkeypatch):
    async def session() -> None:
        async with SessionMeter("usage-a") as meter:
            assert _value("fasp_server_sessions_running", "usage-a") == 1
            monkeypatch.setenv(USAGE_FD_ENV, str(os.dup(meter.fds[0])))  # the engine's copy of the write end
            report = UsageReport.from_environment()
            assert report is not None and USAGE_FD_ENV not in os.environ  # no -e program inherits it
            moved = [0]
            report.follow("in", lambda: moved[0])
            for total in (1000, 5000, 5000, 12_345):
                moved[0] = total
                report._report()
            report.close()  # the final report (12345 again) and the engine's end of the pipe closed

    asyncio.run(session())
    assert _value("fasp_server_bytes_total", "usage-a", direction="in") == 12_345
    assert _value("fasp_server_bytes_total", "usage-a", direction="out") == 0
    assert (
        _value("fasp_server_sessions_running", "usage-a") == 0 and _value("fasp_server_sessions_total", "usage-a") == 1
    )


def test_malformed_reports_count_nothing():
    async def session() -> None:
        async with SessionMeter("usage-b") as meter:
            fd = meter.fds[0]
            for line in (
                b"not json\n",
                b"[1, 2]\n",
                b'{"direction": "sideways", "bytes": 10}\n',
                b'{"direction": "out", "bytes": "10"}\n',
                b'{"direction": "out", "bytes": true}\n',
                b'{"direction": "out", "bytes": 700}\n',
                b'{"direction": "out", "bytes": 300}\n',  # a total going back: nothing
                b"x" * 1000 + b"\n",  # longer than a report can be: reading ends here
                b'{"direction": "out", "bytes": 900}\n',
            ):
                os.write(fd, line)

    asyncio.run(session())
    assert _value("fasp_server_bytes_total", "usage-b", direction="out") == 700


def test_no_pipe_no_report(monkeypatch):
    monkeypatch.delenv(USAGE_FD_ENV, raising=False)
    assert UsageReport.from_environment() is None
    monkeypatch.setenv(USAGE_FD_ENV, "not-a-number")
    assert UsageReport.from_environment() is None
