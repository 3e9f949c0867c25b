"""Every malformed input names the file, the exact line and column, the field path and the fix.

Each case is one mistake in ``case.yaml``, loaded beside ``base.yaml`` (two valid SLOs that the
Rollout and Balance cases refer to). The expected ``line:col`` is where the user has to look: the
offending value, or the key when the key itself is the problem (unknown, misplaced, or naming a
block whose contents disagree). Lines count from the first line of the case text.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from trimtab.slo import ConfigError, Problem, load

BASE = """\
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: checkout
  objective: 99.9
  backendLabel: version
  indicator:
    errorRatio:
      errors: 'http_requests_total{service="{{service}}", code=~"5.."}'
      total: 'http_requests_total{service="{{service}}"}'
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: nolabel}
spec:
  service: checkout
  objective: 99.9
  indicator:
    errorRatio: {errors: 'e{code="5"}', total: t}
"""

VALID_ROLLOUT = """\
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  slos: [{name: errors, params: {service: checkout}}]
  stable: v1
  canary: v2
  route:
    haproxy: {socket: /run/haproxy.sock, backend: be, servers: {v1: [app1], v2: [app2]}}
  steps: [{weight: 5}, {weight: 50}, {weight: 100}]
---
apiVersion: trimtab.dev/v1alpha1
kind: Balance
metadata: {name: zones}
spec:
  slos: [{name: errors, params: {service: checkout}}]
  backends: {zone-a: 50, zone-b: 50}
  route:
    file: {path: weights.json}
---
apiVersion: trimtab.dev/v1alpha1
kind: Controller
spec:
  metrics:
    prometheus: {url: "http://127.0.0.1:9090", bearerTokenEnv: PROM_TOKEN}
"""


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    at: str  # "line:col" in case.yaml, 1-based
    path: str  # dotted field path; "" for problems of the YAML itself
    message: str  # a fragment of the message


def _yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


CASES = [
    # ------------------------------------------------------------------ YAML itself
    Case(
        "unclosed-bracket",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              steps: [{weight: 5}, {weight: 100}
              stable: v1
            """),
        "5:10",
        "",
        "not closed",
    ),
    Case(
        "unclosed-quote",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: 'a}
            """),
        "3:18",
        "",
        "quoted scalar",
    ),
    Case(
        "bad-indentation",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata:
                name: a
              labels: {}
            """),
        "5:3",
        "",
        "expected <block end>",
    ),
    Case(
        "key-indented-under-a-scalar",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata:
              name: a
               labels: {}
            """),
        "5:10",
        "",
        "mapping values are not allowed here",
    ),
    Case(
        "tab-indentation",
        "apiVersion: trimtab.dev/v1alpha1\nkind: SLO\nmetadata:\n\tname: a\n",
        "4:1",
        "",
        "'\\t'",
    ),
    Case(
        "duplicate-key",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              stable: v1
              canary: v2
              stable: v3
            """),
        "7:3",
        "spec.stable",
        "duplicate key 'stable'",
    ),
    Case(
        "document-is-a-list",
        _yaml("""
            - apiVersion: trimtab.dev/v1alpha1
            - kind: SLO
            """),
        "1:1",
        "",
        "expected a mapping",
    ),
    Case(
        "second-document-is-a-scalar",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Controller
            ---
            # a stray note
            just some text
            """),
        "5:1",
        "",
        "expected a mapping",
    ),
    # ------------------------------------------------------------------ apiVersion, kind, keys
    Case(
        "missing-apiversion",
        _yaml("""
            # the checkout SLO
            kind: SLO
            metadata: {name: a}
            """),
        "2:1",
        "apiVersion",
        "missing apiVersion",
    ),
    Case(
        "unsupported-apiversion",
        _yaml("""
            apiVersion: trimtab.dev/v1
            kind: SLO
            """),
        "1:13",
        "apiVersion",
        "unsupported apiVersion 'trimtab.dev/v1'",
    ),
    Case(
        "unknown-kind",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: ServiceLevelObjective
            """),
        "2:7",
        "kind",
        "unknown kind 'ServiceLevelObjective'",
    ),
    Case(
        "missing-kind",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            metadata: {name: a}
            """),
        "1:1",
        "kind",
        "missing kind",
    ),
    Case(
        "unknown-top-level-key",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            specs: {}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "4:1",
        "specs",
        "unknown key 'specs'",
    ),
    Case(
        "unknown-nested-key-burnrate",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99.9
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
              health:
                degraded: {burnrate: 6, windows: [5m, 30m]}
                unavailable: {burnRate: 14.4, windows: [1m, 5m]}
            """),
        "10:16",
        "spec.health.degraded.burnrate",
        "unknown key 'burnrate'",
    ),
    Case(
        "missing-required-field",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              route:
                file: {path: w.json}
              steps: [{weight: 100}]
            """),
        "4:1",
        "spec.canary",
        "required field is missing",
    ),
    # ------------------------------------------------------------------ SLO fields
    Case(
        "objective-not-a-number",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: high
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "6:14",
        "spec.objective",
        "valid number",
    ),
    Case(
        "objective-100",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 100
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "6:14",
        "spec.objective",
        "less than 100",
    ),
    Case(
        "objective-0",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 0
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "6:14",
        "spec.objective",
        "greater than 0",
    ),
    Case(
        "duration-in-words",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              window: 5 minutes
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "7:11",
        "spec.window",
        "invalid duration '5 minutes'",
    ),
    Case(
        "duration-without-unit",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              window: 5
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "7:11",
        "spec.window",
        "with a unit such as '5s'",
    ),
    Case(
        "duration-negative",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
              health:
                degraded: {burnRate: 6, windows: [5m, 30m]}
                unavailable: {burnRate: 14.4, windows: [-5m, 5m]}
            """),
        "11:45",
        "spec.health.unavailable.windows[0]",
        "invalid duration '-5m'",
    ),
    Case(
        "name-uppercase",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata:
              name: Checkout
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "4:9",
        "metadata.name",
        "Checkout",
    ),
    Case(
        "name-underscore",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata:
              name: check_out
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "4:9",
        "metadata.name",
        "check_out",
    ),
    Case(
        "indicator-with-two-kinds",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
                gauge: {query: up}
            """),
        "7:3",
        "spec.indicator",
        "exactly one indicator kind",
    ),
    Case(
        "indicator-with-no-kind",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator: {}
            """),
        "7:3",
        "spec.indicator",
        "exactly one indicator kind",
    ),
    Case(
        "error-ratio-with-errors-and-good",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio:
                  errors: 'e{code="5"}'
                  good: 'e{code="2"}'
                  total: t
            """),
        "8:5",
        "spec.indicator.errorRatio",
        "exactly one of 'errors' or 'good'",
    ),
    Case(
        "bad-selector-syntax",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio:
                  errors: 'e{code=5}'
                  total: t
            """),
        "9:15",
        "spec.indicator.errorRatio.errors",
        "invalid label matcher",
    ),
    Case(
        "placeholder-outside-label-matcher",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                gauge:
                  query: 'queue_depth_{{service}}'
              health:
                degraded: {above: 100}
                unavailable: {above: 500}
            """),
        "9:14",
        "spec.indicator.gauge.query",
        "outside label matchers",
    ),
    Case(
        "value-based-indicator-without-health",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                gauge:
                  query: queue_depth
            """),
        "7:3",
        "spec.indicator",
        "needs 'health'",
    ),
    Case(
        "burn-rate-on-quantile",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                quantile: {histogram: h, quantile: 0.95}
              health:
                degraded: {burnRate: 6}
                unavailable: {burnRate: 14.4}
            """),
        "10:16",
        "spec.health.degraded.burnRate",
        "judged by value: use 'above' or 'below'",
    ),
    Case(
        "above-on-error-ratio",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
              health:
                degraded: {above: 0.01}
                unavailable: {above: 0.05}
            """),
        "11:19",
        "spec.health.unavailable.above",
        "budget-based: use 'burnRate'",
    ),
    Case(
        "degraded-burn-rate-not-below-unavailable",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
              health:
                degraded: {burnRate: 14.4}
                unavailable: {burnRate: 14.4}
            """),
        "10:26",
        "spec.health.degraded.burnRate",
        "must be below the unavailable one",
    ),
    Case(
        "degraded-above-not-below-unavailable",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                quantile: {histogram: h, quantile: 0.95}
              health:
                degraded: {above: 1s}
                unavailable: {above: 250ms}
            """),
        "10:23",
        "spec.health.degraded.above",
        "must be below the unavailable one",
    ),
    Case(
        "windows-not-ascending",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
              health:
                degraded: {burnRate: 6, windows: [30m, 5m]}
                unavailable: {burnRate: 14.4, windows: [1m, 5m]}
            """),
        "10:44",
        "spec.health.degraded.windows[1]",
        "shortest to longest",
    ),
    Case(
        "duplicate-slo-name-in-one-file",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata: {name: a}
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            ---
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata:
              name: a
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "13:9",
        "metadata.name",
        "duplicate SLO name 'a' (first defined at {dir}/case.yaml:3:18)",
    ),
    Case(
        "duplicate-slo-name-across-files",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: SLO
            metadata:
              name: errors
            spec:
              service: s
              objective: 99
              indicator:
                errorRatio: {errors: 'e{code="5"}', total: t}
            """),
        "4:9",
        "metadata.name",
        "duplicate SLO name 'errors' (first defined at {dir}/base.yaml:3:18)",
    ),
    # ------------------------------------------------------------------ Rollout and Balance
    Case(
        "missing-slo-reference",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos:
                - name: errros
                  params: {service: checkout}
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
              steps: [{weight: 5}, {weight: 100}]
            """),
        "6:13",
        "spec.slos[0].name",
        "no SLO named 'errros'",
    ),
    Case(
        "unfilled-placeholder",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos:
                - name: errors
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
              steps: [{weight: 5}, {weight: 100}]
            """),
        "6:7",
        "spec.slos[0].params",
        "needs params for {{service}}",
    ),
    Case(
        "unknown-param",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos:
                - name: errors
                  params: {service: checkout, svc: checkout}
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
              steps: [{weight: 5}, {weight: 100}]
            """),
        "7:35",
        "spec.slos[0].params.svc",
        "no {{svc}} placeholder",
    ),
    Case(
        "steps-not-rising",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
              steps:
                - weight: 5
                - weight: 50
                - weight: 25
                - weight: 100
            """),
        "13:15",
        "spec.steps[2].weight",
        "steps must rise: 25 follows 50",
    ),
    Case(
        "steps-not-ending-at-100",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
              steps:
                - weight: 5
                - weight: 50
            """),
        "12:15",
        "spec.steps[1].weight",
        "must reach 100, not 50",
    ),
    Case(
        "step-weight-0",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
              steps:
                - weight: 0
                - weight: 100
            """),
        "11:15",
        "spec.steps[0].weight",
        "greater than or equal to 1",
    ),
    Case(
        "step-weight-101",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
              steps: [{weight: 50}, {weight: 101}]
            """),
        "10:34",
        "spec.steps[1].weight",
        "less than or equal to 100",
    ),
    Case(
        "stable-equals-canary",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v1
              route:
                file: {path: w.json}
              steps: [{weight: 100}]
            """),
        "7:11",
        "spec.canary",
        "canary must differ from stable",
    ),
    Case(
        "slo-without-backend-label",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos:
                - name: errors
                  params: {service: checkout}
                - name: nolabel
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
              steps: [{weight: 100}]
            """),
        "8:13",
        "spec.slos[1].name",
        "has no backendLabel",
    ),
    Case(
        "two-route-adapters",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                file: {path: w.json}
                haproxy: {socket: /run/h.sock, backend: be, servers: {v1: [a], v2: [b]}}
              steps: [{weight: 100}]
            """),
        "8:3",
        "spec.route",
        "exactly one adapter block",
    ),
    Case(
        "route-missing-backend",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                haproxy:
                  socket: /run/h.sock
                  backend: be
                  servers: {v1: [app1]}
              steps: [{weight: 100}]
            """),
        "9:5",
        "spec.route.haproxy",
        "route maps no v2",
    ),
    Case(
        "balance-weights-not-summing-to-100",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Balance
            metadata: {name: zones}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              backends: {zone-a: 50, zone-b: 40}
              route:
                file: {path: w.json}
            """),
        "6:13",
        "spec.backends",
        "sum to 100, not 90",
    ),
    # ------------------------------------------------------------------ injection and secrets
    Case(
        "nginx-server-injection",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                nginx:
                  upstreamPath: up.conf
                  upstream: checkout
                  servers:
                    v1: ["10.0.0.1:8080"]
                    v2: ["a;} server evil:80"]
              steps: [{weight: 100}]
            """),
        "14:14",
        "spec.route.nginx.servers.v2[0]",
        "invalid address 'a;} server evil:80'",
    ),
    Case(
        "haproxy-server-name-with-space",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                haproxy:
                  socket: /run/h.sock
                  backend: be
                  servers: {v1: [app1], v2: [app 2]}
              steps: [{weight: 100}]
            """),
        "12:34",
        "spec.route.haproxy.servers.v2[0]",
        "invalid proxy object name 'app 2'",
    ),
    Case(
        "envoy-cluster-name-with-newline",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Rollout
            metadata: {name: checkout}
            spec:
              slos: [{name: errors, params: {service: checkout}}]
              stable: v1
              canary: v2
              route:
                envoy:
                  rdsPath: rds.yaml
                  routeConfig: checkout
                  virtualHost: {name: checkout}
                  clusters:
                    v1: checkout_v1
                    v2: "checkout_v2\\n  - evil"
              steps: [{weight: 100}]
            """),
        "15:13",
        "spec.route.envoy.clusters.v2",
        "invalid proxy object name",
    ),
    Case(
        "bearer-token-in-yaml",
        _yaml("""
            apiVersion: trimtab.dev/v1alpha1
            kind: Controller
            spec:
              metrics:
                prometheus:
                  url: http://127.0.0.1:9090
                  bearerToken: hunter2
            """),
        "7:7",
        "spec.metrics.prometheus.bearerToken",
        "secrets are never read from YAML",
    ),
]


def _write(tmp_path: Path, case: Case) -> Path:
    (tmp_path / "base.yaml").write_text(BASE, encoding="utf-8")
    target = tmp_path / "case.yaml"
    target.write_text(case.text, encoding="utf-8")
    return target


def _matching(problems: tuple[Problem, ...], file: Path, case: Case) -> list[Problem]:
    line, column = (int(n) for n in case.at.split(":"))
    fragment = case.message.replace("{dir}", str(file.parent))
    return [
        p
        for p in problems
        if (p.file, p.line, p.column, p.path) == (str(file), line, column, case.path)
        and fragment in p.message
    ]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


def test_the_base_and_a_valid_rollout_load(tmp_path: Path) -> None:
    # Every case changes one thing against documents like these, so they must load cleanly.
    (tmp_path / "base.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "valid.yaml").write_text(VALID_ROLLOUT, encoding="utf-8")
    config = load([tmp_path])
    assert sorted(config.slos) == ["errors", "nolabel"]
    assert list(config.rollouts) == ["checkout"]
    assert list(config.balances) == ["zones"]
    assert config.controller is not None


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_loader_points_at_the_mistake(tmp_path: Path, case: Case) -> None:
    target = _write(tmp_path, case)
    with pytest.raises(ConfigError) as caught:
        load([tmp_path])
    problems = caught.value.problems
    shown = "\n".join(str(p) for p in problems)
    assert _matching(problems, target, case), f"expected {case.at} {case.path!r}, got:\n{shown}"
    assert all(p.file == str(target) for p in problems), f"base.yaml blamed:\n{shown}"


TRIMTAB = Path(sys.executable).parent / "trimtab"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_cli_validate_prints_the_mistake_and_exits_1(tmp_path: Path, case: Case) -> None:
    if not TRIMTAB.exists():
        pytest.fail(f"console script {TRIMTAB} is not installed: pip install -e .")
    target = _write(tmp_path, case)
    result = subprocess.run(
        [str(TRIMTAB), "validate", "-f", str(tmp_path / "base.yaml"), "-f", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    prefix = f"{target}:{case.at}: " + (f"{case.path}: " if case.path else "")
    fragment = case.message.replace("{dir}", str(target.parent))
    lines = result.stderr.splitlines()
    assert any(line.startswith(prefix) and fragment in line for line in lines), result.stderr
