"""Shared by the known-lens tests: their HTTP servers run on loopback."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """requests honours *_PROXY variables: keep loopback traffic off any proxy of the test host."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
