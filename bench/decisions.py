"""Decision quality: detection time and false rollbacks, trimtab against a Flagger-style judge.

A simulated service runs a stable ``v1`` and a canary ``v2``; each judge steers the split between
them on a fake clock, and this harness counts what it decided over many seeded runs:

- **healthy kinds** (200 runs each; any rollback is a *false* rollback): a noisy healthy canary,
  low traffic (1 req/s), a shared-dependency blip on both versions, a metrics gap, and an extra
  low-traffic case at 10 req/s (between "too little to judge" and plenty);
- **fault kinds** (100 runs each): the canary's error rate rising from 0.1 % to 1 %, 5 % or 20 %,
  its latency rising fourfold, and a subtle regression that stays within the SLO (0.1 % → 0.3 %
  against a 99.5 % objective: only the baseline test can see it); and an extra 5 % case at
  100 req/s, twice the traffic (at 50 req/s the canary's 10 % serves 5 req/s: by the second
  evaluation after the fault it has served some 175–325 requests, about 9–16 errors; the runs
  caught later had 4–7 by then, too few to clear a threshold that pays for looking every interval
  and for not knowing when the fault began).

It prints, per scenario and judge, rollbacks (false ones for healthy kinds, and rollbacks before
the fault for fault kinds), promotions (for fault kinds: faults missed), runs still undecided at
the horizon, and detection time — fault onset → rollback — as median, p90 and max. For faults,
``≤2 iv`` is the share of detections within two analysis intervals of *the fault reaching the
metrics* (the end of the first 5 s tick with faulty requests): the DESIGN.md §12 target is 100 %
for the 5 % scenario, with zero false rollbacks in the healthy kinds. trimtab runs twice: at its
30 s analysis interval (``trimtab``), and at the Flagger-style judge's 1m (``trimtab-1m``), so the
judges are also compared looking equally often. A second table shows what
trimtab's judgements saw apart from what the policy did with them: when the canary was first
judged worse than the stable, when the baseline test first said REGRESSION, and whether it ever
did so without a fault.

    .venv/bin/python bench/decisions.py                   # full run: a few minutes on 2 cores
    .venv/bin/python bench/decisions.py --runs-scale 0.1  # a quick look

Never run as a test: it prints figures and asserts nothing.

The simulation
--------------
- Time moves in 5 s ticks. Per tick each version gets requests at the total rate (50 req/s;
  1 req/s for low traffic) times its weight: one Poisson count per latency bucket (latency is
  lognormal, median 60 ms, σ 0.5, so p95 ≈ 137 ms and p99 ≈ 192 ms; bucket bounds are the
  OpenTelemetry defaults), and errors Binomial(requests, error rate) (Poisson by inversion or
  PTRS, exact; binomial by inversion, or a normal approximation where n·p > 50, which only the
  blips and the 20 % fault reach). "Noise" is that sampling plus a per-minute wander common to
  both versions (error rate × e^N(0, 0.25), traffic × e^N(0, 0.1)) and a per-run canary factor
  uniform in [0.9, 1.1] on its healthy error rate (a healthy canary may be up to 10 % worse:
  the baseline test's tolerance).
- Counters are cumulative per tick, like Prometheus counters; a window's figures are the
  increase between the tick at its end and the tick at its start — ``rate`` without Prometheus'
  extrapolation to the window's edges and without a scrape interval (every tick is scraped).
  Quantiles follow ``histogram_quantile`` (linear interpolation inside the bucket).
- Weights are applied the moment a judge decides (no adapter lag, no verification delay).
- Faults, blips and gaps start at a tick drawn uniformly from minutes 3–10 after the canary
  reached its first step. A blip raises both versions' error rate to 2–10 % for 90–150 s. A
  metrics gap makes every query answer nothing for 2–8 minutes (under ``noData.rollbackAfter``
  10m); the counters keep counting, so queries after the gap see its requests.

trimtab
-------
The SLOs and the Rollout are the YAML below (:data:`CONFIG`), modelled on
``examples/checkout``: an error ratio at 99.9 % (unavailable: burn 14.4 over 1m and 5m;
degraded: burn 6 over 5m and 30m; minEvents 50) and a p95 judged by value (degraded above
250 ms over 5m, unavailable above 1 s over 1m and 5m); steps 10 % (hold 12m, so the faults
start at 10 %), 25 % and 50 % (5m each), then 100 % through 75 % (``maxStep: 25``). Every 30 s
the harness judges both versions with ``slo.health.judge``, carries the baseline test on the
canary's and the stable's error counts with ``slo.baseline.observe`` (counts since the last
shift; the test goes on across steps with ``BaselineTrack.next_step``, as
``controller/reconcile.py`` does), calls ``controller.rollout.decide``, and carries
``proposal.memory`` on. The baseline counts run from the last shift rather than from
``memory.step_started_at``: the two differ only after a move the guardrails cut short
(50 → 75), where ``step_started_at`` stays put and the split would change inside the window.
Windows are clipped to the time since the last shift (DESIGN.md §5 step 3; ``--no-clip``
measures full windows instead, after a 30-minute warm-up on the stable). Variants, for
comparison: ``--per-step`` starts a new test at each step; ``--no-change-points`` tests each
step's counts as a whole with ``slo.baseline.compare`` (what trimtab did before change points);
``--baseline-window`` compares the error SLO's longest health window that fits in the step
(nothing in a step's first minute); ``--alpha`` and ``--first-weight`` set the test's
parameters. The baseline uses the error counts only (slow requests are not compared). The
reconcile cycle itself is not run: this drives the pure policy the way the cycle does, without
its state store, decision log and adapters.

``trimtab-1m`` is the same trimtab with ``analysis.interval: 1m``, the Flagger-style judge's
interval: the two judges then look equally often, and "2 analysis intervals" means 2 minutes for
both. (Only ``trimtab``, at 30 s, has a row in the signals table.) ``--interval 15s`` (repeatable)
adds a trimtab judge at another interval, ``trimtab-15s``: detection time in seconds moves
little with the interval, so the share caught within 2 intervals falls as the interval shortens
(the 5 % fault at 50 req/s: 69 % at 15 s, 95 % at 30 s, 100 % at 1m and 2m; max 85, 95, 125 and
175 s, seed 1).

    .venv/bin/python bench/decisions.py --interval 15s --interval 2m --judge trimtab \
        --judge trimtab-1m --judge trimtab-15s --judge trimtab-2m

Flagger-style judge
-------------------
Flagger's canary analysis as its scheduler runs it (fluxcd/flagger, ``pkg/controller/
scheduler.go`` and ``scheduler_metrics.go``): every ``interval: 1m`` the ``request-success-rate``
(non-5xx share over the last 1m, ``thresholdRange.min: 99``) and ``request-duration`` (p99 over
the last 1m, ``max: 500`` ms) are checked; a failing check increments ``failedChecks`` and halts
advancement; ``failedChecks`` is never reset during the analysis, and once it reaches
``threshold: 5`` the next interval rolls back. A query with no result — a metrics outage, or a
canary that never served a request — fails the check (``ErrNoValuesFound`` → ``false``). A 1m
window in which an existing canary served no request gives 0/0 = NaN, which the Go comparisons
let pass; the harness does the same. Two step schedules:

- ``flagger`` — trimtab's schedule: 10 % for 12m, 25 % for 5m, 50 % for 5m, then promote (a
  passing check at the end of each hold advances), so faults meet both judges at the same weight;
- ``flagger-native`` — ``stepWeight: 10`` every interval up to ``maxWeight: 50``, then promote:
  the canary is promoted about 5 minutes in, mostly before the faults start.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

from trimtab.controller.rollout import Phase, RolloutMemory, decide
from trimtab.slo import load_text
from trimtab.slo.baseline import (
    BaselineResult,
    BaselineSettings,
    BaselineTrack,
    Verdict,
    compare,
    observe,
)
from trimtab.slo.errors import TrimtabError
from trimtab.slo.health import Health, Level, WindowMeasurement, health_windows, judge
from trimtab.slo.models import RolloutSpec, SLOSpec

TICK = 5.0  # seconds
WARMUP = 1800.0  # stable-only history before the canary starts (only without clipping)
EARLY = 60.0  # a rollback this soon after a weight change judged windows this short
HORIZON = 3600.0  # a run still undecided this long after the canary started is "open"
STABLE, CANARY = "v1", "v2"
BASE = datetime(2026, 1, 1, tzinfo=UTC)

BASE_ERROR = 0.001
LATENCY_MEDIAN = 0.060  # seconds
LATENCY_SIGMA = 0.5
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, math.inf)

TRIMTAB_STEPS = ((10, 720.0), (25, 300.0), (50, 300.0))  # then 100 (through 75: maxStep 25)
FLAGGER_THRESHOLD = 5
FLAGGER_INTERVAL = 60.0
FLAGGER_MIN_SUCCESS = 99.0  # percent
FLAGGER_MAX_P99 = 0.5  # seconds
NATIVE_STEP, NATIVE_MAX = 10, 50

CONFIG = """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: checkout-errors}
spec:
  service: checkout
  objective: OBJECTIVE
  backendLabel: service_version
  indicator:
    errorRatio:
      errors: http_requests_total{service="{{service}}", code=~"5.."}
      total: http_requests_total{service="{{service}}"}
  health:
    degraded: {burnRate: 6, windows: [5m, 30m]}
    unavailable: {burnRate: 14.4, windows: [1m, 5m]}
  minEvents: 50
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: checkout-p95}
spec:
  service: checkout
  backendLabel: service_version
  indicator:
    quantile:
      histogram: http_request_duration_seconds
      selector: '{service="{{service}}"}'
      quantile: 0.95
  health:
    degraded: {above: 250ms, windows: [5m]}
    unavailable: {above: 1s, windows: [1m, 5m]}
  minEvents: 50
---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: checkout}
spec:
  slos:
    - {name: checkout-errors, params: {service: checkout}}
    - {name: checkout-p95, params: {service: checkout}}
  stable: v1
  canary: v2
  route: {file: {path: weights.json}}
  steps: [{weight: 10, hold: 12m}, {weight: 25, hold: 5m}, {weight: 50, hold: 5m}, {weight: 100}]
  analysis:
    interval: INTERVAL
    baseline: true
    failureLimit: 2
    noData: {hold: true, rollbackAfter: 10m}
  guardrails: {maxStep: 25, minInterval: 1m, maxShiftsPerHour: 12}
"""


# ------------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    healthy: bool  # any rollback is a false one
    runs: int
    rps: float = 50.0
    fault_error: float | None = None  # the canary's error rate from the onset
    fault_latency: float = 1.0  # the canary's latency multiplier from the onset
    blip: bool = False
    gap: bool = False
    objective: str = "99.9"
    note: str = ""


SCENARIOS = (
    Scenario("healthy-noisy", True, 200, note="50 req/s, canary = stable"),
    Scenario("low-traffic", True, 200, rps=1.0, note="1 req/s"),
    Scenario("shared-blip", True, 200, blip=True, note="both versions 2-10 % errors, 90-150 s"),
    Scenario("metrics-gap", True, 200, gap=True, note="no data for 2-8 min"),
    Scenario("low-traffic-10rps", True, 200, rps=10.0, note="extra: 10 req/s"),
    Scenario("errors-1%", False, 100, fault_error=0.01),
    Scenario("errors-5%", False, 100, fault_error=0.05, note="DESIGN.md section 12 target"),
    Scenario("errors-5%-20rps", False, 100, rps=20.0, fault_error=0.05, note="extra: 20 req/s"),
    Scenario("errors-5%-75rps", False, 100, rps=75.0, fault_error=0.05, note="extra: 75 req/s"),
    Scenario(
        "errors-5%-100rps", False, 100, rps=100.0, fault_error=0.05, note="extra: at 100 req/s"
    ),
    Scenario("errors-20%", False, 100, fault_error=0.20),
    Scenario("latency-x4", False, 100, fault_latency=4.0, note="p95 137 -> 547 ms"),
    Scenario(
        "subtle-0.3%", False, 100, fault_error=0.003, objective="99.5", note="99.5 % objective"
    ),
)
TRIMTAB_INTERVALS = {"trimtab": "30s", "trimtab-1m": "1m"}  # trimtab's judges: their interval
JUDGES = (*TRIMTAB_INTERVALS, "flagger", "flagger-native")


def trimtab_interval(judge_name: str) -> str | None:
    """The analysis interval of a trimtab judge (``trimtab``, ``trimtab-1m``, or one that
    ``--interval`` adds, ``trimtab-<duration>``); ``None`` for the Flagger-style judges."""
    if judge_name in TRIMTAB_INTERVALS:
        return TRIMTAB_INTERVALS[judge_name]
    if judge_name.startswith("trimtab-"):
        return judge_name.removeprefix("trimtab-")
    return None


@dataclass(frozen=True)
class Outcome:
    scenario: str
    judge: str
    seed: int
    result: str  # "rollback", "promote" or "open"
    at: float  # seconds after the canary started
    onset: float  # when the fault, blip or gap began (seconds after the canary started)
    reason: str  # the kind of rollback
    simulated: float  # seconds of simulated time
    since_shift: float = math.inf  # seconds from the last weight change to the decision
    # trimtab only, for the signals table: seconds after the canary started, or None
    regression_before: float | None = None  # the first baseline REGRESSION before the onset
    regression_after: float | None = None  # the first baseline REGRESSION from the onset on
    bad_after: float | None = None  # the first canary verdict worse than the stable's, ditto


# -------------------------------------------------------------------------------------- sampling


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson variate: inversion for small means, PTRS (Hörmann 1993) above 10."""
    if lam <= 0.0:
        return 0
    if lam < 10.0:
        u = rng.random()
        k, pmf = 0, math.exp(-lam)
        cdf = pmf
        while u > cdf and k < 200:
            k += 1
            pmf *= lam / k
            cdf += pmf
        return k
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b) <= (
            -lam + k * loglam - math.lgamma(k + 1)
        ):
            return k


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial variate: inversion, or a normal approximation when n·p exceeds 50."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    q = 1.0 - p
    if n * p > 50.0:
        x = round(rng.gauss(n * p, math.sqrt(n * p * q)))
        return min(max(x, 0), n)
    u = rng.random()
    x, pmf, ratio = 0, q**n, p / q
    cdf = pmf
    while u > cdf and x < n:
        pmf *= ratio * (n - x) / (x + 1)
        x += 1
        cdf += pmf
    return x


@cache
def bucket_shares(median: float) -> tuple[float, ...]:
    """The share of requests in each latency bucket (not cumulative) for a lognormal."""

    def below(bound: float) -> float:
        if math.isinf(bound):
            return 1.0
        z = (math.log(bound) - math.log(median)) / LATENCY_SIGMA
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    shares, previous = [], 0.0
    for bound in BOUNDS:
        now = below(bound)
        shares.append(max(now - previous, 0.0))
        previous = now
    return tuple(shares)


def histogram_quantile(q: float, buckets: Sequence[int]) -> float:
    """Prometheus' ``histogram_quantile`` over per-bucket (non-cumulative) counts."""
    total = sum(buckets)
    if total == 0:
        return math.nan
    rank = q * total
    below = 0
    for i, count in enumerate(buckets):
        if below + count >= rank and count > 0:
            if math.isinf(BOUNDS[i]):
                return BOUNDS[i - 1]
            start = BOUNDS[i - 1] if i > 0 else 0.0
            return start + (BOUNDS[i] - start) * (rank - below) / count
        below += count
    return BOUNDS[-2]


# ------------------------------------------------------------------------------------- service

# A counter row: [requests, errors, bucket 0, …, bucket n], cumulative since the run began.
TOTAL, ERRORS, FIRST_BUCKET = 0, 1, 2


class Service:
    """Stable and canary, their true behaviour over time, and their cumulative counters."""

    def __init__(self, scenario: Scenario, seed: int, start: float) -> None:
        plan = random.Random(seed)
        self.scenario = scenario
        self.noise = random.Random(seed * 1_000_003 + 17)
        self.start = start  # absolute time the canary starts (the first step)
        self.onset = float(plan.randrange(36, 121)) * TICK  # minutes 3–10, on a tick
        self.canary_factor = plan.uniform(0.9, 1.1)
        minutes = int((start + HORIZON) // 60) + 2
        self.error_wander = [math.exp(plan.gauss(0.0, 0.25)) for _ in range(minutes)]
        self.traffic_wander = [math.exp(plan.gauss(0.0, 0.1)) for _ in range(minutes)]
        self.blip_length = float(plan.randrange(18, 31)) * TICK  # 90–150 s
        self.blip_rate = plan.uniform(0.02, 0.10)
        self.gap_length = float(plan.randrange(24, 97)) * TICK  # 2–8 min
        width = FIRST_BUCKET + len(BOUNDS)
        self.rows: dict[str, list[list[int]]] = {STABLE: [[0] * width], CANARY: [[0] * width]}

    # --- the truth

    def since_canary(self, t: float) -> float:
        return t - self.start

    def faulty(self, t: float) -> bool:
        return self.since_canary(t) >= self.onset

    def error_rate(self, version: str, t: float) -> float:
        wander = self.error_wander[int(t // 60)]
        rate = BASE_ERROR * wander
        s = self.scenario
        if version == CANARY:
            rate *= self.canary_factor
            if s.fault_error is not None and self.faulty(t):
                rate = s.fault_error
        if s.blip and self.onset <= self.since_canary(t) < self.onset + self.blip_length:
            rate = max(rate, self.blip_rate)
        return rate

    def latency_median(self, version: str, t: float) -> float:
        if version == CANARY and self.faulty(t):
            return LATENCY_MEDIAN * self.scenario.fault_latency
        return LATENCY_MEDIAN

    def metrics_missing(self, t: float) -> bool:
        since = self.since_canary(t)
        return self.scenario.gap and self.onset <= since < self.onset + self.gap_length

    # --- the counters

    @property
    def ticks(self) -> int:
        return len(self.rows[STABLE]) - 1

    def tick(self, weights: dict[str, int]) -> None:
        """Serve one tick of requests at ``weights`` and add them to the counters."""
        t = self.ticks * TICK
        rate = self.scenario.rps * self.traffic_wander[int(t // 60)]
        for version in (STABLE, CANARY):
            row = list(self.rows[version][-1])
            mean = rate * weights.get(version, 0) / 100.0 * TICK
            if mean > 0.0:
                shares = bucket_shares(self.latency_median(version, t))
                served = 0
                for i, share in enumerate(shares):
                    n = poisson(self.noise, mean * share)
                    row[FIRST_BUCKET + i] += n
                    served += n
                row[TOTAL] += served
                row[ERRORS] += binomial(self.noise, served, self.error_rate(version, t))
            self.rows[version].append(row)

    def increase(self, version: str, end: int, start: int) -> list[int]:
        """Counter increases from tick index ``start`` to ``end`` (``rate`` × window)."""
        rows = self.rows[version]
        return [a - b for a, b in zip(rows[end], rows[max(start, 0)], strict=True)]


# -------------------------------------------------------------------------------------- trimtab


@cache
def trimtab_config(
    objective: str, interval: str = TRIMTAB_INTERVALS["trimtab"]
) -> tuple[RolloutSpec, tuple[tuple[str, SLOSpec], ...]]:
    text = CONFIG.replace("OBJECTIVE", objective).replace("INTERVAL", interval)
    config = load_text(text, "bench/decisions.py")
    spec = config.rollouts["checkout"].spec
    slos = tuple((ref.name, config.slos[ref.name].spec) for ref in spec.slos)
    return spec, slos


def _classify(reason: str) -> str:
    if reason.startswith("UNAVAILABLE"):
        return "unavailable"
    if reason.startswith("no data"):
        return "noData timeout"
    if reason.startswith("paused"):
        return "pause timeout"
    if reason.startswith("baseline"):
        return "baseline"
    if reason.startswith("failure"):
        kinds = [k for k in ("DEGRADED", "baseline") if k in reason]
        return "failureLimit (" + "+".join(kinds or ["?"]) + ")"
    return reason[:40]


@dataclass(frozen=True)
class Mode:
    """How trimtab is measured: DESIGN.md section 5, or as ``controller/reconcile.py`` does."""

    clip: bool = True  # windows clipped to the time since the last shift
    baseline_window: bool = False  # baseline over the longest health window within the step
    change_points: bool = True  # the baseline test carried across evaluations (observe)
    carry: bool = True  # and across steps
    settings: BaselineSettings = field(default_factory=BaselineSettings)

    def describe(self) -> str:
        windows = "clipped to the last shift" if self.clip else "not clipped"
        if self.baseline_window:
            counts = "the longest health window within the step, each look on its own"
        elif not self.change_points:
            counts = "each step's counts as a whole (compare)"
        else:
            counts = "counts since the last shift, carried with change points (observe)"
            counts += ", a new test at each step" if not self.carry else ", across steps"
        s = self.settings
        return (
            f"windows {windows}; baseline on {counts}; alpha {s.alpha:g}, "
            f"first_weight {s.first_weight:g}"
        )


def run_trimtab(scenario: Scenario, seed: int, mode: Mode, name: str = "trimtab") -> Outcome:
    interval = trimtab_interval(name)
    if interval is None:
        raise ValueError(f"{name} is not a trimtab judge")
    spec, slos = trimtab_config(scenario.objective, interval)
    start = WARMUP if not mode.clip else 0.0
    svc = Service(scenario, seed, start)
    weights = {STABLE: 100, CANARY: 0}
    while svc.ticks * TICK < start:
        svc.tick(weights)
    memory = RolloutMemory()
    interval_ticks = round(spec.analysis.interval / TICK)
    shift_tick = svc.ticks
    signals: dict[str, float] = {}
    track = BaselineTrack()
    while True:
        k = svc.ticks
        t = k * TICK
        since = t - start
        if since >= HORIZON:
            return Outcome(
                scenario.name, name, seed, "open", since, svc.onset, "", since, **signals
            )
        if (k - round(start / TICK)) % interval_ticks == 0:
            missing = svc.metrics_missing(t)
            floor = shift_tick if mode.clip else 0
            health: dict[str, dict[str, Health]] = {}
            for version in (STABLE, CANARY):
                health[version] = {
                    name: judge(slo, {} if missing else _windows(svc, version, slo, k, floor))
                    for name, slo in slos
                }
            baseline: BaselineResult | None = None
            if spec.analysis.baseline and not missing:
                first = shift_tick
                if mode.baseline_window:
                    # controller/reconcile.py: the error SLO's longest health window that fits
                    # in the step, none in its first minute.
                    now = BASE + timedelta(seconds=t)
                    age = (now - (memory.step_started_at or now)).total_seconds()
                    fits = [w for w in health_windows(slos[0][1]) if w <= age]
                    first = max(k - round(fits[-1] / TICK), floor) if fits else k
                if first < k:
                    c = svc.increase(CANARY, k, first)
                    s = svc.increase(STABLE, k, first)
                    counts = (c[ERRORS], c[TOTAL], s[ERRORS], s[TOTAL])
                    if mode.change_points and not mode.baseline_window:
                        track, baseline = observe(track, *counts, mode.settings)
                    else:
                        baseline = compare(*counts, mode.settings)
            if baseline is not None and baseline.verdict is Verdict.REGRESSION:
                key = "regression_after" if since >= svc.onset else "regression_before"
                signals.setdefault(key, since)
            if since >= svc.onset and _worse(health):
                signals.setdefault("bad_after", since)
            now = BASE + timedelta(seconds=t)
            proposal = decide(spec, memory, health, baseline, weights, now)
            memory = proposal.memory
            if memory.phase in (Phase.ROLLED_BACK, Phase.PROMOTED):
                rolled = memory.phase is Phase.ROLLED_BACK
                why = _classify(proposal.reasons[0]) if rolled and proposal.reasons else ""
                return Outcome(
                    scenario.name,
                    name,
                    seed,
                    "rollback" if rolled else "promote",
                    since,
                    svc.onset,
                    why,
                    since,
                    (k - shift_tick) * TICK,
                    **signals,
                )
            if proposal.desired != weights:
                weights = dict(proposal.desired)
                shift_tick = k
                track = track.next_step() if mode.carry else BaselineTrack()
        svc.tick(weights)


def _worse(health: dict[str, dict[str, Health]]) -> bool:
    """Whether the canary is DEGRADED or UNAVAILABLE on an SLO where the stable is better."""
    return any(
        h.level in (Level.DEGRADED, Level.UNAVAILABLE) and health[STABLE][name].level < h.level
        for name, h in health[CANARY].items()
    )


def _windows(
    svc: Service, version: str, slo: SLOSpec, k: int, floor: int
) -> dict[float, WindowMeasurement]:
    """The measurements of ``slo`` for ``version`` at tick ``k``, windows clipped at ``floor``."""
    out = {}
    quantile = slo.indicator.quantile
    for window in health_windows(slo):
        first = max(k - round(window / TICK), floor)
        if first >= k:
            continue  # an empty window: no value
        d = svc.increase(version, k, first)
        total = d[TOTAL]
        if quantile is not None:
            value = histogram_quantile(quantile.quantile, d[FIRST_BUCKET:])
        else:
            value = d[ERRORS] / total if total else math.nan  # 0/0 is NaN, as in PromQL
        out[window] = WindowMeasurement(value, float(total))
    return out


# -------------------------------------------------------------------------------------- flagger


def run_flagger(scenario: Scenario, seed: int, native: bool) -> Outcome:
    name = "flagger-native" if native else "flagger"
    svc = Service(scenario, seed, 0.0)
    weights = {STABLE: 100, CANARY: 0}
    failed = 0
    step = -1
    step_started = 0.0
    every = round(FLAGGER_INTERVAL / TICK)
    while True:
        k = svc.ticks
        t = k * TICK
        if t >= HORIZON:
            return Outcome(scenario.name, name, seed, "open", t, svc.onset, "", t)
        if k % every == 0:
            if failed >= FLAGGER_THRESHOLD:
                why = f"failedChecks {failed}"
                return Outcome(scenario.name, name, seed, "rollback", t, svc.onset, why, t)
            if step < 0:  # the first interval starts the canary without analysis
                step, step_started = 0, t
                first = NATIVE_STEP if native else TRIMTAB_STEPS[0][0]
                weights = {STABLE: 100 - first, CANARY: first}
            elif not _flagger_checks(svc, k):
                failed += 1  # halt advancement
            elif native:
                if weights[CANARY] >= NATIVE_MAX:
                    return Outcome(scenario.name, name, seed, "promote", t, svc.onset, "", t)
                w = weights[CANARY] + NATIVE_STEP
                weights = {STABLE: 100 - w, CANARY: w}
            elif t - step_started >= TRIMTAB_STEPS[step][1]:
                if step + 1 >= len(TRIMTAB_STEPS):
                    return Outcome(scenario.name, name, seed, "promote", t, svc.onset, "", t)
                step, step_started = step + 1, t
                w = TRIMTAB_STEPS[step][0]
                weights = {STABLE: 100 - w, CANARY: w}
        svc.tick(weights)


def _flagger_checks(svc: Service, k: int) -> bool:
    """Flagger's builtin request-success-rate and request-duration checks over the last 1m."""
    if svc.metrics_missing(k * TICK):
        return False  # no values found / query failed: the check fails
    d = svc.increase(CANARY, k, k - round(60.0 / TICK))
    if d[TOTAL] == 0:
        # An empty result fails; an existing canary without requests in the window gives
        # 0/0 = NaN, and NaN < 99 is false in Go: the check passes.
        return svc.rows[CANARY][k][TOTAL] > 0
    success = 100.0 * (d[TOTAL] - d[ERRORS]) / d[TOTAL]
    if success < FLAGGER_MIN_SUCCESS:
        return False
    return not histogram_quantile(0.99, d[FIRST_BUCKET:]) > FLAGGER_MAX_P99


# --------------------------------------------------------------------------------------- report


def run(job: tuple[str, str, int, Mode]) -> Outcome:
    scenario_name, judge_name, seed, mode = job
    scenario = next(s for s in SCENARIOS if s.name == scenario_name)
    if trimtab_interval(judge_name) is not None:
        return run_trimtab(scenario, seed, mode, judge_name)
    return run_flagger(scenario, seed, native=judge_name == "flagger-native")


def _interval(judge_name: str) -> float:
    interval = trimtab_interval(judge_name)
    if interval is not None:
        return trimtab_config("99.9", interval)[0].analysis.interval
    return FLAGGER_INTERVAL


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def report(
    outcomes: Iterable[Outcome], elapsed: float, mode: Mode, judges: Sequence[str] = JUDGES
) -> str:
    by: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by[(o.scenario, o.judge)].append(o)
    head = (
        f"{'scenario':<18} {'judge':<15} {'runs':>4} {'rollbk':>6} {'false':>5} {'promo':>5} "
        f"{'open':>4}  {'detect s med/p90/max':>20} {'≤2 iv':>6} {'iv med':>6}  "
        f"{'sim h':>6}  rollback reasons"
    )
    lines = [head, "-" * len(head)]
    simulated = 0.0
    for scenario in SCENARIOS:
        shown = len(lines)
        for judge_name in judges:
            rows = by.get((scenario.name, judge_name))
            if not rows:
                continue
            sim = sum(o.simulated for o in rows)
            simulated += sim
            backs = [o for o in rows if o.result == "rollback"]
            promos = sum(o.result == "promote" for o in rows)
            opened = sum(o.result == "open" for o in rows)
            if scenario.healthy:
                false = len(backs)
                detected: list[Outcome] = []
            else:
                false = sum(o.at < o.onset for o in backs)
                detected = [o for o in backs if o.at >= o.onset]
            detect, ivs, within = "-", "-", "-"
            if detected:
                times = [o.at - o.onset for o in detected]
                detect = f"{statistics.median(times):.0f}/{_pct(times, 0.9):.0f}/{max(times):.0f}"
                iv = _interval(judge_name)
                # The fault reaches the metrics at the end of its first tick.
                spans = [(o.at - o.onset - TICK) / iv for o in detected]
                within = f"{sum(x <= 2.0 for x in spans) / len(rows):.0%}"
                ivs = f"{statistics.median(spans):.1f}"
            reasons = Counter(o.reason for o in backs)
            early = Counter(o.reason for o in backs if o.since_shift <= EARLY)
            why = ", ".join(
                f"{r} {n}" + (f" ({early[r]} ≤1m after a shift)" if early[r] else "")
                for r, n in reasons.most_common()
            )
            lines.append(
                f"{scenario.name:<18} {judge_name:<15} {len(rows):>4} {len(backs):>6} "
                f"{false:>5} {promos:>5} {opened:>4}  {detect:>20} {within:>6} {ivs:>6}  "
                f"{sim / 3600:>6.1f}  {why}"
            )
        if len(lines) > shown:  # a blank line after each scenario run
            lines.append("")
    lines.extend(["", *_signals(by)])
    lines.append(
        f"simulated {simulated / 3600:,.0f} h of canaries in {elapsed:.0f} s wall-clock; "
        f"trimtab: {mode.describe()}"
    )
    lines.append(
        "false: healthy kinds, every rollback; fault kinds, rollbacks before the onset. "
        "promo in a fault kind: the fault was missed."
    )
    lines.append(
        "≤2 iv: share of all runs rolled back within 2 analysis intervals (30 s trimtab, 1m "
        "trimtab-1m and Flagger, D trimtab-D) of the fault reaching the metrics; iv med: median "
        "of that span in intervals."
    )
    return "\n".join(lines)


def _signals(by: dict[tuple[str, str], list[Outcome]]) -> list[str]:
    """What trimtab's judgements saw, apart from what the policy did with them."""
    head = (
        f"{'trimtab signals':<18} {'runs':>4} {'REGRESSION':>10}  {'first worse verdict':>20} "
        f"{'first REGRESSION':>17} {'rollback':>13}"
    )
    lines = [head, "-" * len(head)]
    for scenario in SCENARIOS:
        rows = by.get((scenario.name, "trimtab"))
        if not rows:
            continue
        if scenario.healthy:
            alarms = sum(
                o.regression_before is not None or o.regression_after is not None for o in rows
            )
            cells = ["", "", ""]
        else:
            alarms = sum(o.regression_before is not None for o in rows)
            cells = [
                _spread([o.bad_after for o in rows], rows),
                _spread([o.regression_after for o in rows], rows),
                _spread(
                    [o.at if o.result == "rollback" and o.at >= o.onset else None for o in rows],
                    rows,
                ),
            ]
        lines.append(
            f"{scenario.name:<18} {len(rows):>4} {alarms:>10}  {cells[0]:>20} {cells[1]:>17} "
            f"{cells[2]:>13}"
        )
    lines.append(
        "REGRESSION: runs in which the baseline test said REGRESSION at least once (fault kinds: "
        "before the onset) — each would be a false rollback if a REGRESSION rolled back at once."
    )
    lines.append(
        "Other columns: analysis intervals (30 s) from the fault reaching the metrics, median/p90, "
        "with the number of runs that saw it; 'worse verdict': the canary DEGRADED or "
        "UNAVAILABLE where the stable is not."
    )
    return lines


def _spread(times: Sequence[float | None], rows: Sequence[Outcome]) -> str:
    spans = [
        (t - o.onset - TICK) / _interval("trimtab")
        for t, o in zip(times, rows, strict=True)
        if t is not None
    ]
    if not spans:
        return "-"
    return f"{statistics.median(spans):.1f}/{_pct(spans, 0.9):.1f} ({len(spans)})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-scale", type=float, default=1.0, help="scale every run count")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=1, help="first seed; run i uses seed + i")
    parser.add_argument(
        "--no-clip", action="store_true", help="measure full windows, not clipped to the last shift"
    )
    parser.add_argument(
        "--baseline-window",
        action="store_true",
        help="baseline over the longest health window within the step (as controller/reconcile.py)",
    )
    parser.add_argument(
        "--no-change-points",
        action="store_true",
        help="the baseline test on the step's counts as a whole (compare), not carried across "
        "evaluations with change points (observe)",
    )
    parser.add_argument("--per-step", action="store_true", help="a new baseline test at every step")
    parser.add_argument("--alpha", type=float, default=BaselineSettings.alpha)
    parser.add_argument("--first-weight", type=float, default=BaselineSettings.first_weight)
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument(
        "--judge", action="append", help=f"only these judges ({', '.join(JUDGES)}, trimtab-<d>)"
    )
    parser.add_argument(
        "--interval",
        action="append",
        default=[],
        metavar="DURATION",
        help="also run trimtab at this analysis interval, as the judge trimtab-DURATION",
    )
    args = parser.parse_args(argv)
    judges = [*JUDGES, *(f"trimtab-{d}" for d in args.interval if f"trimtab-{d}" not in JUDGES)]
    for name in args.judge or ():
        if name not in judges:
            parser.error(f"--judge {name}: not one of {', '.join(judges)}")
    for duration in args.interval:
        try:
            trimtab_config("99.9", duration)
        except TrimtabError as error:
            parser.error(f"--interval {duration}: {error}")
    settings = BaselineSettings(alpha=args.alpha, first_weight=args.first_weight)
    mode = Mode(
        clip=not args.no_clip,
        baseline_window=args.baseline_window,
        change_points=not args.no_change_points,
        carry=not args.per_step,
        settings=settings,
    )
    jobs = [
        (s.name, j, args.seed + i, mode)
        for s in SCENARIOS
        if not args.scenario or s.name in args.scenario
        for j in judges
        if not args.judge or j in args.judge
        for i in range(max(1, round(s.runs * args.runs_scale)))
    ]
    began = time.monotonic()
    if args.workers > 1:
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            outcomes = list(pool.imap_unordered(run, jobs, chunksize=8))
    else:
        outcomes = [run(job) for job in jobs]
    print(report(outcomes, time.monotonic() - began, mode, judges))


if __name__ == "__main__":
    main()
