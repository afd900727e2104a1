"""``-e PATH``: a pre/post-processing program run at session start, after each file, and at session end.

It learns what happened from its environment (TYPE=Session|File, STARTSTOP=Start|Stop,
SESSIONID, DIRECTION, USER, HOST, FILE, SIZE, STATUS=OK|ERROR, ERRCODE, ERRSTR, ...), in
the spirit of Aspera's prepost scripts. Secrets (every ASPERA_SCP_* variable) are taken out
of that environment. Runs are sequential and off the event loop; a failing program is
reported on stderr and does not change the transfer's outcome.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

TIMEOUT = 60.0


class PrePost:
    def __init__(self, program: str, common: dict[str, str]) -> None:
        self._program = program
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("ASPERA_SCP_")}
        self._env.update(common)
        self._queue: asyncio.Queue = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    async def session_start(self, session_id: str) -> None:
        self._env["SESSIONID"] = session_id
        await asyncio.to_thread(self._run, {"TYPE": "Session", "STARTSTOP": "Start"})
        self._worker = asyncio.create_task(self._drain())

    def emit(self, event: str, fields: dict) -> None:
        """Event sink: a finished or failed file queues a File/Stop run."""
        if event == "STOP":
            self._queue.put_nowait(
                {
                    "TYPE": "File",
                    "STARTSTOP": "Stop",
                    "STATUS": "OK",
                    "FILE": fields["File"],
                    "SIZE": str(fields["Size"]),
                }
            )
        elif event == "FILEERROR":
            self._queue.put_nowait(
                {
                    "TYPE": "File",
                    "STARTSTOP": "Stop",
                    "STATUS": "ERROR",
                    "FILE": fields["File"],
                    "ERRCODE": str(fields["Code"]),
                    "ERRSTR": fields["Description"],
                }
            )

    async def session_stop(self, ok: bool, code: int = 0, description: str = "", totals: dict | None = None) -> None:
        """After the session: the queued file runs, then Session/Stop."""
        self._queue.put_nowait(None)
        if self._worker is not None:
            await self._worker
        env = {"TYPE": "Session", "STARTSTOP": "Stop", "STATUS": "OK" if ok else "ERROR"}
        if not ok:
            env.update(ERRCODE=str(code), ERRSTR=description)
        for name, value in (totals or {}).items():
            env[name.upper()] = str(value)
        await asyncio.to_thread(self._run, env)

    async def _drain(self) -> None:
        while (env := await self._queue.get()) is not None:
            await asyncio.to_thread(self._run, env)

    def _run(self, extra: dict[str, str]) -> None:
        try:
            done = subprocess.run(
                [self._program],
                env={**self._env, **extra},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                timeout=TIMEOUT,
            )
            if done.returncode:
                print(
                    f"fasp-ascp: -e {self._program} exited {done.returncode} ({extra['TYPE']} {extra['STARTSTOP']})",
                    file=sys.stderr,
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"fasp-ascp: -e {self._program}: {exc}", file=sys.stderr)
