"""The ``envoy`` traffic adapter: weights as an RDS file Envoy watches, verified by its admin API.

:class:`EnvoyAdapter` implements :class:`~trimtab.slo.ports.TrafficAdapter` over one file it owns
(``route: {envoy: {rdsPath, routeConfig, virtualHost, clusters, admin}}``): a ``DiscoveryResponse``
holding one ``RouteConfiguration`` named ``routeConfig``, with one virtual host whose one route
(prefix ``/``) splits traffic with ``weighted_clusters``. Envoy takes its routes from that file
(``path_config_source`` + ``watched_directory`` on the listener's RDS; :func:`bootstrap_config`
renders such a bootstrap) and applies a new file within milliseconds, to new and keep-alive
connections alike. The admin API (``admin``) tells what Envoy actually serves.

What a caller may rely on:

- **Percent on Envoy's own scale.** Cluster weights are trimtab's percents scaled to a total of
  :data:`SCALE` (100: the same numbers, which is what a person reading the file expects) with
  :func:`~trimtab.slo.traffic.to_scale`; reading back uses
  :func:`~trimtab.slo.traffic.from_scale`, so weights a person set on another total (``1``/``1``)
  read as the percents they mean (50/50). A drained cluster stays in the list with weight 0: the
  file always names every cluster, and Envoy never picks a cluster of weight 0.
  ``total_weight`` (deprecated in Envoy) is never written and ignored when read.
- **Stable text.** JSON (which Envoy reads whatever the extension, ``.yaml`` included), keys
  sorted, two-space indent, clusters sorted by backend name, and a ``version_info`` that is a
  digest of the routes: the same weights always give the same bytes. ``validate_clusters`` is
  on, so a route to a cluster Envoy does not know is rejected by Envoy instead of answering 503.
- **Atomic replacement.** Temporary file in the same directory, fsync'd, renamed over the path
  (``os.replace``; Envoy never notices a file overwritten in place), directory fsync'd.
- **Validation first.** Invalid weights raise :class:`~trimtab.slo.traffic.WeightsError` and
  change nothing. Every name that reaches the file is checked again here
  (:mod:`trimtab.slo.names`): a name that could inject configuration raises ``ValueError`` when
  the adapter is built.
- **Envoy first, file second.** :meth:`~EnvoyAdapter.set_weights` asks the admin API before it
  writes: when Envoy cannot be reached it raises
  :class:`~trimtab.slo.traffic.TransientTrafficError` and writes nothing, so Envoy comes back
  serving what it served. After writing it waits (up to ``timeout``) for Envoy's verdict in its
  RDS counters (``rds.<routeConfig>.update_success`` / ``update_rejected`` in ``/stats``).
  **A rejected update** restores the file as it was (Envoy keeps serving the old routes, and a
  restarted Envoy loads the same ones) and raises
  :class:`~trimtab.slo.traffic.PermanentTrafficError`. Setting the weights Envoy already serves
  from the file as rendered writes nothing.
- **What Envoy serves.** :meth:`~EnvoyAdapter.get_weights` reads Envoy's dynamic route
  configuration (``/config_dump?resource=dynamic_route_configs``); when the file holds other
  weights (Envoy rejected it, or a person edited it) it logs a warning naming both, and returns
  what Envoy serves. When the admin API cannot be reached it falls back to the file, which is
  what Envoy loads when it starts. :meth:`~EnvoyAdapter.inspect` returns both sides.
  :meth:`~EnvoyAdapter.verify` is VERIFIED when Envoy's dynamic route configuration holds
  exactly the weights, PENDING otherwise (it raises when Envoy cannot be asked).
- **A missing file.** With ``initial`` weights, :meth:`~EnvoyAdapter.get_weights` writes them
  (as :meth:`~EnvoyAdapter.set_weights` would; while Envoy is down, without waiting, so that it
  starts with routes) when neither Envoy nor the file has routes yet, and returns them; with
  ``create=False`` (dry runs) it returns them without writing. Without ``initial`` it raises
  :class:`~trimtab.slo.traffic.PermanentTrafficError`: a person must say where traffic starts.

Errors by cause:

- :class:`~trimtab.slo.traffic.TransientTrafficError`: the admin API refused, timed out or
  answered 5xx; Envoy is still starting; Envoy gave no verdict on a new file within
  ``timeout`` (the file holds the new routes and Envoy may still take them); OS errors such as
  a full disk.
- :class:`~trimtab.slo.traffic.PermanentTrafficError`: Envoy rejected the routes, or serves
  none while the file holds some (it rejected them when it started); Envoy has no RDS
  subscription for ``routeConfig`` (the listener does not take its routes from this route
  configuration); Envoy or the file holds routes this adapter cannot read (no such virtual host,
  a cluster the route block does not map, every weight 0); the admin URL is not Envoy's admin
  API (4xx, not JSON); permissions, a missing directory, a symbolic link at ``rdsPath``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from trimtab.adapters.ownedfile import OwnedFile
from trimtab.slo.names import check_backend, check_host_port, check_proxy_name
from trimtab.slo.ports import Verification, Weights
from trimtab.slo.routes import EnvoyRoute
from trimtab.slo.traffic import (
    PermanentTrafficError,
    TransientTrafficError,
    WeightsError,
    from_scale,
    to_scale,
    validate_weights,
)

__all__ = ["SCALE", "EnvoyAdapter", "RouteState", "bootstrap_config", "parse", "render"]

log = logging.getLogger(__name__)

SCALE = 100
"""The total of the cluster weights written: Envoy accepts any total; 100 reads as percent."""

ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
MAX_BYTES = 1024 * 1024  # a route file this adapter writes is a few hundred bytes
DEFAULT_TIMEOUT = 2.0
_DOMAIN = re.compile(r"^[A-Za-z0-9*.:\[\]-]+$")
_PROTOBUF_SUFFIXES = (".pb", ".pb_text")  # Envoy would read the file as protobuf, not JSON
_POLL_FIRST, _POLL_MAX = 0.001, 0.02  # Envoy applies a file in ~2 ms


# ----------------------------------------------------------------------------------- rendering


def _check_route(route: EnvoyRoute) -> None:
    """Every name of ``route`` that reaches a file, checked again (defense in depth)."""
    check_proxy_name(route.route_config)
    check_proxy_name(route.virtual_host.name)
    if not route.virtual_host.domains:
        raise ValueError("the virtual host needs at least one domain, such as '*'")
    for domain in route.virtual_host.domains:
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(
                f"invalid domain {domain!r}: use letters, digits, '*', '.', ':', '[', ']' or '-'"
            )
    if not route.clusters:
        raise ValueError("the route maps no backend to an Envoy cluster")
    for backend, cluster in route.clusters.items():
        check_backend(backend)
        check_proxy_name(cluster)
    clusters = list(route.clusters.values())
    if len(set(clusters)) != len(clusters):
        raise ValueError(f"each backend needs its own Envoy cluster, not {route.clusters}")


def _route_configuration(route: EnvoyRoute, weights: Mapping[str, int]) -> dict[str, Any]:
    scaled = to_scale(weights, SCALE)
    clusters = [
        {"name": route.clusters[backend], "weight": scaled[backend]} for backend in sorted(scaled)
    ]
    return {
        "@type": ROUTE_TYPE,
        "name": route.route_config,
        "validate_clusters": True,
        "virtual_hosts": [
            {
                "name": route.virtual_host.name,
                "domains": list(route.virtual_host.domains),
                "routes": [
                    {
                        "name": "trimtab",
                        "match": {"prefix": "/"},
                        "route": {"weighted_clusters": {"clusters": clusters}},
                    }
                ],
            }
        ],
    }


def render(route: EnvoyRoute, weights: Weights) -> str:
    """The RDS file's text for percent ``weights`` by backend (a ``DiscoveryResponse``).

    Raises :class:`~trimtab.slo.traffic.WeightsError` for weights that are not valid percents
    over exactly the route's backends, and ``ValueError`` for a name that may not reach a file.
    """
    _check_route(route)
    checked = validate_weights(weights, route.clusters)
    resource = _route_configuration(route, checked)
    canonical = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    version = "trimtab-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    document = {"version_info": version, "resources": [resource]}
    return json.dumps(document, sort_keys=True, indent=2) + "\n"


def bootstrap_config(
    route: EnvoyRoute,
    upstreams: Mapping[str, Sequence[str]],
    *,
    listen: str = "127.0.0.1:10000",
    node: str = "trimtab",
    stat_prefix: str = "ingress",
    connect_timeout: float = 1.0,
    stats_flush_interval: float | None = None,
) -> dict[str, Any]:
    """A minimal Envoy bootstrap (as a dict; dump it as JSON) serving ``route`` from its RDS file.

    - the admin API on ``route.admin``'s IP address and port (plain HTTP; loopback by
      default), which the adapter reads and ``/stats/prometheus`` exposes;
    - one listener on ``listen`` (``ip:port``) whose HTTP connection manager takes the route
      configuration ``route.route_config`` from ``route.rds_path`` (made absolute against the
      current directory) through ``path_config_source``, watching the file's directory, so a
      file renamed into place is applied at once;
    - one cluster per entry of ``upstreams`` (Envoy cluster name → ``host:port`` endpoints):
      ``STATIC`` when every host is an IP address, ``STRICT_DNS`` otherwise. Every cluster the
      route maps must be there, or Envoy (``validate_clusters``) rejects the routes;
    - ``node`` as the node id and cluster, which file-based xDS requires;
    - ``stats_flush_interval`` (seconds), when given: Envoy merges latency histograms into
      ``/stats/prometheus`` only at a stats flush, every 5 s by default.

    Envoy refuses to start while ``route.rds_path`` does not exist: write it first, with
    :func:`render` or :meth:`EnvoyAdapter.get_weights` given ``initial`` weights. Raises
    ``ValueError`` for names or addresses that may not reach a configuration.
    """
    _check_route(route)
    admin = urlsplit(route.admin)
    if admin.scheme != "http" or admin.hostname is None:
        raise ValueError(f"the bootstrap serves the admin API over plain http, not {route.admin}")
    admin_port = admin.port or 80
    listen_host, listen_port = _host_port(listen)
    for what, host in (("admin", admin.hostname), ("listen", listen_host)):
        if not _is_ip(host):  # Envoy binds listeners to addresses; it resolves no names there
            raise ValueError(f"the {what} address must be an IP address, not {host!r}")
    check_proxy_name(node)
    check_proxy_name(stat_prefix)
    for what, seconds in (("connect_timeout", connect_timeout), ("flush", stats_flush_interval)):
        if seconds is not None and not seconds > 0:
            raise ValueError(f"{what} must be positive, not {seconds!r}")
    missing = sorted(set(route.clusters.values()) - set(upstreams))
    if missing:
        raise ValueError(f"no upstream endpoints for cluster(s) {', '.join(missing)}")
    clusters = []
    for name, addresses in sorted(upstreams.items()):
        check_proxy_name(name)
        endpoints = [addresses] if isinstance(addresses, str) else list(addresses)
        if not endpoints:
            raise ValueError(f"cluster {name!r} needs at least one host:port")
        hosts = [_host_port(address) for address in endpoints]
        clusters.append(
            {
                "name": name,
                "type": "STATIC" if all(_is_ip(h) for h, _ in hosts) else "STRICT_DNS",
                "connect_timeout": f"{connect_timeout:g}s",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [
                        {"lb_endpoints": [{"endpoint": _address(h, p)} for h, p in hosts]}
                    ],
                },
            }
        )
    rds_path = Path(route.rds_path).absolute()
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "rds": {
            "route_config_name": route.route_config,
            "config_source": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": str(rds_path),
                    "watched_directory": {"path": str(rds_path.parent)},
                },
            },
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    flush = (
        {}
        if stats_flush_interval is None
        else {"stats_flush_interval": f"{stats_flush_interval:g}s"}
    )
    return flush | {
        "node": {"id": node, "cluster": node},
        "admin": {"address": _address(admin.hostname, admin_port)["address"]},
        "static_resources": {
            "listeners": [
                {
                    "name": stat_prefix,
                    "address": _address(listen_host, listen_port)["address"],
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def _host_port(address: str) -> tuple[str, int]:
    check_host_port(address)
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(host: str, port: int) -> dict[str, Any]:
    return {"address": {"socket_address": {"address": host, "port_value": port}}}


# ------------------------------------------------------------------------------------- reading


class _Unreadable(ValueError):
    """Routes this adapter cannot turn into weights; the message says why."""


def _find_route_config(resources: object, name: str) -> Mapping[str, Any] | None:
    if not isinstance(resources, list):
        raise _Unreadable("expected a list of resources")
    for resource in resources:
        if isinstance(resource, Mapping) and resource.get("name") == name:
            return resource
    return None


def _weights_of(config: Mapping[str, Any], route: EnvoyRoute) -> dict[str, int]:
    """The percent weights by backend of a RouteConfiguration (as Envoy or the file holds it)."""
    hosts = config.get("virtual_hosts")
    host = next(
        (
            h
            for h in (hosts if isinstance(hosts, list) else [])
            if isinstance(h, Mapping) and h.get("name") == route.virtual_host.name
        ),
        None,
    )
    if host is None:
        raise _Unreadable(f"no virtual host named {route.virtual_host.name!r}")
    routes = host.get("routes")
    first = routes[0] if isinstance(routes, list) and routes else None
    action = first.get("route") if isinstance(first, Mapping) else None
    if not isinstance(action, Mapping):
        raise _Unreadable(f"virtual host {route.virtual_host.name!r} does not route to clusters")
    if isinstance(action.get("weighted_clusters"), Mapping):
        entries = action["weighted_clusters"].get("clusters")
        if not isinstance(entries, list):
            raise _Unreadable("weighted_clusters has no list of clusters")
        listed = [
            (entry.get("name"), entry.get("weight", 0))
            for entry in entries
            if isinstance(entry, Mapping)
        ]
    elif isinstance(action.get("cluster"), str):
        listed = [(action["cluster"], 1)]  # one cluster takes everything
    else:
        raise _Unreadable("the first route has neither weighted_clusters nor a cluster")
    backend_of = {cluster: backend for backend, cluster in route.clusters.items()}
    scaled = dict.fromkeys(route.clusters, 0)
    for cluster, weight in listed:
        if cluster not in backend_of:
            raise _Unreadable(
                f"it routes to cluster {cluster!r}, which the route block does not map"
            )
        if isinstance(weight, str) and weight.isdigit():  # proto3 JSON may quote integers
            weight = int(weight)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise _Unreadable(f"cluster {cluster!r} has weight {weight!r}")
        scaled[backend_of[cluster]] += weight
    try:
        return from_scale(scaled)
    except WeightsError as exc:
        raise _Unreadable(str(exc)) from None


def parse(route: EnvoyRoute, text: str) -> dict[str, int]:
    """The percent weights by backend of an RDS file's text (the inverse of :func:`render`).

    Reads what :func:`render` writes and what a person may write instead: JSON or YAML, any
    total, drained clusters at 0 or left out, a single ``cluster`` for all traffic. Raises
    ``ValueError`` saying why for anything else (no route configuration ``route.route_config``,
    no such virtual host, a cluster ``route.clusters`` does not map, every weight 0).
    """
    try:
        document = json.loads(text)
    except ValueError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _Unreadable(f"neither JSON nor YAML ({exc})") from None
    if not isinstance(document, Mapping):
        raise _Unreadable("expected a DiscoveryResponse (version_info, resources)")
    config = _find_route_config(document.get("resources"), route.route_config)
    if config is None:
        raise _Unreadable(f"no route configuration named {route.route_config!r}")
    return _weights_of(config, route)


@dataclass(frozen=True)
class RouteState:
    """Both sides of a route: what Envoy serves and what the file holds.

    ``served`` is ``None`` when Envoy has no such route configuration (or could not be reached:
    then ``reachable`` is False); ``held`` is ``None`` when the file does not exist. ``problem``
    says why either side could not be read, if one could not.
    """

    reachable: bool
    served: dict[str, int] | None
    held: dict[str, int] | None
    problem: str | None = None

    @property
    def agree(self) -> bool:
        return self.served == self.held


@dataclass(frozen=True)
class _Counters:
    success: int
    rejected: int
    failure: int


class _Missing(Exception):
    """The file does not exist (yet)."""


class _Unknown:
    """What a file held that could not be read back (a symlink, binary, oversized)."""


_UNKNOWN = _Unknown()


class EnvoyAdapter:
    """A :class:`~trimtab.slo.ports.TrafficAdapter` steering Envoy through an RDS file it owns.

    ``backends`` are the route's backends; each must be mapped to its own cluster by
    ``route.clusters``. ``initial`` (validated here) is where traffic starts when neither Envoy
    nor the file has routes yet; ``create=False`` never writes it (dry runs). ``timeout`` bounds
    each admin API request and the wait for Envoy's verdict on a new file, in seconds.
    ``transport`` replaces httpx's (tests). Nothing is read or written until the first call.
    Thread-safe.
    """

    def __init__(
        self,
        route: EnvoyRoute,
        backends: Sequence[str],
        *,
        initial: Weights | None = None,
        create: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        names = list(backends)
        if not names:
            raise ValueError("the envoy adapter needs at least one backend")
        if len(set(names)) != len(names):
            raise ValueError(f"backends must be distinct, not {names}")
        for name in names:
            check_backend(name)
        _check_route(route)
        if set(route.clusters) != set(names):
            raise ValueError(
                f"the route maps backends {sorted(route.clusters)} to clusters, but the route's "
                f"backends are {sorted(names)}"
            )
        path = Path(route.rds_path)
        if (
            "\x00" in route.rds_path
            or route.rds_path.endswith("/")
            or not path.name
            or path.suffix in _PROTOBUF_SUFFIXES
        ):
            raise ValueError(
                f"invalid rdsPath {route.rds_path!r}: a file name, ending in .yaml, .yml or .json"
            )
        admin = urlsplit(route.admin)
        if admin.scheme not in ("http", "https") or not admin.hostname:
            raise ValueError(f"invalid admin URL {route.admin!r}: expected http://host:port")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.route = route
        self.path = path
        self._file = OwnedFile(
            path,
            owner="the envoy adapter",
            what="the RDS file",
            max_bytes=MAX_BYTES,
            no_directory="; Envoy watches it, and the envoy adapter creates the file, not the "
            "directory",
        )
        self.backends: tuple[str, ...] = tuple(names)
        self.initial = validate_weights(initial, names) if initial is not None else None
        self.create = create
        self.timeout = timeout
        self.admin = route.admin.rstrip("/")
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.RLock()
        self._stat = route.route_config.replace(":", "_")  # how Envoy's stat names spell it
        self._warned: str | None = None

    def __repr__(self) -> str:
        return (
            f"EnvoyAdapter({str(self.path)!r}, route_config={self.route.route_config!r}, "
            f"admin={self.admin!r}, backends={list(self.backends)!r})"
        )

    def close(self) -> None:
        """Close the admin API connections (a later call opens new ones)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> EnvoyAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- the port

    def get_weights(self) -> Weights:
        """The weights Envoy serves (the file's when Envoy is down; ``initial`` when neither)."""
        with self._lock:
            state = self.inspect()
            if state.served is not None:
                if state.held != state.served:
                    held = state.held or (
                        "routes trimtab cannot read" if state.problem else "nothing"
                    )
                    self._warn(
                        f"Envoy serves {state.served} but {self.path} holds {held} (Envoy "
                        "rejected the file, has not taken it yet, or a person edited it): "
                        "reporting what Envoy serves; a restarted Envoy would load the file"
                    )
                return dict(state.served)
            if state.held is not None:
                if state.reachable:
                    self._check_live()
                    raise PermanentTrafficError(
                        f"{self._where()}: Envoy serves no such route configuration, though "
                        f"{self.path} holds one: Envoy rejected the file (see its log and "
                        f"rds.{self._stat}.update_rejected), or its listener does not take "
                        "routes from this file"
                    )
                self._warn(
                    f"{state.problem}; reporting the weights {self.path} holds, "
                    f"{state.held}, which Envoy loads when it starts"
                )
                return dict(state.held)
            if self.path.exists() or self.path.is_symlink():
                raise PermanentTrafficError(f"{self._where()}: {state.problem}")
            if self.initial is None:
                raise PermanentTrafficError(
                    f"{self._where()}: neither Envoy nor {self.path} has routes yet, and no "
                    "initial weights were given: say where traffic starts"
                )
            if self.create:
                if state.reachable:
                    self._apply(self.initial, None)
                else:  # Envoy loads the file when it starts: then it starts with routes
                    self._write(render(self.route, self.initial))
            return dict(self.initial)

    def set_weights(self, weights: Weights) -> None:
        """Write the weights and wait for Envoy to take them; see the module docstring."""
        wanted = validate_weights(weights, self.backends)
        text = render(self.route, wanted)
        with self._lock:
            try:
                before = self._counters()  # Envoy must be there before anything is written
            except TransientTrafficError as exc:
                raise TransientTrafficError(
                    f"{exc}; nothing was written, so Envoy keeps its routes", delay=exc.delay
                ) from exc
            held: str | _Unknown | None = None
            try:
                held = self._read_text()
            except _Missing:
                pass
            except PermanentTrafficError:
                held = _UNKNOWN  # not a file we can read back: replacing it is what was asked
            if held == text and self._served_quietly() == wanted:
                return
            self._apply(wanted, held, text=text, before=before)

    def verify(self, weights: Weights) -> Verification:
        """VERIFIED when Envoy's dynamic route configuration holds exactly ``weights``."""
        wanted = validate_weights(weights, self.backends)
        with self._lock:
            served = self._served()
        return Verification.VERIFIED if served == wanted else Verification.PENDING

    def inspect(self) -> RouteState:
        """What Envoy serves and what the file holds, side by side (``get_weights`` decides)."""
        problems: list[str] = []
        reachable = True
        served: dict[str, int] | None = None
        held: dict[str, int] | None = None
        with self._lock:
            try:
                served = self._served()
                if served is None:
                    problems.append(
                        f"Envoy serves no route configuration {self.route.route_config!r}"
                    )
            except TransientTrafficError as exc:
                reachable = False
                problems.append(str(exc))
            try:
                held = self._held()
            except _Missing:
                pass
            except PermanentTrafficError as exc:
                problems.append(str(exc))
        return RouteState(reachable, served, held, "; ".join(problems) or None)

    # ------------------------------------------------------------------------- applying a file

    def _apply(
        self,
        wanted: dict[str, int],
        previous: str | _Unknown | None,
        *,
        text: str | None = None,
        before: _Counters | None = None,
    ) -> None:
        """Write the routes for ``wanted`` and wait for Envoy's verdict; restore on rejection."""
        text = text if text is not None else render(self.route, wanted)
        before = before if before is not None else self._counters()
        self._write(text)
        verdict = self._await_verdict(before, wanted)
        if verdict == "accepted":
            return
        if verdict == "rejected":
            served = self._served_quietly()
            restored = self._restore(previous)
            raise PermanentTrafficError(
                f"{self._where()}: Envoy rejected the routes for {wanted} "
                f"(rds.{self._stat}.update_rejected rose); it keeps serving "
                f"{served if served is not None else 'its previous routes'}, and {self.path} "
                f"{restored}. Envoy's log says why: a cluster it does not know (validate_clusters "
                "is on), or a route configuration name its listener does not ask for"
            )
        if verdict == "failed":
            raise TransientTrafficError(
                f"{self._where()}: Envoy could not read {self.path} "
                f"(rds.{self._stat}.update_failure rose); the file holds {wanted}"
            )
        raise TransientTrafficError(
            f"{self._where()}: Envoy took no new routes from {self.path} within "
            f"{self.timeout:g}s; the file holds {wanted} and Envoy may still take them. If this "
            "persists, check that Envoy's RDS watches the directory of rdsPath"
        )

    def _await_verdict(self, before: _Counters, wanted: Mapping[str, int]) -> str:
        """``accepted``, ``rejected``, ``failed`` or ``timeout``, from Envoy's RDS counters."""
        deadline = time.monotonic() + self.timeout
        pause = _POLL_FIRST
        while True:
            now = self._counters()
            if now.rejected > before.rejected:
                return "rejected"
            if now.success > before.success:
                # another file renamed into the same directory also makes Envoy re-read ours:
                # only the weights served tell that it read this one
                if self._served() == wanted:
                    return "accepted"
                before = now
            elif now.failure > before.failure:
                return "failed"
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)

    def _restore(self, previous: str | _Unknown | None) -> str:
        """Put back the file as it was (or remove ours); says what became of the file."""
        try:
            if isinstance(previous, _Unknown):
                return "holds the rejected routes (what it held before could not be read)"
            if previous is None:
                self.path.unlink(missing_ok=True)
                return "was removed, as it did not exist before"
            before = self._counters()
            self._write(previous)
            deadline = time.monotonic() + self.timeout
            # wait for Envoy to read it, so that the next write's verdict is that write's own
            while self._counters() == before and time.monotonic() < deadline:
                time.sleep(_POLL_FIRST)
            return "was restored"
        except (OSError, TransientTrafficError, PermanentTrafficError) as exc:
            log.warning("%s: could not restore the previous routes: %s", self.path, exc)
            return f"could not be restored ({exc})"

    # ----------------------------------------------------------------------------- admin API

    def _where(self) -> str:
        return f"Envoy {self.admin}, route configuration {self.route.route_config!r}"

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout,
                transport=self._transport,
                trust_env=False,  # the admin API is never reached through an HTTP proxy
                headers={"User-Agent": "trimtab"},
            )
        return self._client

    def _get_json(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.admin}{path}"
        for attempt in (1, 2):
            try:
                response = self._http().get(url, params=params)
                break
            except httpx.TimeoutException as exc:
                raise TransientTrafficError(
                    f"Envoy's admin API at {self.admin} timed out after {self.timeout:g}s"
                ) from exc
            except httpx.TransportError as exc:
                # a pooled connection from before an Envoy restart fails once; a new one tells
                if attempt == 2 or isinstance(exc, httpx.ConnectError):
                    raise TransientTrafficError(
                        f"cannot reach Envoy's admin API at {self.admin}: "
                        f"{exc or type(exc).__name__}"
                    ) from exc
        if response.status_code >= 500:
            raise TransientTrafficError(
                f"Envoy's admin API at {self.admin} answered {path} with {response.status_code}"
            )
        if response.status_code != 200:
            raise PermanentTrafficError(
                f"{self.admin} answered {path} with {response.status_code}: is it Envoy's admin "
                "API?"
            )
        try:
            return response.json()
        except ValueError:
            raise PermanentTrafficError(
                f"{self.admin} answered {path} with something other than JSON: is it Envoy's "
                "admin API?"
            ) from None

    def _served(self) -> dict[str, int] | None:
        """The weights of Envoy's dynamic route configuration, ``None`` if it has none."""
        params = {
            "resource": "dynamic_route_configs",
            "name_regex": self.route.route_config.replace(".", r"\."),  # RE2, full match
        }
        body = self._get_json("/config_dump", params)
        configs = body.get("configs", []) if isinstance(body, Mapping) else None
        if not isinstance(configs, list):
            raise PermanentTrafficError(f"{self._where()}: {self.admin} gave no config dump")
        entries = [c.get("route_config") for c in configs if isinstance(c, Mapping)]
        try:
            config = _find_route_config(entries, self.route.route_config)
            return None if config is None else _weights_of(config, self.route)
        except _Unreadable as exc:
            raise PermanentTrafficError(
                f"{self._where()}: Envoy serves routes trimtab cannot read: {exc}"
            ) from None

    def _served_quietly(self) -> dict[str, int] | None:
        try:
            return self._served()
        except (TransientTrafficError, PermanentTrafficError):
            return None

    def _counters(self) -> _Counters:
        """Envoy's RDS update counters for the route configuration (summed over listeners)."""
        body = self._get_json("/stats", {"format": "json", "filter": r"\.rds\."})
        stats = body.get("stats", []) if isinstance(body, Mapping) else []
        found: dict[str, int] = {}
        for stat_ in stats if isinstance(stats, list) else []:
            name, value = (
                (stat_.get("name"), stat_.get("value")) if isinstance(stat_, Mapping) else ("", 0)
            )
            if not isinstance(name, str) or not isinstance(value, int):
                continue
            for counter in ("update_success", "update_rejected", "update_failure"):
                suffix = f"rds.{self._stat}.{counter}"
                if name == suffix or name.endswith("." + suffix):
                    found[counter] = found.get(counter, 0) + value
        if not found:
            raise PermanentTrafficError(
                f"{self._where()}: Envoy has no RDS subscription for this route configuration "
                f"(no rds.{self._stat}.* stats): its listener must take the routes named "
                f"{self.route.route_config!r} from {self.path}"
            )
        return _Counters(
            found.get("update_success", 0),
            found.get("update_rejected", 0),
            found.get("update_failure", 0),
        )

    def _warn(self, message: str) -> None:
        """Log ``message`` once, not at every cycle while the situation lasts."""
        if message != self._warned:
            self._warned = message
            log.warning("%s: %s", self._where(), message)

    def _check_live(self) -> None:
        """Transient while Envoy is still starting (its routes may not be loaded yet)."""
        body = self._get_json("/server_info", {})
        live = body.get("state") if isinstance(body, Mapping) else None
        if live is not None and live != "LIVE":
            raise TransientTrafficError(f"{self._where()}: Envoy is {live}, not LIVE yet")

    # ---------------------------------------------------------------------------------- the file

    def _held(self) -> dict[str, int]:
        try:
            return parse(self.route, self._read_text())
        except ValueError as exc:
            raise PermanentTrafficError(
                f"{self.path}: routes trimtab cannot read: {exc}; trimtab replaces the file at "
                "the next change of weights"
            ) from None

    def _read_text(self) -> str:
        """The file's text; refuses symlinks, non-regular files and oversized files."""
        text = self._file.read_text()
        if text is None:
            raise _Missing
        return text

    def _write(self, text: str) -> None:
        self._file.write_bytes(text.encode("utf-8"))
