"""A target's requests: one per SLO, with windows clipped to the time since the last shift."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from trimtab.adapters.fake import ListMetricSource
from trimtab.controller.targets import requests_for, targets
from trimtab.controller.wiring import wire
from trimtab.slo import load_text
from trimtab.slo.health import health_windows
from trimtab.slo.models import SLO, RolloutSpec
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


def by_definition(
    slo: SLO, params: dict[str, str], windows: list[float], clip: float | None
) -> SeriesRequest:
    """A request as its definition reads: every window at most ``clip``; all sorted."""
    measured = {w: w if clip is None else min(w, clip) for w in windows}
    return SeriesRequest(
        TARGET.key,
        slo,
        tuple(sorted(params.items())),
        tuple(sorted(set(measured.values()))),
        tuple(sorted((w, m) for w, m in measured.items() if m != w)),
    )


@given(
    st.lists(st.sampled_from([30.0, 60.0, 90.0, 300.0, 1800.0, 3600.0]), max_size=6),
    st.none() | st.sampled_from([30.0, 60.0, 120.0, 300.0, 1800.0, 7200.0]),
    st.dictionaries(st.sampled_from(["service", "zone", "env"]), st.sampled_from(["a", "b"])),
)
def test_a_request_is_its_definition(
    windows: list[float], clip: float | None, params: dict[str, str]
) -> None:
    slo = CONFIG.slos["errors"]
    made = SeriesRequest.of(TARGET.key, slo, params, windows, clip_to=clip)
    assert made == by_definition(slo, params, windows, clip)


@given(st.none() | st.floats(min_value=0, max_value=7200, allow_nan=False))
def test_a_targets_requests_clip_to_whole_intervals_since_the_shift(
    shifted_for: float | None,
) -> None:
    clip = None
    if shifted_for is not None:
        clip = max(30.0, math.floor(shifted_for / 30.0) * 30.0)
    expected = [
        by_definition(slo, dict(params), list(health_windows(slo.spec)), clip)
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
    again = requests_for(TARGET, shifted_for=280.0)[0]  # clipped alike: the same tuples
    assert again.windows is errors.windows
    assert again.clipped is errors.clipped


def test_a_wired_target_keeps_its_slos_and_its_spec_keeps_what_the_policy_reads(
    tmp_path: Path,
) -> None:
    """Wiring gives the reconciler each spec without its SLO references (the target holds them
    resolved, with their params), and everything else as written."""
    wiring = wire(
        CONFIG, ListMetricSource([], backends=["v1", "v2"]), directory=tmp_path, dry_run=True
    )
    written = CONFIG.rollouts["shop"].spec
    wired = wiring.reconciler.config.specs[TARGET.key]
    assert isinstance(wired, RolloutSpec)
    assert wired.slos == []
    assert wired.model_dump(exclude={"slos"}) == written.model_dump(exclude={"slos"})
    assert [(slo.metadata.name, dict(params)) for slo, params in wiring.targets[0].slos] == [
        (ref.name, ref.params) for ref in written.slos
    ]
