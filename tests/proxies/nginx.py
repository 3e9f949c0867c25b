"""NGINX 1.22 (Debian ``nginx``) in front of the test backends, steered by the nginx adapter.

One master with one worker process (weighted round robin is then deterministic: exact splits),
``daemon off;``, started as ``nginx -c CONF -p PREFIX -e ERRLOG`` with the pid file, logs and
every temp path in the harness's directory, listening on a free loopback port. The upstream
include starts as the harness writes it (not as the adapter renders it), holding :data:`START`.
The adapter is built as ``trimtab run`` builds it from a route block, with ``test`` and
``reload`` argvs carrying the same ``-c/-p/-e`` and the pid file for verification. The access
log uses the adapter's ``log_format``, so metrics can be read from real requests.

Failures: ``test-fails`` breaks the main configuration (an unknown directive in a file it
includes), so ``nginx -t`` rejects any change; ``down`` stops NGINX, so the reload finds no
master. Repair fixes the file, or starts NGINX again on the same port and files.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from servers import free_port, wait_until
from trimtab.adapters.nginxlog import log_format
from trimtab.controller.wiring import FACTORIES
from trimtab.slo.ports import TrafficAdapter
from trimtab.slo.routes import NginxRoute
from trimtab.slo.traffic import PermanentTrafficError, TrafficError, TransientTrafficError

from . import BACKENDS, START, Backends, ProxyHarness

UPSTREAM = "checkout"
_SERVER = re.compile(r"^\s*server\s+(\S+)((?:\s+[^\s;]+)*)\s*;", re.MULTILINE)


class NginxHarness(ProxyHarness):
    """Real NGINX; see the module docstring."""

    name = "nginx"
    exact_split = True  # one worker: smooth weighted round robin serves exact proportions
    failures = ("test-fails", "down")

    def __init__(self, workdir: Path, backends: Backends) -> None:
        super().__init__(workdir, backends)
        binary = self.binary()
        assert binary is not None, "checked by the caller"
        self.executable = binary
        self.root = (workdir / "nginx").resolve()
        self.conf = self.root / "nginx.conf"
        self.include = self.root / "trimtab" / f"{UPSTREAM}.conf"
        self.extra = self.root / "extra.conf"  # part of the main configuration, for test-fails
        self.error_log = self.root / "error.log"
        self.access_log = self.root / "access.log"
        self.pid_file = self.root / "nginx.pid"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def binary(cls) -> str | None:
        found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        return str(Path(found).resolve()) if found else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def argv(self, *action: str) -> list[str]:
        """``nginx [action] -c CONF -p PREFIX -e ERRLOG``: the same files for every command."""
        return [
            self.executable,
            *action,
            "-c",
            str(self.conf),
            "-p",
            f"{self.root}/",
            "-e",
            str(self.error_log),
        ]

    # ------------------------------------------------------------------------ the process

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if not self.conf.exists():
            self._write_files()
        with (self.root / "nginx.out").open("ab") as out:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        try:
            wait_until(self._serving, "NGINX serving")
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        workers = _children(process.pid)
        process.terminate()  # SIGTERM: the master stops its workers, then exits
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            for pid in workers:  # orphaned workers would keep the port
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.error_log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"NGINX exited with {self.process.returncode}:\n{tail}")
        if not self.pid_file.exists():
            return False
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            connection.request("GET", "/", headers={"Connection": "close"})
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def _write_files(self) -> None:
        temp = self.root / "temp"
        for folder in (self.root, self.include.parent, temp):
            folder.mkdir(parents=True, exist_ok=True)
        paths = "\n".join(
            f"    {kind}_temp_path {temp / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf.write_text(
            f"""daemon off;
master_process on;
worker_processes 1;
pid {self.pid_file};
error_log {self.error_log} notice;
events {{
    worker_connections 1024;
}}
http {{
    {log_format()}
    access_log {self.access_log} trimtab_upstream;
{paths}
    include {self.include};
    include {self.extra};
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://{UPSTREAM};
        }}
    }}
}}
"""
        )
        self.extra.write_text("")
        v1, v2 = (self.backends.address(name) for name in BACKENDS)
        assert START == {"v1": 100, "v2": 0}
        self.include.write_text(
            f"# written by the test harness\nupstream {UPSTREAM} {{\n"
            f"    server {v1} weight=1;\n    server {v2} down;\n}}\n"
        )

    # ------------------------------------------------------------------------- the adapter

    def adapter(self) -> TrafficAdapter:
        route = NginxRoute(
            upstream_path=str(self.include),
            upstream=UPSTREAM,
            servers={name: [self.backends.address(name)] for name in BACKENDS},
            test=self.argv("-t"),
            reload=self.argv("-s", "reload"),
            pid_file=str(self.pid_file),
        )
        return FACTORIES["nginx"](route, list(BACKENDS), dict(START), False)  # as `run` builds it

    def native_weights(self) -> Mapping[str, int]:
        """Summed NGINX weight per backend as the include holds it; 0 for ``down`` servers."""
        owner = {self.backends.address(name): name for name in BACKENDS}
        weights = dict.fromkeys(BACKENDS, 0)
        for match in _SERVER.finditer(self.include.read_text()):
            params = match.group(2).split()
            if "down" in params:
                continue
            weight = next((int(p[len("weight=") :]) for p in params if p.startswith("weight=")), 1)
            weights[owner[match.group(1)]] += weight
        return weights

    # ------------------------------------------------------------------------- failures

    def inject(self, failure: str) -> type[TrafficError]:
        if failure == "test-fails":
            self.extra.write_text("this_is_not_an_nginx_directive on;\n")
            return PermanentTrafficError
        if failure == "down":
            self.stop()
            return TransientTrafficError
        raise ValueError(f"unknown failure {failure!r}")

    def repair(self, failure: str) -> None:
        if failure == "test-fails":
            self.extra.write_text("")
        elif failure == "down":
            self.start()
        else:
            raise ValueError(f"unknown failure {failure!r}")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
