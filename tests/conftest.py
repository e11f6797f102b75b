"""Test-wide settings."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """The base-checkpoint sha256 cache (cosmos_predict2.io.cached_file_sha256) lives under XDG_CACHE_HOME: keep the
    tests' entries out of the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg_cache"))
