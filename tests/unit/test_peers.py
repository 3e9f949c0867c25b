"""Sloth and OpenSLO files read as they are, and converted to trimtab YAML that reads back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from trimtab.slo.errors import ConfigError
from trimtab.slo.loader import load_text
from trimtab.slo.models import SLO
from trimtab.slo.peers import is_peer_document, read_peer, read_peers, render_trimtab_yaml
from trimtab.slo.promql import compile_sli
from trimtab.slo.yamlsource import read_documents

REPO = Path(__file__).resolve().parents[2]
PEER_SPECS = REPO.parent / "shared" / "peer-specs"  # shared/ sits beside the clone
DAY = 86400.0

# file → [(name, objective %, window seconds, indicator kind)], in file order.
EXPECTED: dict[str, list[tuple[str, float, float, str]]] = {
    "sloth/getting-started.yml": [("myservice-requests-availability", 99.9, 30 * DAY, "events")],
    "sloth/home-wifi.yml": [
        ("home-wifi-good-wifi-client-satisfaction", 95, 30 * DAY, "events"),
        ("home-wifi-risk-wifi-client-satisfaction", 99.9, 30 * DAY, "events"),
    ],
    "sloth/kubernetes-apiserver.yml": [
        ("k8s-apiserver-requests-availability", 99.9, 30 * DAY, "events"),
        ("k8s-apiserver-requests-latency", 99, 30 * DAY, "events"),
    ],
    "sloth/multifile.yml": [
        ("myservice-requests-availability", 99.9, 30 * DAY, "events"),
        ("myservice2-requests-availability", 99.99, 30 * DAY, "events"),
    ],
    "sloth/no-alerts.yml": [("myapp-http-availability", 99.99, 30 * DAY, "events")],
    "sloth/raw-home-wifi.yml": [("home-wifi-wifi-client-satisfaction", 95, 30 * DAY, "raw")],
    "sloth/openslo-getting-started.yml": [("sloth-slo-my-service", 99.9, 30 * DAY, "events")],
    "sloth/openslo-kubernetes-apiserver.yml": [
        ("requests-availability-openslo", 99.9, 30 * DAY, "events"),
        ("requests-latency-openslo", 99, 30 * DAY, "events"),
        ("requests-latency-openslo-1", 99.9, 30 * DAY, "events"),
    ],
    "openslo/budgeting-method/occurences-slo.yaml": [("search-slo", 99, 14 * DAY, "raw")],
    "openslo/budgeting-method/ratio-timeslices.yaml": [("main-page", 99, 14 * DAY, "raw")],
    "openslo/budgeting-method/timeslices-slo.yaml": [
        ("service-availability", 99.5, 60, "raw"),  # "1m" is a minute in OpenSLO
        ("service-availability-1", 99, 60, "raw"),
    ],
    "openslo/treat-low-traffic-as-equally-important/timeslices-slo.yaml": [
        ("service-availability", 99.95, 7 * DAY, "raw")
    ],
}


def read_file(relative: str) -> list[SLO]:
    path = PEER_SPECS / relative
    return [slo for doc in read_documents(path.read_text(), str(path)) for slo in read_peer(doc)]


def read_text(text: str, file: str = "peer.yml") -> list[SLO]:
    return read_peers(read_documents(text, file))


def problems_of(text: str, file: str = "peer.yml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        read_text(text, file)
    return [str(p) for p in caught.value.problems]


def test_every_peer_spec_file_is_covered() -> None:
    found = {
        str(p.relative_to(PEER_SPECS))
        for p in PEER_SPECS.rglob("*.y*ml")
        if "_gen" not in p.relative_to(PEER_SPECS).parts
    }
    assert found == set(EXPECTED), f"peer specs not found or not covered under {PEER_SPECS}"


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_peer_spec_reads_into_the_expected_slos(relative: str) -> None:
    slos = read_file(relative)
    got = [(s.metadata.name, s.spec.objective, s.spec.window, s.spec.indicator.kind) for s in slos]
    assert got == EXPECTED[relative]
    for slo in slos:
        assert slo.spec.backend_label is None
        assert slo.spec.min_events == 50  # trimtab's default, untouched


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_rendered_yaml_reads_back_to_equal_models(relative: str) -> None:
    slos = read_file(relative)
    text = render_trimtab_yaml(slos)
    back = [SLO.model_validate(doc.data) for doc in read_documents(text, "converted.yml")]
    assert back == slos
    loaded = load_text(text, "converted.yml")  # through the loader and its checks, too
    assert [loaded.slos[s.metadata.name] for s in slos] == slos


def test_sloth_getting_started_maps_every_field() -> None:
    (slo,) = read_file("sloth/getting-started.yml")
    assert slo.spec.service == "myservice"
    assert slo.spec.description == "Common SLO based on availability for HTTP request responses."
    events = slo.spec.indicator.events
    assert events is not None
    assert events.error_query == (
        'sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}'
        "[{{window}}]))"
    )
    assert events.total_query == (
        'sum(rate(http_request_duration_seconds_count{job="myservice"}[{{window}}]))'
    )
    assert slo.spec.labels == {"owner": "myteam", "repo": "myorg/myservice", "tier": "2"}
    alerting = slo.spec.alerting
    assert alerting.name == "MyServiceHighErrorRate"
    assert alerting.labels == {"category": "availability"}
    assert alerting.annotations == {"summary": "High error rate on 'myservice' requests responses"}
    assert alerting.page.labels == {"severity": "pageteam", "routing_key": "myteam"}
    assert alerting.ticket.labels == {"severity": "slack", "slack_channel": "#alerts-myteam"}
    assert not alerting.page.disable


def test_sloth_slo_labels_join_the_spec_labels() -> None:
    availability, latency = read_file("sloth/kubernetes-apiserver.yml")
    assert latency.spec.labels == {
        "cluster": "valhalla",
        "component": "kubernetes",
        "category": "latency",
    }
    assert availability.spec.labels["category"] == "availability"
    events = latency.spec.indicator.events
    assert events is not None
    assert events.error_query is not None
    assert events.error_query.count("{{window}}") == 2
    assert "{{.window}}" not in events.error_query


def test_sloth_disabled_alerts_stay_disabled() -> None:
    (slo,) = read_file("sloth/no-alerts.yml")
    assert slo.spec.alerting.page.disable
    assert slo.spec.alerting.ticket.disable
    assert slo.spec.alerting.name is None


def test_sloth_raw_sli_becomes_a_raw_indicator() -> None:
    (slo,) = read_file("sloth/raw-home-wifi.yml")
    raw = slo.spec.indicator.raw
    assert raw is not None
    assert raw.error_ratio_query.startswith("1 - (\n")
    assert "sum(sum_over_time(unifipoller_client_satisfaction_ratio[{{window}}]))" in (
        raw.error_ratio_query
    )


def test_openslo_threshold_metric_is_the_share_of_bad_samples() -> None:
    (slo,) = read_file("openslo/budgeting-method/occurences-slo.yaml")
    assert slo.metadata.display_name == "Searching time: Good experience"
    assert slo.spec.service == "web-shop"
    assert slo.spec.indicator.raw is not None
    assert slo.spec.indicator.raw.error_ratio_query == (
        "1 - avg(avg_over_time(((Any) < bool 500)[{{window}}:]))"
    )


def test_openslo_timeslices_count_bad_slices_and_note_the_calendar_window() -> None:
    internal, sla = read_file("openslo/budgeting-method/timeslices-slo.yaml")
    share = "(sum(rate(Any[1m]))) / (sum(rate(Any[1m])))"
    assert internal.spec.indicator.raw is not None
    assert internal.spec.indicator.raw.error_ratio_query == (
        f"1 - avg_over_time(((({share}) >= 0) > bool 0.99)[{{{{window}}}}:1m])"
    )
    assert sla.spec.indicator.raw is not None  # no op: the slice ratio must reach the target
    assert sla.spec.indicator.raw.error_ratio_query == (
        f"1 - avg_over_time(((({share}) >= 0) >= bool 0.99)[{{{{window}}}}:1m])"
    )
    assert internal.metadata.annotations == {
        "trimtab.dev/approximation": "calendar-aligned time window read as a rolling 1m window"
    }


def test_openslo_ratio_timeslices_average_the_slice_ratios() -> None:
    (slo,) = read_file("openslo/budgeting-method/ratio-timeslices.yaml")
    assert slo.spec.indicator.raw is not None
    assert slo.spec.indicator.raw.error_ratio_query == (
        "1 - avg_over_time((((sum(rate(Any[1m]))) / (sum(rate(Any[1m])))) >= 0)[{{window}}:1m])"
    )
    assert slo.metadata.annotations == {}  # a rolling window is no approximation


def test_openslo_v1alpha_ratio_metrics_read_like_sloth_reads_them() -> None:
    (slo,) = read_file("sloth/openslo-getting-started.yml")
    events = slo.spec.indicator.events
    assert events is not None
    assert events.good_query == (
        'sum(rate(http_request_duration_seconds_count{job="myservice",code!~"(5..|429)"}'
        "[{{window}}]))"
    )
    assert events.error_query is None
    assert slo.metadata.display_name == "Requests Availability"
    assert slo.spec.service == "my-service"


def test_rendered_yaml_is_trimtab_format_with_literal_blocks() -> None:
    slos = read_file("sloth/kubernetes-apiserver.yml")
    text = render_trimtab_yaml(slos)
    documents = text.split("---\n")
    assert len(documents) == 2
    assert documents[1].startswith(
        "apiVersion: trimtab.dev/v1alpha1\nkind: SLO\nmetadata:\n"
        "  name: k8s-apiserver-requests-latency\nspec:\n  service: k8s-apiserver\n"
    )
    assert "      errorQuery: |\n        (\n" in documents[1]
    assert "  window: 30d\n" in documents[1]  # the window is always written
    assert "minEvents" not in text  # defaults are not
    assert "page:\n      labels:\n        severity: critical\n" in documents[1]


SLOTH = """\
version: "prometheus/v1"
service: "myservice"
labels:
  owner: "myteam"
slos:
  - name: "requests-availability"
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(http_requests_total{code=~"5.."}[{{.window}}]))
        total_query: sum(rate(http_requests_total[{{.window}}]))
"""


def test_unknown_key_in_a_sloth_spec_names_its_line_and_the_expected_keys() -> None:
    text = SLOTH.replace("    objective: 99.9\n", "    objective: 99.9\n    objectve: 99\n")
    assert problems_of(text, "sloth.yml") == [
        "sloth.yml:8:5: slos[0].objectve: unknown key 'objectve'; expected one of: name, "
        "description, objective, labels, infoLabels, sli, alerting, interval"
    ]


def test_every_problem_in_a_sloth_spec_is_reported_at_once() -> None:
    text = SLOTH.replace('  owner: "myteam"', '  owner: "myteam"\n  bad-label: "x"') + (
        "  - name: plugged\n"
        "    objective: 99\n"
        "    sli:\n"
        "      plugin: {id: sloth-common/availability}\n"
        "  - name: windowless\n"
        "    objective: 99\n"
        "    sli:\n"
        "      raw: {error_ratio_query: 'slo:error:ratio'}\n"
    )
    assert problems_of(text, "sloth.yml") == [
        "sloth.yml:5:3: labels.bad-label: invalid label name 'bad-label': "
        "expected [A-Za-z_][A-Za-z0-9_]*, not starting with __",
        "sloth.yml:16:7: slos[1].sli.plugin: Sloth SLI plugins are not supported: write the "
        "plugin's PromQL as sli.events or sli.raw",
        "sloth.yml:20:32: slos[2].sli.raw.error_ratio_query: the query needs {{.window}} "
        "where the range goes",
    ]


def test_sloth_objective_of_100_leaves_no_budget_and_is_an_error() -> None:
    problems = problems_of(SLOTH.replace("objective: 99.9", "objective: 100"), "s.yml")
    assert problems == ["s.yml:7:16: slos[0].objective: Input should be less than 100 (got 100)"]


def test_long_sloth_names_are_cut_stably_and_stay_valid() -> None:
    long_name = "a-very-long-slo-name-" * 4
    (first,) = read_text(SLOTH.replace('"requests-availability"', f'"{long_name}"'))
    (again,) = read_text(SLOTH.replace('"requests-availability"', f'"{long_name}"'))
    assert len(first.metadata.name) <= 63
    assert first.metadata.name == again.metadata.name
    assert first.metadata.name.startswith("myservice-a-very-long-slo-name-")


OPENSLO = """\
apiVersion: openslo/v1
kind: SLO
metadata:
  name: checkout
spec:
  service: checkout
  indicator:
    spec:
      ratioMetric:
        good:
          metricSource:
            spec:
              query: GOOD
        total:
          metricSource:
            spec:
              query: TOTAL
  timeWindow:
    - duration: 28d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - targetPercent: 99.5
"""


@pytest.mark.parametrize(
    ("good", "total", "expected_good", "expected_total"),
    [
        (
            'http_requests_total{code!~"5.."}',
            "http_requests_total",
            'sum(rate(http_requests_total{code!~"5.."}[{{window}}]))',
            "sum(rate(http_requests_total[{{window}}]))",
        ),
        (
            "sum by (code) (http_requests_total)",
            "sum(rate(http_requests_total[{{.window}}]))",
            "sum(rate((sum by (code) (http_requests_total))[{{window}}:]))",
            "sum(rate(http_requests_total[{{window}}]))",
        ),
    ],
)
def test_openslo_counter_queries_are_rated_over_the_window(
    good: str, total: str, expected_good: str, expected_total: str
) -> None:
    text = OPENSLO.replace("GOOD", f"'{good}'").replace("TOTAL", f"'{total}'")
    (slo,) = read_text(text)
    assert slo.spec.objective == 99.5
    assert slo.spec.window == 28 * DAY
    assert slo.spec.indicator.events is not None
    assert slo.spec.indicator.events.good_query == expected_good
    assert slo.spec.indicator.events.total_query == expected_total


def test_openslo_gauges_are_averaged_and_bad_events_are_errors() -> None:
    text = (
        OPENSLO.replace("good:", "bad:")
        .replace("ratioMetric:", "ratioMetric:\n        counter: false")
        .replace("GOOD", "failed_now")
        .replace("TOTAL", "'sum(active)'")
    )
    (slo,) = read_text(text)
    events = slo.spec.indicator.events
    assert events is not None
    assert events.error_query == "sum(avg_over_time(failed_now[{{window}}]))"
    assert events.total_query == "sum(avg_over_time((sum(active))[{{window}}:]))"


def test_openslo_counter_query_with_a_fixed_range_is_an_error() -> None:
    text = OPENSLO.replace("GOOD", "'sum(rate(ok_total[5m]))'").replace("TOTAL", "all_total")
    assert problems_of(text) == [
        "peer.yml:13:22: spec.indicator.spec.ratioMetric.good.metricSource.spec.query: this "
        "counter query already computes over a fixed range: put {{window}} in its range "
        "(e.g. rate(x[{{window}}])) or set counter: false"
    ]


def test_openslo_objectives_each_become_an_slo_named_by_position() -> None:
    text = OPENSLO.replace("GOOD", "ok_total").replace("TOTAL", "all_total") + (
        "    - target: 0.9\n      displayName: Relaxed\n"
    )
    first, second = read_text(text)
    assert (first.metadata.name, first.spec.objective) == ("checkout", 99.5)
    assert (second.metadata.name, second.spec.objective) == ("checkout-1", 90.0)
    assert second.metadata.display_name == "Relaxed"


def test_openslo_month_shorthand_is_thirty_days() -> None:
    text = OPENSLO.replace("28d", "1M").replace("GOOD", "a").replace("TOTAL", "b")
    (slo,) = read_text(text)
    assert slo.spec.window == 30 * DAY


def test_openslo_indicator_ref_resolves_across_documents() -> None:
    sli = (
        "apiVersion: openslo/v1\nkind: SLI\nmetadata: {name: checkout-sli}\nspec:\n"
        "  thresholdMetric: {metricSource: {spec: {query: queue_depth}}}\n"
    )
    slo = (
        "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: queue}\nspec:\n"
        "  service: checkout\n  indicatorRef: checkout-sli\n  budgetingMethod: Occurrences\n"
        "  objectives: [{op: lte, value: 100, target: 0.95}]\n"
    )
    (read,) = read_text(f"{sli}---\n{slo}")
    assert read.spec.indicator.raw is not None
    assert read.spec.indicator.raw.error_ratio_query == (
        "1 - avg(avg_over_time(((queue_depth) <= bool 100)[{{window}}:]))"
    )
    (alone,) = list(read_documents(slo, "slo.yml"))
    with pytest.raises(ConfigError) as caught:
        read_peer(alone)
    assert [str(p) for p in caught.value.problems] == [
        "slo.yml:6:17: spec.indicatorRef: no openslo/v1 SLI named 'checkout-sli' was read "
        "with this SLO"
    ]


def test_openslo_kinds_other_than_slo_give_no_slos() -> None:
    text = (
        "apiVersion: openslo/v1\nkind: Service\nmetadata: {name: web}\nspec: {}\n---\n"
        "apiVersion: openslo/v1\nkind: DataSource\nmetadata: {name: prom}\n"
        "spec: {type: Prometheus, connectionDetails: {url: http://prometheus:9090}}\n"
    )
    assert read_text(text) == []


def test_openslo_v1alpha_timeslices_and_unknown_versions_are_clear_errors() -> None:
    alpha = (PEER_SPECS / "sloth/openslo-getting-started.yml").read_text()
    text = alpha.replace("budgetingMethod: Occurrences", "budgetingMethod: Timeslices")
    assert problems_of(text, "a.yml") == [
        "a.yml:14:20: spec.budgetingMethod: only Occurrences is supported in openslo/v1alpha; "
        "use openslo/v1 for Timeslices"
    ]
    future = "apiVersion: openslo/v2alpha\nkind: SLO\nmetadata: {name: x}\n"
    (problem,) = problems_of(future, "f.yml")
    assert problem.startswith("f.yml:1:13: apiVersion: unsupported apiVersion 'openslo/v2alpha'")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"version": "prometheus/v1", "service": "x"}, True),
        ({"apiVersion": "openslo/v1", "kind": "SLO"}, True),
        ({"apiVersion": "openslo/v1alpha", "kind": "SLO"}, True),
        ({"apiVersion": "openslo/v2alpha", "kind": "SLO"}, True),
        ([{"apiVersion": "openslo/v1", "kind": "SLI"}], True),
        ({"apiVersion": "trimtab.dev/v1alpha1", "kind": "SLO"}, False),
        ({"version": "prometheus/v2"}, False),
        ([], False),
        ("openslo/v1", False),
        (None, False),
    ],
)
def test_is_peer_document(data: object, expected: bool) -> None:
    assert is_peer_document(data) is expected


@pytest.mark.integration
def test_promql_of_every_converted_slo_passes_promtool(tmp_path: Path, promtool: str) -> None:
    extra = OPENSLO.replace("GOOD", "'sum(ok_total)'").replace("TOTAL", "all_total")
    slos = [s for relative in EXPECTED for s in read_file(relative)]
    slos += read_text(extra.replace("Occurrences", "Timeslices") + "      timeSliceTarget: 0.9\n"
                      "      timeSliceWindow: 5\n")  # fmt: skip
    rules = [
        {"record": f"peer:{i}:w{window}", "expr": compile_sli(slo.spec, window).ratio}
        for i, slo in enumerate(slos)
        for window in (60, 300, 30 * 86400)
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "peers", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
