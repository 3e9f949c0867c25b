"""Whatever the input, the loader returns a Config or raises ConfigError — never anything else.

Inputs: arbitrary text, text built from YAML tokens, valid files with a token spliced in, and
valid documents of every kind (trimtab, Sloth, OpenSLO) with one value replaced, one key removed
or one key added, the new values drawn from nested structures of odd scalars (NaN, infinities,
huge integers, dates, bytes, sets).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trimtab.slo import Config, ConfigError, load_text

API = "trimtab.dev/v1alpha1"

SLO: dict[str, Any] = {
    "apiVersion": API,
    "kind": "SLO",
    "metadata": {"name": "errors", "labels": {"team": "shop"}},
    "spec": {
        "service": "checkout",
        "objective": 99.9,
        "window": "30d",
        "backendLabel": "version",
        "indicator": {
            "errorRatio": {
                "errors": 'http_requests_total{service="{{service}}", code=~"5.."}',
                "total": 'http_requests_total{service="{{service}}"}',
            }
        },
        "health": {
            "degraded": {"burnRate": 6, "windows": ["5m", "30m"]},
            "unavailable": {"burnRate": 14.4, "windows": ["1m", "5m"]},
        },
        "minEvents": 50,
        "alerting": {"name": "CheckoutErrors", "page": {"labels": {"severity": "page"}}},
    },
}

QUANTILE_SLO: dict[str, Any] = {
    "apiVersion": API,
    "kind": "SLO",
    "metadata": {"name": "p95"},
    "spec": {
        "service": "checkout",
        "objective": 99,
        "backendLabel": "version",
        "indicator": {
            "quantile": {
                "histogram": "http_request_duration_seconds",
                "selector": '{service="{{service}}"}',
                "quantile": 0.95,
            }
        },
        "health": {
            "degraded": {"above": "250ms", "windows": ["5m"]},
            "unavailable": {"above": "1s", "windows": ["1m", "5m"]},
        },
    },
}

GAUGE_SLO: dict[str, Any] = {
    "apiVersion": API,
    "kind": "SLO",
    "metadata": {"name": "queue"},
    "spec": {
        "service": "checkout",
        "objective": 99,
        "backendLabel": "zone",
        "indicator": {"gauge": {"query": 'max by (zone) (queue_depth{service="{{service}}"})'}},
        "health": {"degraded": {"above": 100}, "unavailable": {"above": 500}},
    },
}

ROLLOUT: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Rollout",
    "metadata": {"name": "checkout"},
    "spec": {
        "slos": [{"name": "errors", "params": {"service": "checkout"}}],
        "stable": "v1",
        "canary": "v2",
        "route": {
            "envoy": {
                "rdsPath": "/etc/envoy/rds.yaml",
                "routeConfig": "checkout",
                "virtualHost": {"name": "checkout", "domains": ["*"]},
                "clusters": {"v1": "checkout_v1", "v2": "checkout_v2"},
            }
        },
        "steps": [{"weight": 5, "hold": "2m"}, {"weight": 50}, {"weight": 100}],
        "analysis": {"interval": "30s", "failureLimit": 2, "noData": {"rollbackAfter": "10m"}},
        "guardrails": {"maxStep": 25, "minInterval": "1m", "maxShiftsPerHour": 12},
    },
}

BALANCE: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Balance",
    "metadata": {"name": "zones"},
    "spec": {
        "slos": [{"name": "queue", "params": {"service": "checkout"}}],
        "backends": {"zone-a": 34, "zone-b": 33, "zone-c": 33},
        "route": {
            "haproxy": {
                "socket": "/run/haproxy.sock",
                "backend": "checkout",
                "servers": {"zone-a": ["a1"], "zone-b": ["b1"], "zone-c": ["c1"]},
            }
        },
        "drain": {"degraded": 50, "unavailable": 100},
        "restoreAfter": "5m",
        "guardrails": {"maxStep": 20, "minInterval": "1m", "maxDrain": 50},
    },
}

CONTROLLER: dict[str, Any] = {
    "apiVersion": API,
    "kind": "Controller",
    "spec": {
        "metrics": {"prometheus": {"url": "http://127.0.0.1:9090", "timeout": "10s"}},
        "stateDir": ".trimtab",
        "listen": "127.0.0.1:9464",
        "leaderElection": {"file": {}},
    },
}

SLOTH: dict[str, Any] = {
    "version": "prometheus/v1",
    "service": "myservice",
    "labels": {"owner": "myteam"},
    "slos": [
        {
            "name": "requests-availability",
            "objective": 99.9,
            "description": "availability",
            "sli": {
                "events": {
                    "error_query": 'sum(rate(http_requests_total{code=~"5.."}[{{.window}}]))',
                    "total_query": "sum(rate(http_requests_total[{{.window}}]))",
                }
            },
            "alerting": {
                "name": "MyServiceHighErrorRate",
                "labels": {"category": "availability"},
                "page_alert": {"labels": {"severity": "page"}},
                "ticket_alert": {"labels": {"severity": "slack"}},
            },
        }
    ],
}

OPENSLO: dict[str, Any] = {
    "apiVersion": "openslo/v1",
    "kind": "SLO",
    "metadata": {"name": "main-page", "displayName": "Main page availability"},
    "spec": {
        "description": "Our main page should be available",
        "service": "web-shop",
        "indicator": {
            "metadata": {"name": "response-code"},
            "spec": {
                "ratioMetric": {
                    "counter": True,
                    "good": {
                        "metricSource": {
                            "type": "Prometheus",
                            "spec": {"query": 'http_requests_total{code=~"2.."}'},
                        }
                    },
                    "total": {
                        "metricSource": {
                            "type": "Prometheus",
                            "spec": {"query": "http_requests_total"},
                        }
                    },
                }
            },
        },
        "timeWindow": [{"duration": "28d", "isRolling": True}],
        "budgetingMethod": "Occurrences",
        "objectives": [{"displayName": "Good", "target": 0.99}],
    },
}

# (documents loaded together, index of the one to mutate). SLOs come along so that references
# resolve and the cross-document checks run on the mutated Rollout or Balance.
SKELETONS: dict[str, tuple[list[dict[str, Any]], int]] = {
    "slo": ([SLO], 0),
    "quantile-slo": ([QUANTILE_SLO], 0),
    "gauge-slo": ([GAUGE_SLO], 0),
    "rollout": ([SLO, ROLLOUT], 1),
    "balance": ([GAUGE_SLO, BALANCE], 1),
    "controller": ([CONTROLLER], 0),
    "sloth": ([SLOTH], 0),
    "openslo": ([OPENSLO], 0),
}


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keys(item)


KNOWN_KEYS = sorted({key for documents, _ in SKELETONS.values() for key in _keys(documents)})

# fmt: off
ODD_STRINGS = [
    "5m", "30d", "0s", "-5m", "1h30m", "250ms", "1e309", "99.9", "", "~", "v1", "{{service}}",
    "{{window}}", 'a{b="c"}', "a;} server evil:80", "x\ny", "envoy", "SLO", API,
]
# fmt: on

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),  # NaN and ±inf included
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
    st.datetimes(min_value=dt.datetime(1, 1, 1), timezones=st.sampled_from([None, dt.UTC])),
    st.dates(),
    st.binary(max_size=6),
)
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8), st.integers(-3, 3))
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS, children, max_size=4),
        st.sets(st.integers(0, 5), max_size=3),
    ),
    max_leaves=12,
)

# fmt: off
TOKENS = [
    "apiVersion: ", "trimtab.dev/v1alpha1", "kind: ", "SLO", "Rollout", "spec:", "metadata:",
    "name: ", "version: prometheus/v1", "openslo/v1", "\n", "\n  ", "\n    ", "  ", "- ", "---\n",
    "...\n", "{", "}", "[", "]", ": ", ":", ", ", "'", '"', "\\", "&a ", "*a", "!!python/object ",
    "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!foo ", "<<: ", "? ", "|\n", ">-\n", "# c",
    "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "2001-12-14t21:59:43.10-05:00", "1e309", "0x1F",
    "0o17", ".nan", ".inf", "-.inf", "~", "null", "yes", "\t", "\x00", "\ufeff", "\r", "\x85",
    "\u2028", "99.9", "5m", "{{service}}", "é", "\U0001f600",
]
# fmt: on
YAMLISH = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


def _dump(documents: list[Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


def _similar(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int | float):
        return st.one_of(
            st.integers(-2, 102),
            st.floats(-1, 1000),
            st.sampled_from([0, 1, 99, 100, 0.5, 1e-9, float("nan"), float("inf")]),
        )
    if isinstance(value, str):
        return st.one_of(
            st.sampled_from(["", "0s", "1m", "5m", "30m", "1s", "v1", "v2", "zone-a", "x", value]),
            st.text(max_size=8).map(lambda extra: value + extra),
            st.text(max_size=8),
        )
    if isinstance(value, list):
        return st.permutations(value) | st.just(value[:-1]) | st.just(value + value[-1:])
    return VALUES


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(SKELETONS)))
    documents, index = SKELETONS[name]
    documents = copy.deepcopy(documents)
    target = documents[index]
    path = draw(st.sampled_from([p for p in _paths(target) if p]))
    parent = _parent(target, path)
    action = draw(st.sampled_from(["tweak", "tweak", "replace", "remove", "add"]))
    if action == "tweak":
        # A value of the same type, so that the document gets past the shape checks and into
        # the rules relating fields and documents.
        parent[path[-1]] = draw(_similar(parent[path[-1]]))
    elif action == "replace" or (action == "remove" and isinstance(parent, list)):
        parent[path[-1]] = draw(VALUES)
    elif action == "remove":
        del parent[path[-1]]
    else:
        holder = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
        if isinstance(holder, dict):
            holder[draw(KEYS)] = draw(VALUES)
        else:
            holder.append(draw(VALUES))
    return _dump(documents)


def _assert_config_or_config_error(text: str) -> None:
    try:
        config = load_text(text, "fuzz.yaml")
    except ConfigError as error:
        breaks = sum(text.count(c) for c in ("\n", "\r", "\x85", "\u2028", "\u2029"))
        for problem in error.problems:
            assert problem.file == "fuzz.yaml"
            assert 1 <= problem.line <= breaks + 2, problem
            assert problem.column >= 1, problem
            assert problem.message, problem
        return
    assert isinstance(config, Config)


FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_every_skeleton_is_valid_as_it_stands() -> None:
    # Mutations only reach deep checks when the rest of the document is right.
    for name, (documents, _) in SKELETONS.items():
        config = load_text(_dump(documents), f"{name}.yaml")
        assert config.slos or config.controller is not None, name


@FUZZ
@given(st.text())
def test_arbitrary_text(text: str) -> None:
    _assert_config_or_config_error(text)


@FUZZ
@given(YAMLISH)
def test_yaml_tokens(text: str) -> None:
    _assert_config_or_config_error(text)


@FUZZ
@given(st.sampled_from(sorted(SKELETONS)), st.data())
def test_valid_file_with_a_token_spliced_in(name: str, data: st.DataObject) -> None:
    text = _dump(SKELETONS[name][0])
    at = data.draw(st.integers(0, len(text)))
    token = data.draw(st.sampled_from(TOKENS))
    _assert_config_or_config_error(text[:at] + token + text[at:])


@FUZZ
@given(st.sampled_from(["SLO", "Rollout", "Balance", "Controller", "Other"]), VALUES)
def test_arbitrary_spec_under_every_kind(kind: str, spec: Any) -> None:
    document = {"apiVersion": API, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    _assert_config_or_config_error(_dump([SLO, document]))


@FUZZ
@given(VALUES, VALUES)
def test_arbitrary_sloth_and_openslo_bodies(slos: Any, spec: Any) -> None:
    sloth = {"version": "prometheus/v1", "service": "x", "slos": slos}
    openslo = {"apiVersion": "openslo/v1", "kind": "SLO", "metadata": {"name": "x"}, "spec": spec}
    _assert_config_or_config_error(_dump([sloth]))
    _assert_config_or_config_error(_dump([openslo]))


@FUZZ
@given(VALUES)
def test_arbitrary_document(document: Any) -> None:
    _assert_config_or_config_error(_dump([document]))


@settings(FUZZ, max_examples=1000)
@given(mutated_documents())
def test_valid_documents_with_one_thing_changed(text: str) -> None:
    _assert_config_or_config_error(text)
