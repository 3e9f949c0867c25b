"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil

import pytest


def require_servers() -> bool:
    """True in CI (``TRIMTAB_REQUIRE_SERVERS=1``): a missing server fails instead of skipping."""
    return os.environ.get("TRIMTAB_REQUIRE_SERVERS") == "1"


def missing(what: str) -> None:
    """Fail (CI) or skip (elsewhere) a test that needs something not installed here."""
    message = f"{what} is not installed"
    if require_servers():
        pytest.fail(f"{message} and TRIMTAB_REQUIRE_SERVERS=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of ``promtool`` (Debian package ``prometheus``)."""
    path = shutil.which("promtool")
    if path is None:
        missing("promtool (Debian package prometheus)")
    assert path is not None
    return path
