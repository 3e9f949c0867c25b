"""The ``envoy`` adapter without Envoy: rendering, reading back, names, bootstrap, and its rules.

The rules (write nothing when Envoy is down, restore a rejected file, report what Envoy serves)
run against :class:`FakeEnvoy`, an admin API behind ``httpx.MockTransport`` that reads the RDS
file as Envoy does: it notices a file renamed into place, accepts the routes when every cluster
is one it knows (``validate_clusters``) and the name is the one its listener asks for, and
counts ``update_success`` / ``update_rejected`` in ``/stats``. The real Envoy runs the same
rules in ``tests/integration/test_adapter_contract.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from trimtab.adapters.envoy import SCALE, EnvoyAdapter, bootstrap_config, parse, render
from trimtab.slo.ports import TrafficAdapter, Verification
from trimtab.slo.routes import EnvoyRoute, EnvoyVirtualHost
from trimtab.slo.traffic import (
    PermanentTrafficError,
    TransientTrafficError,
    WeightsError,
    from_scale,
)

BACKENDS = ["v1", "v2"]
CLUSTERS = {"v1": "checkout_v1", "v2": "checkout_v2"}
START = {"v1": 100, "v2": 0}
ADMIN = "http://127.0.0.1:9901"


def envoy_route(path: Path | str = "/etc/envoy/rds/checkout.yaml", **changes: Any) -> EnvoyRoute:
    fields: dict[str, Any] = {
        "rds_path": str(path),
        "route_config": "checkout",
        "virtual_host": EnvoyVirtualHost(name="checkout", domains=["*"]),
        "clusters": dict(CLUSTERS),
        "admin": ADMIN,
    }
    return EnvoyRoute.model_construct(**(fields | changes))  # unchecked: the adapter checks


def weights_in(text: str) -> dict[str, int]:
    """The cluster weights of a rendered file, read by hand."""
    (config,) = json.loads(text)["resources"]
    (host,) = config["virtual_hosts"]
    (route,) = host["routes"]
    return {c["name"]: c["weight"] for c in route["route"]["weighted_clusters"]["clusters"]}


# ------------------------------------------------------------------------------------ rendering


def test_render_writes_the_weights_on_a_scale_of_100() -> None:
    text = render(envoy_route(), {"v1": 95, "v2": 5})
    assert weights_in(text) == {"checkout_v1": 95, "checkout_v2": 5}
    assert SCALE == 100


def test_a_drained_cluster_stays_in_the_file_at_weight_0() -> None:
    assert weights_in(render(envoy_route(), {"v1": 0, "v2": 100})) == {
        "checkout_v1": 0,
        "checkout_v2": 100,
    }


def test_render_is_deterministic_whatever_the_order_of_the_weights() -> None:
    first = render(envoy_route(), {"v1": 67, "v2": 33})
    assert render(envoy_route(), {"v2": 33, "v1": 67}) == first
    assert first.endswith("}\n")
    reordered = envoy_route(clusters={"v2": "checkout_v2", "v1": "checkout_v1"})
    assert render(reordered, {"v1": 67, "v2": 33}) == first


def test_the_version_is_a_digest_of_the_routes() -> None:
    one = json.loads(render(envoy_route(), {"v1": 50, "v2": 50}))["version_info"]
    other = json.loads(render(envoy_route(), {"v1": 51, "v2": 49}))["version_info"]
    assert re.fullmatch(r"trimtab-[0-9a-f]{16}", one)
    assert one != other


def test_render_asks_envoy_to_reject_unknown_clusters_and_writes_no_total_weight() -> None:
    text = render(envoy_route(), {"v1": 50, "v2": 50})
    (config,) = json.loads(text)["resources"]
    assert config["@type"] == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert config["name"] == "checkout"
    assert config["validate_clusters"] is True
    assert config["virtual_hosts"][0]["domains"] == ["*"]
    assert config["virtual_hosts"][0]["routes"][0]["match"] == {"prefix": "/"}
    assert "total_weight" not in text


@pytest.mark.parametrize(
    "bad", [{"v1": 50, "v2": 49}, {"v1": 100}, {"v1": 50, "v2": 50, "v3": 0}, {"v1": True}]
)
def test_render_refuses_invalid_weights(bad: dict[str, int]) -> None:
    with pytest.raises(WeightsError):
        render(envoy_route(), bad)


@st.composite
def route_weights(draw: st.DrawFn) -> tuple[list[str], dict[str, int]]:
    count = draw(st.integers(1, 8))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, 100]
    backends = [f"b{i}" for i in range(count)]
    return backends, {b: bounds[i + 1] - bounds[i] for i, b in enumerate(backends)}


@given(route_weights())
def test_render_then_parse_gives_back_exactly_the_weights(
    case: tuple[list[str], dict[str, int]],
) -> None:
    backends, weights = case
    route = envoy_route(clusters={b: f"cluster_{b}" for b in backends})
    text = render(route, weights)
    assert parse(route, text) == weights
    scaled = weights_in(text)
    assert sum(scaled.values()) == SCALE
    assert from_scale({b: scaled[f"cluster_{b}"] for b in backends}) == weights


@pytest.mark.parametrize(
    ("clusters", "expected"),
    [
        ([("checkout_v1", 1), ("checkout_v2", 1)], {"v1": 50, "v2": 50}),
        ([("checkout_v1", 9000), ("checkout_v2", 1000)], {"v1": 90, "v2": 10}),
        ([("checkout_v2", 7)], {"v1": 0, "v2": 100}),  # a drained cluster left out
        ([("checkout_v1", "3"), ("checkout_v2", "1")], {"v1": 75, "v2": 25}),  # quoted uint32
    ],
)
def test_parse_reads_weights_a_person_wrote_on_any_scale(
    clusters: list[tuple[str, object]], expected: dict[str, int]
) -> None:
    entries = [{"name": name, "weight": weight} for name, weight in clusters]
    document = {"resources": [route_config({"weighted_clusters": {"clusters": entries}})]}
    assert parse(envoy_route(), json.dumps(document)) == expected


def test_parse_reads_yaml_and_a_single_cluster() -> None:
    text = """
resources:
- name: checkout
  virtual_hosts:
  - name: checkout
    domains: ['*']
    routes:
    - match: {prefix: /}
      route: {cluster: checkout_v2}
"""
    assert parse(envoy_route(), text) == {"v1": 0, "v2": 100}


def route_config(action: dict[str, Any], host: str = "checkout") -> dict[str, Any]:
    return {
        "name": "checkout",
        "virtual_hosts": [
            {
                "name": host,
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": action}],
            }
        ],
    }


@pytest.mark.parametrize(
    ("resources", "says"),
    [
        ([], "no route configuration named 'checkout'"),
        ([route_config({"cluster": "checkout_v1"}, host="other")], "no virtual host"),
        ([route_config({"cluster": "evil"})], "cluster 'evil'"),
        ([route_config({"weighted_clusters": {"clusters": []}})], "every weight is 0"),
        ([route_config({"weighted_clusters": {}})], "no list of clusters"),
        ([route_config({"direct_response": {"status": 200}})], "neither weighted_clusters"),
        (
            [
                route_config(
                    {"weighted_clusters": {"clusters": [{"name": "checkout_v1", "weight": -1}]}}
                )
            ],
            "weight -1",
        ),
    ],
)
def test_parse_says_what_it_cannot_read(resources: list[Any], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse(envoy_route(), json.dumps({"resources": resources}))


# ---------------------------------------------------------------------------------------- names

INJECTIONS = [
    "a;} server evil:80",
    "x\ny: z",
    "a\n b: c",
    "{cluster}",
    'quote"d',
    "single'quote",
    "nul\x00byte",
    "",
    "-leading-dash",
    "tab\tname",
    "a" * 200,
]


@pytest.mark.parametrize("name", INJECTIONS)
@pytest.mark.parametrize("where", ["cluster", "route_config", "virtual_host", "backend"])
def test_names_that_could_inject_configuration_are_refused(name: str, where: str) -> None:
    if where == "cluster":
        route = envoy_route(clusters={"v1": "checkout_v1", "v2": name})
        backends = BACKENDS
    elif where == "route_config":
        route = envoy_route(route_config=name)
        backends = BACKENDS
    elif where == "virtual_host":
        route = envoy_route(virtual_host=EnvoyVirtualHost.model_construct(name=name, domains=["*"]))
        backends = BACKENDS
    else:
        route = envoy_route(clusters={"v1": "checkout_v1", name: "checkout_v2"})
        backends = ["v1", name]
    with pytest.raises(ValueError, match="invalid"):
        EnvoyAdapter(route, backends)
    with pytest.raises(ValueError, match="invalid"):
        render(route, {b: 100 if i == 0 else 0 for i, b in enumerate(backends)})


@pytest.mark.parametrize("domain", ["*\n", "a b", "x{y}", 'a"b', "", "evil;"])
def test_domains_that_could_inject_configuration_are_refused(domain: str) -> None:
    route = envoy_route(virtual_host=EnvoyVirtualHost.model_construct(name="c", domains=[domain]))
    with pytest.raises(ValueError, match="invalid domain"):
        EnvoyAdapter(route, BACKENDS)


def test_the_yaml_model_refuses_the_same_names() -> None:
    with pytest.raises(ValueError, match="invalid proxy object name"):
        EnvoyRoute.model_validate(
            {
                "rdsPath": "r.yaml",
                "routeConfig": "checkout",
                "virtualHost": {"name": "checkout"},
                "clusters": {"v1": "a\n b: c"},
            }
        )


@pytest.mark.parametrize(
    ("route", "backends", "says"),
    [
        (envoy_route(), ["v1"], "route maps backends"),
        (envoy_route(), ["v1", "v1"], "distinct"),
        (envoy_route(), [], "at least one backend"),
        (envoy_route(clusters={"v1": "same", "v2": "same"}), BACKENDS, "its own Envoy cluster"),
        (envoy_route("/etc/envoy/rds/checkout.pb"), BACKENDS, "invalid rdsPath"),
        (envoy_route("/etc/envoy/rds/"), BACKENDS, "invalid rdsPath"),
        (envoy_route(admin="ftp://127.0.0.1:9901"), BACKENDS, "invalid admin URL"),
    ],
)
def test_a_route_the_adapter_cannot_drive_is_refused_when_it_is_built(
    route: EnvoyRoute, backends: list[str], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        EnvoyAdapter(route, backends)


def test_invalid_initial_weights_are_refused_when_it_is_built() -> None:
    with pytest.raises(WeightsError):
        EnvoyAdapter(envoy_route(), BACKENDS, initial={"v1": 99, "v2": 0})


# ------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_serves_the_route_from_its_rds_file(tmp_path: Path) -> None:
    route = envoy_route(tmp_path / "rds" / "checkout.yaml", admin="http://127.0.0.1:19901")
    upstreams = {"checkout_v1": ["127.0.0.1:8001"], "checkout_v2": ["127.0.0.1:8002", "[::1]:8003"]}
    config = bootstrap_config(route, upstreams, listen="127.0.0.1:10080", node="demo")
    assert json.loads(json.dumps(config)) == config  # plain JSON
    assert config["node"] == {"id": "demo", "cluster": "demo"}
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19901,
    }
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 10080}
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    rds = manager["typed_config"]["rds"]
    assert rds["route_config_name"] == "checkout"
    assert rds["config_source"]["path_config_source"] == {
        "path": str(tmp_path / "rds" / "checkout.yaml"),
        "watched_directory": {"path": str(tmp_path / "rds")},
    }
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert set(clusters) == {"checkout_v1", "checkout_v2"}
    assert clusters["checkout_v2"]["type"] == "STATIC"
    endpoints = clusters["checkout_v2"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"] for e in endpoints] == [
        {"address": "127.0.0.1", "port_value": 8002},
        {"address": "::1", "port_value": 8003},
    ]


def test_bootstrap_resolves_host_names_by_dns_and_makes_the_rds_path_absolute() -> None:
    route = envoy_route("rds/checkout.yaml")
    config = bootstrap_config(
        route, {"checkout_v1": ["v1.internal:80"], "checkout_v2": "127.0.0.1:81"}
    )
    clusters = {c["name"]: c["type"] for c in config["static_resources"]["clusters"]}
    assert clusters == {"checkout_v1": "STRICT_DNS", "checkout_v2": "STATIC"}
    source = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    path = source["typed_config"]["rds"]["config_source"]["path_config_source"]["path"]
    assert Path(path).is_absolute()
    assert path == str(Path.cwd() / "rds" / "checkout.yaml")


@pytest.mark.parametrize(
    ("upstreams", "changes", "says"),
    [
        ({"checkout_v1": ["127.0.0.1:1"]}, {}, "no upstream endpoints for cluster(s) checkout_v2"),
        ({**{c: ["127.0.0.1:1"] for c in CLUSTERS.values()}, "x\ny": ["1.2.3.4:5"]}, {}, "invalid"),
        ({c: ["evil;} host:80"] for c in CLUSTERS.values()}, {}, "invalid address"),
        ({c: [] for c in CLUSTERS.values()}, {}, "at least one host:port"),
        ({c: ["127.0.0.1:1"] for c in CLUSTERS.values()}, {"admin": "https://a:1"}, "plain http"),
        ({c: ["127.0.0.1:1"] for c in CLUSTERS.values()}, {"admin": "http://localhost:1"}, "IP"),
    ],
)
def test_bootstrap_refuses_what_may_not_reach_a_configuration(
    upstreams: dict[str, list[str]], changes: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        bootstrap_config(envoy_route(**changes), upstreams)


# ------------------------------------------------------------------------- rules, on a fake Envoy


class FakeEnvoy:
    """Envoy's admin API over an RDS file, as far as the adapter can see it (module docstring)."""

    def __init__(self, path: Path, clusters: set[str]) -> None:
        self.path = path
        self.clusters = clusters
        self.listens_for = "checkout"
        self.down = False
        self.deaf = False  # does not notice files renamed into place
        self.counters = {"update_success": 0, "update_rejected": 0, "update_failure": 0}
        self.config: dict[str, Any] | None = None
        self._seen: tuple[int, int] | None = None
        self.requests: list[str] = []

    def notice(self) -> None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        seen = (info.st_ino, info.st_mtime_ns)
        if seen == self._seen or self.deaf:
            return
        self._seen = seen
        try:
            (config,) = json.loads(self.path.read_text())["resources"]
            assert config["name"] == self.listens_for
            action = config["virtual_hosts"][0]["routes"][0]["route"]
            assert {c["name"] for c in action["weighted_clusters"]["clusters"]} <= self.clusters
        except (ValueError, KeyError, AssertionError):
            self.counters["update_rejected"] += 1
            return
        self.counters["update_success"] += 1
        self.config = config

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        self.requests.append(request.url.path)
        self.notice()
        if request.url.path == "/stats":
            prefix = f"http.ingress.rds.{self.listens_for}."
            stats = [{"name": prefix + k, "value": v} for k, v in self.counters.items()]
            return httpx.Response(200, json={"stats": stats})
        if request.url.path == "/config_dump":
            wanted = request.url.params["name_regex"].replace("\\.", ".")
            configs = [] if self.config is None or self.config["name"] != wanted else [self.config]
            return httpx.Response(200, json={"configs": [{"route_config": c} for c in configs]})
        if request.url.path == "/server_info":
            return httpx.Response(200, json={"state": "LIVE"})
        return httpx.Response(404, text="invalid path")


@pytest.fixture
def rds(tmp_path: Path) -> Path:
    (tmp_path / "rds").mkdir()
    return tmp_path / "rds" / "checkout.yaml"


@pytest.fixture
def envoy(rds: Path) -> FakeEnvoy:
    return FakeEnvoy(rds, set(CLUSTERS.values()))


def adapter(rds: Path, envoy: FakeEnvoy, **kwargs: Any) -> EnvoyAdapter:
    transport = httpx.MockTransport(envoy.handle)
    return EnvoyAdapter(envoy_route(rds), BACKENDS, transport=transport, **kwargs)


def test_it_is_a_traffic_adapter(rds: Path, envoy: FakeEnvoy) -> None:
    port: TrafficAdapter = adapter(rds, envoy)
    assert "checkout" in repr(port)


def test_set_get_verify_round_trip(rds: Path, envoy: FakeEnvoy) -> None:
    route = adapter(rds, envoy)
    route.set_weights({"v1": 95, "v2": 5})
    assert envoy.counters["update_success"] == 1
    assert route.get_weights() == {"v1": 95, "v2": 5}
    assert route.verify({"v1": 95, "v2": 5}) is Verification.VERIFIED
    assert route.verify({"v1": 90, "v2": 10}) is Verification.PENDING
    assert rds.read_text() == render(envoy_route(rds), {"v1": 95, "v2": 5})


def test_setting_the_weights_envoy_serves_again_writes_nothing(rds: Path, envoy: FakeEnvoy) -> None:
    route = adapter(rds, envoy)
    route.set_weights({"v1": 75, "v2": 25})
    inode = rds.stat().st_ino
    route.set_weights({"v2": 25, "v1": 75})
    assert rds.stat().st_ino == inode
    assert envoy.counters["update_success"] == 1


def test_when_envoy_is_down_nothing_is_written(rds: Path, envoy: FakeEnvoy) -> None:
    route = adapter(rds, envoy)
    route.set_weights({"v1": 80, "v2": 20})
    before = rds.read_bytes(), rds.stat().st_ino
    envoy.down = True
    with pytest.raises(TransientTrafficError, match="nothing was written"):
        route.set_weights({"v1": 20, "v2": 80})
    assert (rds.read_bytes(), rds.stat().st_ino) == before
    with pytest.raises(TransientTrafficError, match="cannot reach"):
        route.verify({"v1": 80, "v2": 20})


def test_a_rejected_update_restores_the_file_and_is_permanent(rds: Path, envoy: FakeEnvoy) -> None:
    route = adapter(rds, envoy)
    route.set_weights({"v1": 80, "v2": 20})
    before = rds.read_text()
    envoy.clusters.discard("checkout_v2")
    with pytest.raises(PermanentTrafficError, match="rejected") as raised:
        route.set_weights({"v1": 20, "v2": 80})
    assert "{'v1': 80, 'v2': 20}" in str(raised.value)  # what Envoy keeps serving
    assert rds.read_text() == before
    assert route.get_weights() == {"v1": 80, "v2": 20}
    assert route.inspect().agree


def test_a_first_file_envoy_rejects_is_removed(rds: Path, envoy: FakeEnvoy) -> None:
    envoy.clusters = {"checkout_v1"}
    route = adapter(rds, envoy)
    with pytest.raises(PermanentTrafficError, match="was removed"):
        route.set_weights({"v1": 80, "v2": 20})
    assert not rds.exists()


def test_no_verdict_from_envoy_in_time_is_transient(rds: Path, envoy: FakeEnvoy) -> None:
    route = adapter(rds, envoy, timeout=0.05)
    envoy.deaf = True
    with pytest.raises(TransientTrafficError, match="may still take them"):
        route.set_weights({"v1": 80, "v2": 20})
    assert parse(envoy_route(rds), rds.read_text()) == {"v1": 80, "v2": 20}


def test_an_envoy_without_the_route_configuration_is_a_permanent_error(
    rds: Path, envoy: FakeEnvoy
) -> None:
    envoy.listens_for = "something_else"
    envoy.counters = {}  # no rds.checkout.* stats: no listener subscribed to it
    route = adapter(rds, envoy)
    with pytest.raises(PermanentTrafficError, match="no RDS subscription"):
        route.set_weights({"v1": 80, "v2": 20})
    assert not rds.exists()


def test_an_admin_url_that_is_not_envoy_is_a_permanent_error(rds: Path) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(404, text="not found"))
    route = EnvoyAdapter(envoy_route(rds), BACKENDS, transport=transport)
    with pytest.raises(PermanentTrafficError, match="is it Envoy's admin API"):
        route.set_weights({"v1": 80, "v2": 20})
    assert not rds.exists()


def test_invalid_weights_change_nothing(rds: Path, envoy: FakeEnvoy) -> None:
    route = adapter(rds, envoy)
    with pytest.raises(WeightsError):
        route.set_weights({"v1": 50, "v2": 49})
    assert not rds.exists()
    assert envoy.requests == []


def test_get_weights_reports_what_envoy_serves_and_warns_when_the_file_differs(
    rds: Path, envoy: FakeEnvoy, caplog: pytest.LogCaptureFixture
) -> None:
    route = adapter(rds, envoy)
    route.set_weights({"v1": 80, "v2": 20})
    envoy.deaf = True  # a person edits the file; Envoy has not taken it
    rds.write_text(render(envoy_route(rds), {"v1": 10, "v2": 90}))
    with caplog.at_level(logging.WARNING, logger="trimtab.adapters.envoy"):
        assert route.get_weights() == {"v1": 80, "v2": 20}
        assert route.get_weights() == {"v1": 80, "v2": 20}
    (warning,) = caplog.records  # once, not at every cycle
    assert "Envoy serves {'v1': 80, 'v2': 20}" in warning.getMessage()
    assert "holds {'v1': 10, 'v2': 90}" in warning.getMessage()
    state = route.inspect()
    assert (state.served, state.held, state.agree) == (
        {"v1": 80, "v2": 20},
        {"v1": 10, "v2": 90},
        False,
    )


def test_get_weights_reads_the_file_while_envoy_is_down(rds: Path, envoy: FakeEnvoy) -> None:
    route = adapter(rds, envoy)
    route.set_weights({"v1": 80, "v2": 20})
    envoy.down = True
    assert route.get_weights() == {"v1": 80, "v2": 20}
    assert route.inspect().reachable is False


def test_a_route_with_no_routes_yet_starts_from_the_initial_weights(
    rds: Path, envoy: FakeEnvoy
) -> None:
    route = adapter(rds, envoy, initial=START)
    assert route.get_weights() == START
    assert envoy.config is not None  # written, and taken by Envoy
    assert route.verify(START) is Verification.VERIFIED


def test_a_dry_run_never_writes_the_initial_weights(rds: Path, envoy: FakeEnvoy) -> None:
    route = adapter(rds, envoy, initial=START, create=False)
    assert route.get_weights() == START
    assert not rds.exists()


def test_without_initial_weights_a_route_with_no_routes_is_a_permanent_error(
    rds: Path, envoy: FakeEnvoy
) -> None:
    with pytest.raises(PermanentTrafficError, match="say where traffic starts"):
        adapter(rds, envoy).get_weights()


def test_a_file_envoy_does_not_serve_is_a_permanent_error(rds: Path, envoy: FakeEnvoy) -> None:
    envoy.deaf = True
    rds.write_text(render(envoy_route(rds), {"v1": 80, "v2": 20}))
    with pytest.raises(PermanentTrafficError, match="serves no such route configuration"):
        adapter(rds, envoy, initial=START).get_weights()


def test_routes_envoy_serves_that_trimtab_cannot_read_are_a_permanent_error(
    rds: Path, envoy: FakeEnvoy
) -> None:
    envoy.config = route_config({"cluster": "someone_elses"})
    with pytest.raises(PermanentTrafficError, match="someone_elses"):
        adapter(rds, envoy).verify(START)


def test_a_symbolic_link_at_the_rds_path_is_never_written_through(
    rds: Path, envoy: FakeEnvoy, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere.yaml"
    target.write_text("keep")
    rds.symlink_to(target)
    with pytest.raises(PermanentTrafficError, match="symbolic link"):
        adapter(rds, envoy).set_weights({"v1": 80, "v2": 20})
    assert target.read_text() == "keep"


def test_a_missing_directory_is_a_permanent_error(tmp_path: Path) -> None:
    rds = tmp_path / "absent" / "checkout.yaml"
    with pytest.raises(PermanentTrafficError, match="does not exist"):
        adapter(rds, FakeEnvoy(rds, set(CLUSTERS.values()))).set_weights({"v1": 80, "v2": 20})


@pytest.fixture(autouse=True)
def _no_stray_temp_files(tmp_path: Path) -> Iterator[None]:
    yield
    assert not list(tmp_path.rglob("*.tmp"))
