"""Real servers for tests: Prometheus on backfilled or scraped data, and a loopback HTTP server.

Everything binds to 127.0.0.1 on a free port, is started with absolute paths and no shell,
waits for readiness by polling (never a fixed sleep) within a deadline, and is stopped by its
own PID. The fixtures in ``conftest.py`` wrap these and always stop them at teardown.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

READY_TIMEOUT = 30.0  # seconds; Prometheus is ready in well under one, first scrapes take ~6
POLL = 0.05


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll ``check`` until it is true; ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g}s")
        time.sleep(POLL)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return json.load(response)


# ----------------------------------------------------------------------------------- Prometheus


def backfill(promtool: str, openmetrics: str, storage: Path) -> None:
    """Write ``openmetrics`` (ending in ``# EOF``) as TSDB blocks into ``storage``."""
    storage.mkdir(parents=True, exist_ok=True)
    source = storage.parent / "backfill.om"
    source.write_text(openmetrics if openmetrics.endswith("\n") else openmetrics + "\n")
    result = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(storage)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool backfill failed:\n{result.stdout}\n{result.stderr}")


def scrape_config(
    targets: Sequence[str] | Mapping[str, Mapping[str, str]],
    *,
    interval: str = "1s",
    job: str = "trimtab-test",
) -> str:
    """A Prometheus config scraping ``targets`` (URLs, optionally mapped to extra labels).

    Targets sharing a scheme and path form one job; ``honor_labels`` keeps the exporters' own
    labels as they are, as the embedded scraper does.
    """
    labelled = dict(targets) if isinstance(targets, Mapping) else {key: {} for key in targets}
    jobs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for url, labels in labelled.items():
        parts = urlsplit(url if "://" in url else f"http://{url}")
        group = jobs.setdefault((parts.scheme, parts.path or "/metrics"), [])
        group.append({"targets": [parts.netloc], "labels": dict(labels)})
    configs = [
        {
            "job_name": job if len(jobs) == 1 else f"{job}-{i}",
            "scheme": scheme,
            "metrics_path": path,
            "honor_labels": True,
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "static_configs": statics,
        }
        for i, ((scheme, path), statics) in enumerate(jobs.items())
    ]
    # evaluation_interval is also the default resolution of subqueries (the gauge's [5m:])
    settings = {"scrape_interval": interval, "evaluation_interval": interval}
    return json.dumps({"global": settings, "scrape_configs": configs})


@dataclass
class PrometheusServer:
    """One Prometheus process on ``127.0.0.1:port`` over ``storage``; restartable in place."""

    binary: str
    workdir: Path
    config: str = '{"global": {"scrape_interval": "15s"}}'  # JSON is YAML
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self) -> PrometheusServer:
        """Start (or start again, on the same storage and port) and wait for ``/-/ready``."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=100y",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            wait_until(self._ready, "Prometheus ready")
        except Exception:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Prometheus exited with {self.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate by PID, wait, kill if it does not exit in ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query, for checks in tests."""
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        url = f"{self.url}/api/v1/query?{urlencode(params)}"
        body = get_json(url)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for_targets(self, count: int, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``/api/v1/targets`` until ``count`` targets are all ``up``."""

        def all_up() -> bool:
            active = get_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"]
            return len(active) == count and all(t["health"] == "up" for t in active)

        wait_until(all_up, f"{count} scrape targets up")


# ---------------------------------------------------------------------------- loopback HTTP


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0  # seconds before answering; cut short when the server stops


Responder = Callable[[Recorded], Reply]


def prometheus_vector(result: Sequence[tuple[Mapping[str, str], str]] = ()) -> Reply:
    """A successful instant-query answer holding ``result`` (labels, value as text)."""
    vector = [{"metric": dict(labels), "value": [0, value]} for labels, value in result]
    body = {"status": "success", "data": {"resultType": "vector", "result": vector}}
    return Reply(body=json.dumps(body).encode())


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 that records requests and answers with ``responder``.

    ``responder`` may be replaced while the server runs (a test's "next cycle"). With ``tls``
    (certificate and key files) it serves HTTPS.
    """

    def __init__(self, responder: Responder, tls: tuple[Path, Path] | None = None) -> None:
        self.responder = responder
        self.requests: list[Recorded] = []
        self._released = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Recorded(
                    self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
                )
                outer.requests.append(request)
                reply = outer.responder(request)
                if reply.delay and outer._released.wait(reply.delay):
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
