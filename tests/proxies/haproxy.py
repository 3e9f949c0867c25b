"""HAProxy 2.6 (Debian ``haproxy``) in front of the test backends, steered by the haproxy adapter.

``haproxy -db -f CONF`` (foreground, no daemon) with the configuration, the admin stats socket
(``level admin``, mode 600), the server-state file and the log in the harness's directory; one
frontend on a free loopback port, and backend :data:`BACKEND` balancing ``roundrobin`` over
:data:`SERVERS` (``v1`` → ``app1``, ``v2`` → ``app2``). The configuration starts ``app1`` at
weight 256 and ``app2`` at 0: :data:`START`. The adapter is built as ``trimtab run`` builds it,
from a route block, by the factory registered for ``haproxy``.

Restarts keep the running weights the way an operator's setup does, since a new HAProxy
process starts from its configuration and would otherwise forget every runtime change: the
configuration names a ``server-state-file`` and loads it (``load-server-state-from-file
global``), and :meth:`HAProxyHarness.stop` first dumps ``show servers state`` into that file,
as the HAProxy management guide's reload recipe does before a reload or a stop.

Failures: ``socket-missing`` moves the stats socket aside (what a restarting HAProxy, or a
socket path that does not exist, looks like); ``down`` stops HAProxy (its socket file stays
behind, refusing connections). Both are :class:`TransientTrafficError`: retrying succeeds once
HAProxy is back. Repair moves the socket back, or starts HAProxy again on the same port and
files, where it reloads the weights it had.

``exact_split`` is true: HAProxy's roundrobin is deterministic, and with the adapter sending
raised weights before lowered ones the split of new connections matches the weights within
half a point from the first requests after a change (measured on 2.6.12 over 100 random
changes; sending lowered weights first, a phase of the under-load test got 100 % instead of 70 %).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from servers import free_port, wait_until
from trimtab.controller.wiring import FACTORIES
from trimtab.slo.ports import TrafficAdapter
from trimtab.slo.routes import HAProxyRoute
from trimtab.slo.traffic import TrafficError, TransientTrafficError

from . import BACKENDS, START, Backends, ProxyHarness

BACKEND = "app"
SERVERS = {"v1": ["app1"], "v2": ["app2"]}
CLI_TIMEOUT = 5.0
SOFT_STOP = 5.0  # seconds a soft stop may take before SIGTERM


def haproxy_binary() -> str | None:
    """The absolute path of ``haproxy``, or ``None`` when it is not installed."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    return str(Path(found).resolve()) if found else None


def cli(path: Path, command: str) -> str:
    """One command on the stats socket at ``path``: HAProxy's whole answer (without the adapter)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(CLI_TIMEOUT)
        conn.connect(str(path))
        conn.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def servers_state(path: Path, backend: str) -> dict[str, int]:
    """``show servers state BACKEND``: each server's current (user) weight, by name."""
    lines = [line for line in cli(path, f"show servers state {backend}").splitlines() if line]
    header = lines[1].lstrip("# ").split()
    name, weight = header.index("srv_name"), header.index("srv_uweight")
    rows = [line.split() for line in lines[2:] if not line.startswith("#")]
    return {row[name]: int(row[weight]) for row in rows}


class HAProxyProcess:
    """One ``haproxy -db -f CONF`` in ``root``, stopped by its own PID; restartable in place."""

    def __init__(self, root: Path, *, port: int) -> None:
        binary = haproxy_binary()
        assert binary is not None, "checked by the caller"
        self.executable = binary
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "haproxy.cfg"
        self.log = self.root / "haproxy.log"
        self.socket = self.root / "admin.sock"
        self.state = self.root / "server-state"
        if len(os.fsencode(self.socket)) > 107:
            raise RuntimeError(f"{self.socket} is too long for a unix socket path")
        self.config = ""  # the configuration's text, written at every start
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or start again, on the same files and port); returns once it serves."""
        if self.process is not None and self.process.poll() is None:
            return
        self.conf.write_text(self.config)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.executable, "-db", "-f", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        try:
            wait_until(self._serving, "HAProxy serving")
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        """Save the servers' state (as an operator's stop does), then stop by PID and wait: a
        soft stop (SIGUSR1), SIGTERM after :data:`SOFT_STOP` seconds, SIGKILL after 10 more."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            state = cli(self.socket, "show servers state")
            temp = self.state.with_suffix(".tmp")
            temp.write_text(state)
            temp.replace(self.state)
        # SIGUSR1: a soft stop, closing idle connections cleanly; SIGTERM if it lingers
        process.send_signal(signal.SIGUSR1)
        try:
            process.wait(SOFT_STOP)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def _serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"HAProxy exited with {self.process.returncode}:\n{tail}")
        try:
            cli(self.socket, "show info")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False


def config(socket_path: Path, state: Path, port: int, servers: Mapping[str, str]) -> str:
    """The harness's configuration: ``servers`` maps server name to ``host:port weight N``."""
    lines = "\n".join(f"    server {name} {rest}" for name, rest in servers.items())
    return f"""global
    stats socket {socket_path} mode 600 level admin
    stats timeout 10s
    server-state-file {state}

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global
    # one server connection per request: no idle one for HAProxy to reset (RST) later,
    # which the Python test backends would print as errors
    option http-server-close

frontend web
    bind 127.0.0.1:{port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
{lines}
"""


class HAProxyHarness(ProxyHarness):
    """Real HAProxy; see the module docstring."""

    name = "haproxy"
    exact_split = True  # deterministic roundrobin, raised weights sent first (module docstring)
    failures = ("socket-missing", "down")

    def __init__(self, workdir: Path, backends: Backends) -> None:
        super().__init__(workdir, backends)
        self.haproxy = HAProxyProcess(workdir / "haproxy", port=free_port())
        self.haproxy.config = config(
            self.haproxy.socket,
            self.haproxy.state,
            self.haproxy.port,
            {  # START: all on v1
                SERVERS["v1"][0]: f"{backends.address('v1')} weight 256",
                SERVERS["v2"][0]: f"{backends.address('v2')} weight 0",
            },
        )
        self.hidden = self.haproxy.socket.with_name("admin.sock.hidden")

    @classmethod
    def binary(cls) -> str | None:
        return haproxy_binary()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.haproxy.port}/"

    def start(self) -> None:
        self.haproxy.start()

    def stop(self) -> None:
        self.haproxy.stop()

    def route(self) -> HAProxyRoute:
        return HAProxyRoute.model_validate(
            {"socket": str(self.haproxy.socket), "backend": BACKEND, "servers": SERVERS}
        )

    def adapter(self) -> TrafficAdapter:
        return FACTORIES["haproxy"](self.route(), BACKENDS, START, False)

    def native_weights(self) -> Mapping[str, int]:
        weights = servers_state(self.haproxy.socket, BACKEND)
        return {b: sum(weights[s] for s in names) for b, names in SERVERS.items()}

    def inject(self, failure: str) -> type[TrafficError]:
        if failure == "socket-missing":
            self.haproxy.socket.rename(self.hidden)
        elif failure == "down":
            self.stop()
        else:
            raise ValueError(f"unknown failure {failure!r}")
        return TransientTrafficError

    def repair(self, failure: str) -> None:
        if failure == "socket-missing":
            self.hidden.rename(self.haproxy.socket)
        elif failure == "down":
            self.start()
        else:
            raise ValueError(f"unknown failure {failure!r}")
