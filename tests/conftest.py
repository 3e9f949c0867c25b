"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import settings
from servers import LoopbackServer, PrometheusServer, Responder, backfill, scrape_config

# No time limit per example: Hypothesis' default (200 ms) can fail a property on a busy
# machine, and how fast code runs is measured in bench/, never asserted in tests.
settings.register_profile("trimtab", deadline=None)
settings.load_profile("trimtab")


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


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The path of ``prometheus`` (Debian package ``prometheus``)."""
    path = shutil.which("prometheus")
    if path is None:
        missing("prometheus (Debian package prometheus)")
    assert path is not None
    return str(Path(path).resolve())


@pytest.fixture
def prometheus_server(
    prometheus_binary: str, promtool: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], PrometheusServer]]:
    """Start Prometheus over OpenMetrics text backfilled before it starts.

    ``prometheus_server(text)`` returns the running :class:`~servers.PrometheusServer`
    (``.url``, ``.stop()``, ``.start()`` again on the same storage and port). Query the data at
    its own timestamps (it may lie in the past). Every server is stopped at teardown.
    """
    started: list[PrometheusServer] = []

    def start(openmetrics: str) -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        server = PrometheusServer(prometheus_binary, workdir)
        backfill(str(Path(promtool).resolve()), openmetrics, server.storage)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def prometheus_scraping(
    prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PrometheusServer]]:
    """Start Prometheus scraping live exporters every second; returns once all targets are up.

    ``prometheus_scraping(["http://127.0.0.1:PORT/metrics"])``, or a mapping of URL to extra
    target labels; keyword ``interval`` (default ``"1s"``) and ``job``.
    """
    started: list[PrometheusServer] = []

    def start(
        targets: Sequence[str] | Mapping[str, Mapping[str, str]],
        *,
        interval: str = "1s",
        job: str = "trimtab-test",
    ) -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        config = scrape_config(targets, interval=interval, job=job)
        server = PrometheusServer(prometheus_binary, workdir, config=config)
        started.append(server)
        server.start()
        server.wait_for_targets(len(targets))
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def loopback_server() -> Iterator[Callable[..., LoopbackServer]]:
    """Start a recording HTTP server on 127.0.0.1: ``loopback_server(responder, tls=None)``."""
    started: list[LoopbackServer] = []

    def start(responder: Responder, tls: tuple[Path, Path] | None = None) -> LoopbackServer:
        server = LoopbackServer(responder, tls).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def table_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first slot of every read of a batch's table (``batching._Table.read``), as they
    happen: how often a backend's measurements are made."""
    from trimtab.slo import batching

    reads: list[int] = []
    read = batching._Table.read

    def counted(table: batching._Table, first: int, *args: object) -> object:
        reads.append(first)
        return read(table, first, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(batching._Table, "read", counted)
    return reads
