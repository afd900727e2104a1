"""``fasp-ascp``: our ascp-compatible transfer program (client, or ``--server`` for the remote end).

Exit status: 0 after DONE; after ERROR the ascp error code (8 for a bad command
line), so scripts without a management port still learn why.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from fasp.files.logdir import log_file, log_to_stderr
from fasp.options.flags import Config, parse, tokenize
from fasp.options.helptext import USAGE, help_text
from faspmanager.codes import EngineError, ErrorCode
from faspmanager.envblock import scrub_initial_environment
from faspmanager.forkserver import exit_now
from faspmanager.mgmt import SECRET_ENV

if TYPE_CHECKING:
    from fasp.session.mgmtport import Management
    from fasp.session.tally import Emit


def _mgmt_port_of(argv: list[str]) -> int | None:
    """-M from a command line too broken to parse: the manager still deserves an ERROR event."""
    for i, arg in enumerate(argv):
        raw = argv[i + 1] if arg == "-M" and i + 1 < len(argv) else arg[2:] if arg.startswith("-M") else None
        if raw is not None and raw.isdigit():
            return int(raw)
    return None


async def _report_only(port: int, error: EngineError) -> None:
    from fasp.session.mgmtport import Management

    try:
        management = await Management.connect(port, timeout=5.0)
    except EngineError:
        return
    management.emit("ERROR", {"Code": error.code, "Description": error.description})
    await management.close()


def _both(first: Emit, second: Emit) -> Emit:
    def both(event: str, fields: dict[str, Any]) -> None:
        first(event, fields)
        second(event, fields)

    return both


def _tagged(emit: Emit, tags: dict[str, Any]) -> Emit:
    """--tags: every event but STATS carries ``Tags`` (compact JSON), the field ascli's management parser reads."""
    text = json.dumps(tags, separators=(",", ":"), ensure_ascii=False)

    def tagged(event: str, fields: dict[str, Any]) -> None:
        emit(event, fields if event == "STATS" else {**fields, "Tags": text})

    return tagged


def _event_log(log_dir: str) -> Emit:
    """-L DIR: every event but STATS also goes to DIR/fasp-ascp.log (events never carry secrets); 8 if DIR
    cannot hold it."""
    handler = log_file(log_dir, "fasp-ascp.log", "%(asctime)s %(message)s", what=f"-L {log_dir}", code=ErrorCode.USAGE)
    log = logging.getLogger("fasp.events")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def record(event: str, fields: dict[str, Any]) -> None:
        if event != "STATS":
            log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items() if v is not None))

    return record


async def _management(port: int) -> Management:
    from fasp.session.mgmtport import Management

    return await Management.connect(port)


async def run_client(cfg: Config) -> int:
    """One client session; the management port (-M) and the -e program's hooks are imported only when the
    command line asks for them, to keep a plain transfer's start short."""
    from fasp.cli.progressline import ProgressLine
    from fasp.session.client import ClientSession

    gc.freeze()  # the modules just loaded stay out of the transfer's collections (10,000 files make many)
    try:
        record = _event_log(cfg.local_log_dir) if cfg.local_log_dir else None
    except EngineError as exc:  # before the management port is open: told there as a command line's mistake
        print(f"fasp-ascp: error {exc.code}: {exc.description}", file=sys.stderr)
        if cfg.mgmt_port:
            await _report_only(cfg.mgmt_port, exc)
        return exc.code
    try:
        management = await _management(cfg.mgmt_port) if cfg.mgmt_port else None
    except EngineError as exc:  # nobody to tell but stderr
        print(f"fasp-ascp: error {exc.code}: {exc.description}", file=sys.stderr)
        return exc.code
    show: Emit = management.emit if management else ProgressLine(cfg.quiet).emit
    if cfg.tags is not None:
        show = _tagged(show, cfg.tags)
    hooks = None
    if cfg.pre_post_command:
        remote = cfg.remote
        if remote is None:  # parse() gives every client command line one
            raise EngineError(ErrorCode.USAGE, "a client session needs a remote host")
        from fasp.session.prepost import PrePost

        hooks = PrePost(cfg.pre_post_command, {"DIRECTION": cfg.direction, "USER": remote.user, "HOST": remote.host})
        show = _both(show, hooks.emit)
    session = ClientSession(cfg, show if record is None else _both(show, record))
    interrupted = EngineError(ErrorCode.USER_CANCEL, "interrupted by signal")
    # the -e program's Session/Start run may take a minute: a signal meanwhile ends the session as one later does
    starting = asyncio.ensure_future(hooks.session_start(session.session_id) if hooks else asyncio.sleep(0))

    def on_signal() -> None:
        session.fail(interrupted)
        starting.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal)
    manager_gone = lambda reason: session.fail(EngineError(ErrorCode.ASCP, reason))  # noqa: E731
    reader = asyncio.create_task(management.serve(session.command, manager_gone)) if management else None
    try:
        try:
            await starting
        except asyncio.CancelledError:
            raise interrupted from None
        await session.run()
        if hooks is not None:
            await hooks.session_stop(True, totals=session.tally.done_fields())
        return 0
    except EngineError as exc:
        print(f"fasp-ascp: error {exc.code}: {exc.description}", file=sys.stderr)
        if hooks is not None:
            await hooks.session_stop(False, exc.code, exc.description, session.tally.done_fields())
        return exc.code or 1
    finally:
        if reader is not None:
            reader.cancel()
        if management is not None:
            await management.close()


def _forget_secrets() -> None:
    """Once parsed into the config, the ASPERA_SCP_* secrets leave the environment, and with the management
    secret (report.py takes it from os.environ) their bytes leave /proc/PID/environ: an ``-e`` program runs
    as our user and can read it."""
    for name in [n for n in os.environ if n.startswith("ASPERA_SCP_")]:
        del os.environ[name]
    scrub_initial_environment(lambda name: name.startswith("ASPERA_SCP_") or name == SECRET_ENV)


def script() -> NoReturn:
    """The ``fasp-ascp`` program (the console script, ``python -m fasp``): :func:`main`, then out at once, as
    the engines the warm fork server forks end (a one-file transfer: 310 ms in all before, 260 after)."""
    exit_now(main())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        flags, _ = tokenize(argv)
        if flags.get("help"):
            print(help_text())
            return 0
        if flags.get("version"):
            from importlib.metadata import PackageNotFoundError, version

            try:
                print(f"fasp-ascp {version('openfasp')}")
            except PackageNotFoundError:
                print("fasp-ascp (development)")
            return 0
        cfg = parse(argv)
        _forget_secrets()
    except EngineError as exc:
        print(
            f"fasp-ascp: error {exc.code}: {exc.description}\n{USAGE}\n(fasp-ascp --help lists every option)",
            file=sys.stderr,
        )
        port = _mgmt_port_of(argv)
        if port is not None:
            asyncio.run(_report_only(port, exc))
        return exc.code
    for note in cfg.notes:
        print(f"fasp-ascp: note: {note}", file=sys.stderr)
    if cfg.server:
        from fasp.session.server import serve

        log_to_stderr("fasp-server-mode: %(message)s")
        return asyncio.run(serve(cfg))
    if cfg.debug:  # -D: what the engine does, on stderr; -DD and more: everything
        log_to_stderr("fasp-ascp: %(name)s: %(message)s", logging.INFO if cfg.debug == 1 else logging.DEBUG)
    return asyncio.run(run_client(cfg))
