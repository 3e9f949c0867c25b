"""Real proxies for the traffic adapters' tests: one harness per proxy, behind one interface.

A harness starts a real proxy (Envoy from its wheel, NGINX and HAProxy from Debian) in a temp
directory on free loopback ports, in front of two real HTTP backends (:class:`Backends`, which
answer with their own name), and hands out the trimtab adapter that steers it. The contract
tests (``tests/integration/test_adapter_contract.py``) and the under-load tests
(``test_shifts_under_load.py``) are parametrised over :data:`HARNESSES`; a proxy joins them by
adding its harness class there.

A harness starts with all traffic on ``v1`` (``{"v1": 100, "v2": 0}``).
"""

from __future__ import annotations

import http.client
import importlib
import inspect
import pkgutil
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from trimtab.slo.ports import TrafficAdapter
from trimtab.slo.traffic import TrafficError

__all__ = ["HARNESSES", "START", "Backends", "ProxyHarness", "connect", "count_split"]

BACKENDS = ("v1", "v2")
START = {"v1": 100, "v2": 0}


class Backends:
    """Two HTTP/1.1 servers on 127.0.0.1 answering every GET with their name (``v1``, ``v2``)."""

    def __init__(self, names: tuple[str, ...] = BACKENDS) -> None:
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []
        for name in names:

            class Handler(BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                disable_nagle_algorithm = True  # slow behind keep-alive otherwise
                body = name.encode()

                def do_GET(self) -> None:
                    body = self.body
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, format: str, *args: Any) -> None:
                    pass

            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            self.servers[name] = server

    def address(self, name: str) -> str:
        """``host:port`` of backend ``name``."""
        host, port = self.servers[name].server_address[:2]
        return f"{host!s}:{port}"

    def port(self, name: str) -> int:
        return int(self.servers[name].server_address[1])

    def start(self) -> Backends:
        for server in self.servers.values():
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(10)


def connect(url: str, timeout: float = 5.0) -> http.client.HTTPConnection:
    """A new (not yet opened) HTTP connection to ``url``'s host and port."""
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


def count_split(url: str, requests: int, *, timeout: float = 5.0) -> dict[str, int]:
    """Send ``requests`` GETs to ``url``, each on a new connection; which backend answered."""
    seen: Counter[str] = Counter()
    for _ in range(requests):
        connection = connect(url, timeout)
        try:
            connection.request("GET", urlsplit(url).path or "/", headers={"Connection": "close"})
            response = connection.getresponse()
            body = response.read().decode()
            seen[body if response.status == 200 else f"status {response.status}"] += 1
        finally:
            connection.close()
    return {name: seen.get(name, 0) for name in BACKENDS} | {
        k: v for k, v in seen.items() if k not in BACKENDS
    }


class ProxyHarness(ABC):
    """A real proxy in front of :class:`Backends`, steered by a trimtab adapter.

    Subclasses set :attr:`name` (the route block's YAML name), :attr:`exact_split` (True when
    the proxy's balancing is deterministic, so a served split can be compared exactly) and
    :attr:`failures` (the proxy failures :meth:`inject` can cause, by name).
    """

    name: ClassVar[str]
    exact_split: ClassVar[bool] = False
    failures: ClassVar[tuple[str, ...]] = ()

    def __init__(self, workdir: Path, backends: Backends) -> None:
        self.workdir = workdir
        self.backends = backends

    @classmethod
    @abstractmethod
    def binary(cls) -> str | None:
        """The proxy's executable, or ``None`` when it is not installed here."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where clients send requests through the proxy: ``http://127.0.0.1:PORT/``."""

    @abstractmethod
    def start(self) -> None:
        """Start the proxy (again, after :meth:`stop`, on the same ports and files); returns
        once it serves. The first start serves :data:`START`."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the proxy by its own PID and wait for it to exit."""

    @abstractmethod
    def adapter(self) -> TrafficAdapter:
        """A new trimtab adapter over this proxy (as ``trimtab run`` would build it)."""

    @abstractmethod
    def native_weights(self) -> Mapping[str, int]:
        """The weights as the proxy itself holds them, on its own scale, by backend — read
        without the adapter (admin API, config file, runtime API)."""

    @abstractmethod
    def inject(self, failure: str) -> type[TrafficError]:
        """Make the next weight change fail at the proxy in the way ``failure`` names; return
        the error type the adapter must raise."""

    @abstractmethod
    def repair(self, failure: str) -> None:
        """Undo :meth:`inject` (restarting the proxy if it was stopped)."""


def _harnesses() -> dict[str, type[ProxyHarness]]:
    """Every :class:`ProxyHarness` defined in this package's modules, by name."""
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}")
    found: dict[str, type[ProxyHarness]] = {}
    pending = list(ProxyHarness.__subclasses__())
    while pending:
        harness = pending.pop()
        pending.extend(harness.__subclasses__())
        if not inspect.isabstract(harness):
            found[harness.name] = harness
    return dict(sorted(found.items()))


HARNESSES: dict[str, type[ProxyHarness]] = _harnesses()
"""Every proxy harness, by adapter name: each module of this package that defines one."""
