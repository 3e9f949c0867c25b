"""NGINX metrics per backend from its access log, for the ``nginx`` traffic adapter's routes.

Open-source NGINX has no per-upstream statistics API (``stub_status`` counts
connections for the whole server; the ``api`` and ``status`` modules are NGINX Plus only).
trimtab reads per-backend figures from the access log instead: :func:`log_format` gives a
``log_format`` directive writing one JSON object per request with ``$proxy_host`` (the
upstream), ``$upstream_addr``, ``$upstream_status``, ``$upstream_response_time``, ``$status``
and ``$request_time``; :class:`AccessLogExporter` tails that log (following rotation and
truncation), maps each upstream address to its backend through the route's ``servers``, and keeps
Prometheus metrics labelled ``upstream`` and ``backend``:

- ``nginx_upstream_responses_total{upstream, backend, code}`` — one per upstream attempt (a
  retried request counts once for each server tried, each with its own status, so a failing
  backend is blamed even when NGINX retried elsewhere);
- ``nginx_upstream_response_duration_seconds{upstream, backend}`` — histogram of
  ``$upstream_response_time`` per attempt (a refused connection counts with its near-zero
  time, and its 502 in the counter above);
- ``nginx_access_log_lines_skipped_total{reason}`` — lines it could not attribute.

:meth:`AccessLogExporter.serve` exposes them on a loopback port for Prometheus or trimtab's own
scraper; an SLO then reads e.g. ``nginx_upstream_responses_total{upstream="checkout",
code=~"5.."}`` with ``backendLabel: backend``. Backends' own metrics remain the better source
where they exist; the log sees what NGINX saw (connect errors and timeouts included).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from trimtab.slo.names import check_backend, check_host_port, check_proxy_name
from trimtab.slo.routes import NginxRoute

__all__ = ["LOG_FIELDS", "AccessLogExporter", "log_format"]

log = logging.getLogger(__name__)


LOG_FIELDS = (
    "proxy_host",
    "upstream_addr",
    "upstream_status",
    "upstream_response_time",
    "status",
    "request_time",
)
_FORMAT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_LINE = 64 * 1024  # an access-log line longer than this is not one the format writes


def log_format(name: str = "trimtab_upstream") -> str:
    """The ``log_format`` directive (for ``http {}``) that :class:`AccessLogExporter` reads.

    Use it with ``access_log PATH trimtab_upstream;`` where NGINX proxies to trimtab's upstream.
    One JSON object per request (``escape=json``); every value is a string.
    """
    if not _FORMAT_NAME.fullmatch(name):
        raise ValueError(f"invalid log_format name {name!r}: letters, digits and '_'")
    fields = ",".join(f'"{field}":"${field}"' for field in LOG_FIELDS)
    return f"log_format {name} escape=json '{{{fields}}}';"


def _attempts(value: str) -> list[str]:
    """``$upstream_*`` values per attempt: ', ' between servers, ' : ' between groups."""
    return [part.strip() for group in value.split(" : ") for part in group.split(", ")]


def _resolved(address: str) -> set[str]:
    """The ``ip:port`` forms NGINX logs for ``address`` (a hostname resolves here, once)."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") or re.fullmatch(r"[0-9.]+", host):
        return {address}
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as error:
        log.warning("cannot resolve %s for access-log attribution: %s", address, error)
        return {address}
    forms = {address}
    for family, _, _, _, sockaddr in found:
        ip = str(sockaddr[0])
        forms.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return forms


class _Tail:
    """New complete lines of a log file, following rotation (a new file at the path) and
    truncation. The first open starts at the end unless ``from_start``."""

    def __init__(self, path: Path, *, from_start: bool) -> None:
        self.path = path
        self._from_start = from_start
        self._stream: IO[bytes] | None = None
        self._partial = b""
        self.dropped = 0  # lines dropped for being too long

    def lines(self) -> list[bytes]:
        data = b""
        if self._stream is None and not self._open(start=self._from_start):
            return []
        self._from_start = True  # a file that appears later is read from its start
        assert self._stream is not None
        data += self._stream.read()
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None  # rotated away, not yet recreated: keep reading the old file
        if current is not None:
            mine = os.fstat(self._stream.fileno())
            if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                self._stream.close()
                if self._open(start=True):
                    data += self._stream.read()
            elif current.st_size < self._stream.tell():  # truncated (copytruncate)
                self._stream.seek(0)
                self._partial = b""
                data = self._stream.read()
        return self._split(data)

    def _open(self, *, start: bool) -> bool:
        try:
            self._stream = open(self.path, "rb")  # noqa: SIM115 (kept open across calls)
        except FileNotFoundError:
            self._stream = None
            return False
        if not start:
            self._stream.seek(0, os.SEEK_END)
        return True

    def _split(self, data: bytes) -> list[bytes]:
        *complete, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > _MAX_LINE:
            self._partial = b""
            self.dropped += 1
        return [line for line in complete if line.strip()]

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class AccessLogExporter:
    """Prometheus metrics per upstream and backend from an NGINX access log in
    :func:`log_format` (see the module docstring for the metrics).

    ``routes`` say which upstreams to count and which address belongs to which backend
    (hostnames are resolved once, here). ``registry`` defaults to a new one (not the global
    registry). :meth:`poll` reads what the log gained since the last call; :meth:`serve`
    polls every ``interval`` seconds in a thread and exposes ``/metrics`` over HTTP.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        routes: Iterable[NginxRoute],
        *,
        registry: CollectorRegistry | None = None,
        from_start: bool = False,
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> None:
        self.backends: dict[str, dict[str, str]] = {}
        for route in routes:
            upstream = check_proxy_name(route.upstream)
            owner = self.backends.setdefault(upstream, {})
            for backend, addresses in route.servers.items():
                for address in addresses:
                    for form in _resolved(check_host_port(address)):
                        owner[form] = check_backend(backend)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.responses = Counter(
            "nginx_upstream_responses",
            "Responses from upstream servers by backend and status code, one per attempt.",
            ["upstream", "backend", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "nginx_upstream_response_duration_seconds",
            "Upstream response time ($upstream_response_time) per attempt, by backend.",
            ["upstream", "backend"],
            registry=self.registry,
            buckets=tuple(buckets),
        )
        self.skipped = Counter(
            "nginx_access_log_lines_skipped",
            "Access-log lines (or attempts within one) not attributed to a backend, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._tail = _Tail(Path(path), from_start=from_start)
        self._lock = threading.Lock()

    def poll(self) -> int:
        """Count the lines the log gained since the last call; returns how many were read."""
        with self._lock:
            lines = self._tail.lines()
            dropped, self._tail.dropped = self._tail.dropped, 0
            if dropped:
                self.skipped.labels("line too long").inc(dropped)
            for line in lines:
                self.feed(line.decode("utf-8", errors="replace"))
            return len(lines)

    def feed(self, line: str) -> None:
        """Count one access-log line."""
        try:
            entry = json.loads(line)
            fields = {key: str(entry[key]) for key in LOG_FIELDS}
        except (ValueError, TypeError, KeyError):
            self.skipped.labels("not the trimtab log format").inc()
            return
        servers = self.backends.get(fields["proxy_host"])
        if servers is None:
            self.skipped.labels("other upstream" if fields["proxy_host"] else "not proxied").inc()
            return
        upstream = fields["proxy_host"]
        addresses = _attempts(fields["upstream_addr"])
        codes = _attempts(fields["upstream_status"])
        times = _attempts(fields["upstream_response_time"])
        if not (len(addresses) == len(codes) == len(times)):
            self.skipped.labels("upstream fields disagree").inc()
            return
        for address, code, seconds in zip(addresses, codes, times, strict=True):
            backend = servers.get(address)
            if backend is None:
                unknown = address == upstream  # NGINX logs the upstream's name: no live server
                self.skipped.labels("no live server" if unknown else "unknown address").inc()
                continue
            if not code.isdigit():
                self.skipped.labels("no upstream status").inc()
                continue
            self.responses.labels(upstream, backend, code).inc()
            try:
                value = float(seconds)
            except ValueError:
                continue  # no response time ('-'): the attempt got no response to time
            if math.isfinite(value) and value >= 0:
                self.duration.labels(upstream, backend).observe(value)

    def serve(
        self, address: str = "127.0.0.1", port: int = 0, interval: float = 1.0
    ) -> tuple[str, Callable[[], None]]:
        """Poll every ``interval`` seconds and serve ``/metrics``; returns (URL, stop)."""
        server, thread = start_http_server(port, addr=address, registry=self.registry)
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    self.poll()
                except OSError as error:  # the log is unreadable for now: try again later
                    log.warning("reading %s: %s", self._tail.path, error)
                stop.wait(interval)

        poller = threading.Thread(target=loop, name="nginx-access-log", daemon=True)
        poller.start()

        def close() -> None:
            stop.set()
            poller.join(interval + 5)
            server.shutdown()
            server.server_close()
            thread.join(5)
            with self._lock:
                self._tail.close()

        bound = server.server_address[1]
        shown = f"[{address}]" if ":" in address else address
        return f"http://{shown}:{bound}/metrics", close
