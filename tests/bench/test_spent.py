"""bench.run.Bench: the engine runs compiled; clear_dest: a destination of many files is set aside, not deleted
just before the next run.

On an ext4 without a journal the inode allocator skips inodes freed in the last minute, reading each one's
inode block: a run that created 10,000 files just after 10,000 were deleted paid about 0.9 ms of kernel CPU
per file, whichever tool it was. The bench deletes them all when it ends instead."""

from __future__ import annotations

from importlib.util import cache_from_source
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench.peers import REPO
from bench.run import ENGINE_PACKAGES, FULL, SPENT_FILES, Bench


def test_many_files_are_set_aside_and_deleted_at_the_end(tmp_path):
    console = Console(quiet=True)
    with Progress(console=console) as progress:
        bench = Bench(FULL, tmp_path, console, progress)
        bench.clear_dest()
        for i in range(SPENT_FILES):
            (bench.dest / f"f{i}").write_bytes(b"x")
        bench.clear_dest()
        assert bench.dest.is_dir() and not any(bench.dest.iterdir())
        (aside,) = bench.spent.iterdir()
        assert len(list(aside.iterdir())) == SPENT_FILES  # nothing deleted yet
        (bench.dest / "big.bin").write_bytes(b"x" * 4096)  # a few files go at once
        bench.clear_dest()
        assert not any(bench.dest.iterdir()) and len(list(bench.spent.iterdir())) == 1
        bench.close()
        assert not bench.dest.exists() and not bench.spent.exists()


def test_the_engine_runs_compiled(tmp_path):
    """The bench compiles the engine's packages before its first run (PYTHONDONTWRITEBYTECODE or not): an engine
    process must not spend its start compiling, as an installed one would not."""
    sources = [path for package in ENGINE_PACKAGES for path in Path(REPO, package).rglob("*.py")]
    for path in sources:
        Path(cache_from_source(str(path))).unlink(missing_ok=True)
    console = Console(quiet=True)
    with Progress(console=console) as progress:
        Bench(FULL, tmp_path, console, progress).close()
    assert sources and all(Path(cache_from_source(str(path))).is_file() for path in sources)
