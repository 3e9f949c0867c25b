"""Batching: queries grow with distinct indicators, not targets; answers split back exactly."""

from __future__ import annotations

import math
from typing import Any

import pytest
from trimtab.slo import batching, load_text
from trimtab.slo.batching import Assembly, Query, assemble, plan_queries
from trimtab.slo.health import Level, health_windows
from trimtab.slo.ports import SeriesRequest
from trimtab.slo.promql import Counting, exact_params, membership

CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99.9
  backendLabel: version
  minEvents: 10
  indicator:
    errorRatio:
      errors: http_requests_total{service="{{service}}", code=~"5.."}
      total: http_requests_total{service="{{service}}"}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors-strict}
spec:
  service: shop
  objective: 99.99
  backendLabel: version
  minEvents: 10
  indicator:
    errorRatio:
      errors: http_requests_total{service="{{service}}", code=~"5.."}
      total: http_requests_total{service="{{service}}"}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: queue}
spec:
  service: shop
  backendLabel: zone
  indicator:
    gauge: {query: 'max by (zone) (queue_depth{service="{{service}}"})'}
  health:
    degraded: {above: 10}
    unavailable: {above: 50}
""",
    "batching.yaml",
)
ERRORS, STRICT, QUEUE = (CONFIG.slos[n] for n in ("errors", "errors-strict", "queue"))


def request(slo_name: str, service: str) -> SeriesRequest:
    slo = CONFIG.slos[slo_name]
    return SeriesRequest.of(
        f"Rollout/{service}", slo, {"service": service}, health_windows(slo.spec)
    )


def test_many_targets_of_one_indicator_share_one_query_per_window_and_field() -> None:
    requests = [request("errors", f"svc{i}") for i in range(50)]
    queries = plan_queries(requests)
    windows = len(health_windows(ERRORS.spec))
    assert len(queries) == windows * 2  # per window, the errors and all requests, counted
    assert {q.field for q in queries} == {"counted", "events"}
    counted = next(q for q in queries if q.field == "counted")
    assert "increase(http_requests_total{" in counted.promql
    assert 'code=~"5.."' in counted.promql
    assert all(len(q.members) == 50 for q in queries)


def test_slos_sharing_an_indicator_share_its_queries() -> None:
    queries = plan_queries([request("errors", "a"), request("errors-strict", "b")])
    assert len(queries) == len(health_windows(ERRORS.spec)) * 2


def test_batched_values_merge_into_one_regex_matcher() -> None:
    queries = plan_queries([request("errors", "cart"), request("errors", "checkout")])
    assert 'service=~"(?:cart|checkout)"' in queries[0].promql
    assert "by (version, service)" in queries[0].promql


def test_a_query_that_would_list_past_max_length_is_generic() -> None:
    requests = [request("errors", f"svc{i}") for i in range(5)]
    listed = plan_queries(requests)
    assert all(q.params == {"service": tuple(f"svc{i}" for i in range(5))} for q in listed)
    longest = max(len(q.promql) for q in listed)
    assert plan_queries(requests, max_length=longest) == listed
    budget = longest - 1  # the longest query becomes generic; the others stay listed
    planned = plan_queries(requests, max_length=budget)
    assert [q.params is None for q in planned] == [len(q.promql) > budget for q in listed]
    assert all('service=~".+"' in q.promql for q in planned if q.params is None)
    # A batch whose values alone pass the budget is not built to find out.
    assert all(q.params is None for q in plan_queries(requests, max_length=5 * 4))


def test_a_listed_querys_length_counts_its_bytes() -> None:
    """VictoriaMetrics counts bytes: a value beyond ASCII takes more than its characters."""
    requests = [request("errors", "zürich"), request("errors", "genève")]
    listed = plan_queries(requests)
    assert all(q.params is not None for q in listed)
    chars = max(len(q.promql) for q in listed)
    planned = plan_queries(requests, max_length=chars)
    assert [q.params is None for q in planned] == [len(q.promql.encode()) > chars for q in listed]
    assert any(q.params is None for q in planned)  # the longest, at least
    assert plan_queries(requests, max_length=max(len(q.promql.encode()) for q in listed)) == listed


def test_a_query_lists_the_values_of_many_targets() -> None:
    """Up to MAX_QUERY_LENGTH: a query for 1,000 of many services asks for theirs, not all."""
    requests = [request("errors", f"svc{i:04}") for i in range(1000)]
    queries = plan_queries(requests)
    assert all(q.params is not None and len(q.params["service"]) == 1000 for q in queries)
    assert all(len(q.promql) <= batching.MAX_QUERY_LENGTH for q in queries)
    longer = [*requests, request("errors", "x" * 9000)]  # 17,000 characters of values
    assert all(q.params is None for q in plan_queries(longer))


def test_full_queries_with_placeholders_are_sent_once_per_params() -> None:
    queries = plan_queries([request("queue", "a"), request("queue", "b")])
    assert len(queries) == 2
    assert {q.promql.count('service="a"') + q.promql.count('service="b"') for q in queries} == {1}


def _answer(query: Query) -> list[tuple[dict[str, str], float]]:
    """600 requests per window; the error ratio, or the errors among them."""
    assert query.field in ("events", "counted")  # an error ratio comes as two counts
    rows = []
    for service, bad in (("cart", 0.5), ("checkout", 0.0001)):
        for version, share in (("v1", 0.0001), ("v2", bad)):
            labels = {"service": service, "version": version}
            rows.append((labels, 600.0 if query.field == "events" else share * 600.0))
    return rows


def test_answers_split_back_per_target_and_backend() -> None:
    requests = [request("errors", "cart"), request("errors", "checkout")]
    queries = plan_queries(requests)
    measurements = assemble(requests, [(q, _answer(q)) for q in queries])
    cart, checkout = (measurements[r] for r in requests)
    assert cart.health("v2").level is Level.UNAVAILABLE
    assert cart.health("v1").level is Level.HEALTHY
    assert checkout.health("v2").level is Level.HEALTHY
    assert cart.windows("v2")[300.0].value == pytest.approx(0.5)
    assert cart.windows("v2")[300.0].events == 600.0


def test_the_queries_of_one_slo_share_one_index_of_its_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plan asks an SLO's windows and counts one after another, for the same targets: their
    index is built once (at 10,000 targets, 9 indexes a cycle became 3)."""
    requests = [request("errors", s) for s in ("cart", "checkout", "search")]
    queries = plan_queries(requests, max_length=1)  # generic: the split picks the targets
    assert len(queries) == 2 * len(health_windows(ERRORS.spec))  # counted and events
    looked_up: list[object] = []
    plain_values = batching._plain_values

    def counted(*args: Any) -> Any:
        looked_up.append(args)
        return plain_values(*args)

    monkeypatch.setattr(batching, "_plain_values", counted)
    measurements = assemble(requests, [(q, _answer(q)) for q in queries])
    assert len(looked_up) == len(requests)  # once per target, not once per query
    assert measurements[requests[0]].health("v2").level is Level.UNAVAILABLE
    assert measurements[requests[1]].health("v2").level is Level.HEALTHY


@pytest.mark.parametrize(
    ("names", "params", "values"),
    [
        (("service",), (("service", "cart"),), ("cart",)),
        (("service",), (("env", "prod"), ("service", "cart")), ("cart",)),
        (("service",), (("env", "prod"),), None),
        (("env", "service"), (("env", "prod"), ("service", "cart")), ("prod", "cart")),
        (("service", "env"), (("env", "prod"), ("service", "cart")), ("cart", "prod")),
        (("env", "service"), (("service", "cart"),), None),
        ((), (("service", "cart"),), ()),
    ],
)
def test_a_targets_index_key_is_its_values_of_the_exact_params(
    names: tuple[str, ...], params: tuple[tuple[str, str], ...], values: tuple[str, ...] | None
) -> None:
    """In the names' order, one or several; none when one is missing."""
    assert batching._plain_values(names, params) == values


def test_a_results_backend_is_read_from_the_table_once(table_reads: list[int]) -> None:
    """A cycle reads a result's backend to judge it, and again for the baseline test: its
    measurements are made once per result and backend."""
    cart = request("errors", "cart")
    result = assemble([cart], [(q, _answer(q)) for q in plan_queries([cart])])[cart]
    judged = result.health("v2")
    assert result.judged("v2") is result.windows("v2")
    assert result.health("v2") == judged
    result.health("v1")
    assert len(table_reads) == 2  # one per backend
    assert result.windows("v3") == {}


def test_the_results_are_a_mapping_of_every_request_made_when_asked() -> None:
    cart, checkout = request("errors", "cart"), request("errors", "checkout")
    queries = plan_queries([cart, checkout])
    results = assemble([cart, checkout], [(q, _answer(q)) for q in queries]).results
    assert list(results) == [cart.key, checkout.key]
    assert len(results) == 2
    assert cart.key in results
    assert ("Rollout/none", "errors") not in results
    assert results[cart.key].windows("v2")[300.0].value == pytest.approx(0.5)
    assert results[cart.key] == results[cart.key]  # made again, alike
    assert set(results[checkout.key].backends) == {"v1", "v2"}
    with pytest.raises(KeyError):
        results[("Rollout/none", "errors")]


def test_a_failed_query_makes_its_windows_unknown_with_the_reason() -> None:
    requests = [request("errors", "cart")]
    queries = plan_queries(requests)
    answers = [(q, "HTTP 500" if q.window == 300.0 else _answer(q)) for q in queries]
    health = assemble(requests, answers)[requests[0]].health("v1")
    assert health.level is Level.UNKNOWN
    assert health.error == "HTTP 500"


def test_an_answer_that_fails_after_some_of_it_was_split_leaves_none_of_its_values() -> None:
    """A source splits an answer as it decodes it; one found broken midway fails as a whole,
    and only its own field and window: the other queries' numbers stay."""
    requests = [request("errors", "cart")]
    queries = plan_queries(requests)
    assembly = Assembly(requests)
    for q in queries:
        split = assembly.split(q)
        for labels, value in _answer(q):
            split.add(labels, value)
        if q.window == 300.0 and q.field == "counted":
            split.fail("Prometheus answered a malformed vector")
    result = assembly.measurements()[requests[0]]
    five_minutes = result.windows("v1")[300.0]
    assert five_minutes.value is None  # taken back
    assert five_minutes.events == 600.0  # another query's
    assert result.errors == {300.0: "Prometheus answered a malformed vector"}
    assert all(w.value is not None for window, w in result.windows("v2").items() if window != 300.0)
    assert result.health("v1").level is Level.UNKNOWN


def test_a_backend_missing_from_the_answer_is_unknown_and_others_are_judged() -> None:
    requests = [request("errors", "cart")]
    queries = plan_queries(requests)
    answers = [(q, [row for row in _answer(q) if row[0]["version"] != "v2"]) for q in queries]
    result = assemble(requests, answers)[requests[0]]
    assert result.health("v2").level is Level.UNKNOWN
    assert result.health("v1").level is Level.HEALTHY


def test_two_series_for_one_backend_are_ambiguous_and_unknown() -> None:
    requests = [request("queue", "a")]
    queries = plan_queries(requests)
    rows = [({"zone": "z1", "pod": "p1"}, 1.0), ({"zone": "z1", "pod": "p2"}, 2.0)]
    result = assemble(requests, [(q, rows) for q in queries])[requests[0]]
    health = result.health("z1")
    assert health.level is Level.UNKNOWN
    assert health.error is not None
    assert "several series" in health.error


def test_an_unanswered_request_reports_the_source_error() -> None:
    measurements = assemble([], [], source_error="connection refused")
    result = measurements[request("errors", "cart")]
    assert result.health("v1").level is Level.UNKNOWN
    assert result.error == "connection refused"


@pytest.mark.parametrize(
    "query",
    [
        'queue_depth{service="{{service}}"}',
        'sum by (zone, service) (queue_depth{service="{{service}}"})',
    ],
)
def test_a_gauge_that_keeps_the_placeholder_label_is_batched(query: str) -> None:
    gauge = load_text(
        f"""
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {{name: queue}}
spec:
  service: shop
  backendLabel: zone
  indicator: {{gauge: {{query: '{query}'}}}}
  health: {{degraded: {{above: 10}}, unavailable: {{above: 50}}}}
""",
        "gauge.yaml",
    ).slos["queue"]
    requests = [
        SeriesRequest.of(f"Balance/{s}", gauge, {"service": s}, health_windows(gauge.spec))
        for s in ("a", "b")
    ]
    queries = plan_queries(requests)
    assert len(queries) == 1
    assert 'service=~"(?:a|b)"' in queries[0].promql
    assert "by (zone, service)" in queries[0].promql
    rows = [({"zone": "z1", "service": "a"}, 60.0), ({"zone": "z1", "service": "b"}, 1.0)]
    measurements = assemble(requests, [(queries[0], rows)])
    assert measurements[requests[0]].health("z1").level is Level.UNAVAILABLE
    assert measurements[requests[1]].health("z1").level is Level.HEALTHY


@pytest.mark.parametrize(
    ("matchers", "names"),
    [
        ((("service", "=", "{{service}}"),), ("service",)),
        ((("service", "=", "{{ service }}"),), ("service",)),
        ((("b", "=", "{{y}}"), ("a", "=", "{{x}}")), ("x", "y")),  # in the labels' order
        ((("s", "=", "{{s}}"), ("s", "=", "{{s}}")), ("s",)),  # an error ratio's two selectors
        ((), ()),
        ((("service", "=", "{{service}}-api"),), None),
        ((("service", "=~", "{{service}}"),), None),
        ((("a", "=", "{{x}}"), ("a", "=", "{{y}}")), None),
    ],
)
def test_exact_params_are_the_names_of_whole_placeholders_on_labels_of_their_own(
    matchers: tuple[tuple[str, str, str], ...], names: tuple[str, ...] | None
) -> None:
    assert exact_params(matchers) == names
    if names is not None:  # what the membership would have expected of a series
        params = {name: f"value-of-{name}" for name in names}
        assert membership(matchers, params).values == tuple(params[n] for n in names)


def test_a_placeholder_in_a_pattern_still_decides_which_series_belong() -> None:
    slo = load_text(
        """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: pods}
spec:
  service: shop
  backendLabel: version
  indicator:
    gauge: {query: 'queue_depth{service="{{service}}", pod=~"{{service}}-.+"}'}
  health: {degraded: {above: 10}, unavailable: {above: 50}}
""",
        "pods.yaml",
    ).slos["pods"]
    requests = [
        SeriesRequest.of(f"Balance/{s}", slo, {"service": s}, health_windows(slo.spec))
        for s in ("a", "b")
    ]
    (query,) = plan_queries(requests)
    rows = [
        ({"version": "v1", "service": "a", "pod": "a-1"}, 60.0),
        ({"version": "v1", "service": "b", "pod": "elsewhere"}, 60.0),  # not b's pattern
        ({"version": "v1", "service": "b", "pod": "b-1"}, 1.0),
    ]
    measurements = assemble(requests, [(query, rows)])
    assert measurements[requests[0]].health("v1").level is Level.UNAVAILABLE
    assert measurements[requests[1]].health("v1").level is Level.HEALTHY


@pytest.mark.parametrize(
    ("bad", "absent_is_zero", "counted", "events", "ratio"),
    [
        (True, True, 6.0, 600.0, 0.01),
        (True, True, None, 600.0, 0.0),  # errors: (counted or 0 * total) / total
        (False, True, 594.0, 600.0, 0.01),  # good requests: 1 - share
        (False, True, None, 600.0, 1.0),
        (False, False, None, 600.0, None),  # latency: no bucket at the threshold, no ratio
        (True, True, 0.0, 0.0, math.nan),  # PromQL's 0/0
        (True, True, 3.0, 0.0, math.inf),
    ],
)
def test_counts_make_the_ratio_the_ratio_query_makes(
    bad: bool, absent_is_zero: bool, counted: float | None, events: float, ratio: float | None
) -> None:
    got = Counting(bad, absent_is_zero).ratio(counted, events)
    if ratio is None or got is None:
        assert got is ratio
    elif math.isnan(ratio):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(ratio)
