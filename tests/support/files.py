"""Test files and byte checks: random content, sha256, and "the same file/tree arrived" assertions.

Every transfer test checks bytes (size and sha256) through these, so a short read or a stray extra file is caught
the same way everywhere.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256(path: Path | str) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (test files go up to hundreds of MB)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def random_file(path: Path, size: int) -> Path:
    """``size`` random bytes at ``path`` (parents made); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(left, 1 << 20)
            handle.write(os.urandom(n))
            left -= n
    return path


def assert_same_file(a: Path, b: Path, digest_of_a: str | None = None) -> None:
    """``b`` has ``a``'s size and sha256 (pass ``digest_of_a`` to hash a big source only once)."""
    assert b.is_file(), f"{b} missing"
    assert a.stat().st_size == b.stat().st_size, f"{b}: size {b.stat().st_size} != {a.stat().st_size}"
    assert (digest_of_a or sha256(a)) == sha256(b), f"{b}: content differs"


def assert_same_tree(a: Path, b: Path) -> int:
    """Every file under ``a`` is under ``b`` with the same bytes, and nothing else is; the file count."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    dirs_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_dir())
    dirs_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_dir())
    assert dirs_a == dirs_b
    for rel in files_a:
        assert_same_file(a / rel, b / rel)
    return len(files_a)
