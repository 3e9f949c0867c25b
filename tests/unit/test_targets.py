"""A target's requests: one per SLO, with windows clipped to the time since the last shift."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from trimtab.controller.targets import requests_for, targets
from trimtab.slo import load_text
from trimtab.slo.health import health_windows
from trimtab.slo.ports import SeriesRequest

CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99.9
  backendLabel: version
  indicator:
    errorRatio:
      errors: 'e{s="{{service}}", z="{{zone}}"}'
      total: 't{s="{{service}}", z="{{zone}}"}'
  health:
    degraded: {burnRate: 6, windows: [5m, 30m]}
    unavailable: {burnRate: 14.4, windows: [1m, 5m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: p95}
spec:
  service: shop
  backendLabel: version
  indicator: {quantile: {histogram: h, selector: '{s="{{service}}"}', quantile: 0.95}}
  health: {degraded: {above: 250ms, windows: [5m]}, unavailable: {above: 1s, windows: [5m]}}
---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  slos: [{name: errors, params: {service: shop, zone: a}}, {name: p95, params: {service: shop}}]
  stable: v1
  canary: v2
  route: {file: {path: w.json}}
  steps: [{weight: 10, hold: 30m}, {weight: 100}]
  analysis: {interval: 30s}
""",
    "targets.yaml",
)
TARGET = targets(CONFIG)[0]


@given(st.none() | st.floats(min_value=0, max_value=7200, allow_nan=False))
def test_requests_are_those_of_the_canonical_constructor(shifted_for: float | None) -> None:
    clip = None
    if shifted_for is not None:
        clip = max(30.0, math.floor(shifted_for / 30.0) * 30.0)
    expected = [
        SeriesRequest.of(TARGET.key, slo, dict(params), health_windows(slo.spec), clip_to=clip)
        for slo, params in TARGET.slos
    ]
    assert requests_for(TARGET, shifted_for=shifted_for) == expected


def test_windows_longer_than_the_time_since_the_shift_are_clipped_to_it() -> None:
    errors, p95 = requests_for(TARGET, shifted_for=299.0)  # 9 whole intervals: 270 s
    assert errors.windows == (60.0, 270.0)
    assert errors.clipped == ((300.0, 270.0), (1800.0, 270.0))
    assert p95.windows == (270.0,)
    assert errors.params == (("service", "shop"), ("zone", "a"))
    unclipped = requests_for(TARGET)[0]
    assert unclipped.windows == (60.0, 300.0, 1800.0)
    assert unclipped.clipped == ()
