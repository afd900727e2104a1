"""Tests that need root skip, with the reason, when not run as root.

Root is needed for network namespaces (ip netns, nft), OpenSSH sshd logging in as root, mount, chown to
another owner and setpriv's bounding set. The resources that need it call ``require_root`` where they start
(a fixture-level skip); single tests that need it carry ``needs_root(why)``.
"""

from __future__ import annotations

import os

import pytest


def is_root() -> bool:
    return os.geteuid() == 0


def needs_root(why: str) -> pytest.MarkDecorator:
    """Skip the marked test unless root: ``why`` says what it does that only root may."""
    return pytest.mark.skipif(not is_root(), reason=f"needs root: {why}")


def require_root(why: str) -> None:
    """Skip the running test (from a fixture or context manager) unless root."""
    if not is_root():
        pytest.skip(f"needs root: {why}")
