"""The baseline comparison: is the canary's bad-event rate worse than the stable's?

A Rollout's ``analysis.baseline`` compares the canary's bad events (errors, or slow requests) and
requests with the stable's. The answer is REGRESSION or NO_EVIDENCE — never "passed" — and it may
be asked every analysis interval without inflating false rollbacks: the test is *anytime-valid*.
Low traffic gives NO_EVIDENCE, never REGRESSION.

* :func:`compare` tests a window's counts as a whole: "worse since the window began".
* :func:`observe` (cumulative counts) and :func:`extend` (new counts) carry the test from one
  evaluation to the next in a :class:`BaselineTrack`, through every step of a rollout, and also
  find a canary that *became* worse part-way (see "Change points" below). The controller uses
  these.

Method — a conditional binomial test, made sequential by the method of mixtures:

* Condition on the number of bad events ``n = x + m`` (``x`` canary, ``m`` stable). With requests
  ``Nc`` and ``Ns`` and Poisson bad rates ``rc`` and ``rs``, each bad event is the canary's with
  probability ``p(θ) = Nc·θ / (Nc·θ + Ns)``, where ``θ = rc / rs`` is the rate ratio. The request
  rates and the shared baseline rate cancel: a dependency blip that hurts both sides alike is no
  evidence against the canary.
* Null hypothesis: ``θ ≤ 1 + tolerance`` (a regression under 10 % is not worth a rollback), i.e.
  ``p ≤ p0 = p(1 + tolerance)``.
* The e-value is a likelihood ratio mixed over alternatives, the rate ratios in
  ``BaselineSettings.ratios`` with equal weights (Robbins' method of mixtures, with a discrete
  prior):  ``E = mean_k  (p_k / p0)^x · ((1 − p_k) / (1 − p0))^m``,  ``p_k = p(θ_k)``.
  Read event by event, each term is a nonnegative martingale when ``p = p0`` and, because every
  ``θ_k`` exceeds ``1 + tolerance``, a supermartingale when ``p < p0``; so is their mean. Ville's
  inequality then gives ``P(sup_t E_t ≥ 1/α) ≤ α`` under the null: rejecting when
  ``E ≥ 1/α`` keeps false rollbacks at or below ``α`` however often the test is looked at
  (Ville 1939; Robbins 1970; the e-value / "safe anytime-valid inference" view of Vovk, Shafer,
  Ramdas and others).
* The prior is put on the rate ratio, not on ``p``: a Beta prior over ``p`` spends its mass on
  ratios that depend on the traffic split (uniform on ``[p0, 1]`` at 5 % weight mostly tests
  "20× worse"). A prior over ``p`` that is centred at ``p0`` and not truncated is *not* valid for
  the composite null: its components below ``p0`` grow when the canary is *better*.
  A discrete prior is exact (no quadrature) and costs ``ln K`` in the threshold.
* Adding canary bad events never lowers ``E`` (each ``p_k / p0 > 1``); adding stable ones never
  raises it.

Parameters (:class:`BaselineSettings`): ``alpha`` 0.01 (threshold ``1/α`` = 100), ``tolerance``
0.1, ``ratios`` 1.5×, 2×, 3×, 5×, 10×, 30×, 100×; ``first_weight`` 0.25 (below); and
``min_bad_events`` 4: REGRESSION also needs this many canary bad events in the step, so a few
bad requests never roll back (DESIGN §1.3; with 3, ``bench/decisions.py`` saw 1 false rollback in
200 low-traffic canaries, with 4 none, and the same detection times). It only makes rejection
harder, so validity is kept. (One event alone gives at most ``mean(θ_k) / (1 + tolerance)`` ≈
19.7 with these ratios, however small the canary's share.)

Change points. A canary that turns bad ten minutes into a step is diluted in the step's counts
as a whole: the stable's bad events of those ten minutes weigh against it, and ``E`` needs many
more canary bad events to reach ``1/α``. So every evaluation whose new counts hold a bad event
starts a *component*: the same e-value, on the counts from that evaluation on. The e-value judged
is their mixture ``M = Σ_j w_j E_j`` (a component not yet started counts as 1), with prior weights
``w_0 = first_weight`` for the first and ``(1 − first_weight) / (j (j + 1))`` for the ``j``-th
after it, which sum to one. Each component is a test supermartingale under the null from its
start (a start depends on when bad events arrive, never on whose they are), so ``M`` is one too,
starting at 1: Ville's bound holds for the mixture as for one test (the "mixture over change
points" of the e-detectors of Shin, Ramdas and Rinaldo 2023, with probability rather than
average-run-length control). The update is one line per alternative ratio:
``S_k ← e_k · (S_k + w_j)`` with ``e_k`` the new counts' likelihood ratio, and
``M = mean_k S_k + (the weight not yet started)``; a :class:`BaselineTrack` holds the ``S_k`` in
logs, the number of components and the counts so far.

The test runs through every step of a rollout: each stretch of counts is judged at the split it
was served at (``p0`` from that stretch's request counts), so the product over stretches is still
a supermartingale and the bound covers the whole rollout, not each step — a healthy canary faces
``α`` once, not once per step. :meth:`BaselineTrack.next_step` keeps the evidence and counts the
new step's windows from zero. Should the split drift within a stretch, ``p0`` is taken from its
pooled request counts, which is exact only for a constant split.

With ``first_weight`` 0.25, ``bench/decisions.py`` (seed 1) catches the 0.1 % → 5 % fault at 10 %
weight within two 30 s intervals in 95 % of runs (82 % with the step's counts as a whole), and the
subtle 0.1 % → 0.3 % regression in 82 % of runs (57 %), with no false rollback in 1,000 healthy
runs. The runs caught later are short of evidence, not of prior weight: spreading the change
points' weight evenly over the first 10–100 (then the same tail) caught 93–97 %, and ``alpha``
0.05 caught 99 % with a false rollback among the 10 req/s canaries. In those runs the canary
served some 250–300 requests and 4–7 errors in the two intervals, against 2–7 of the stable's:
one look that knew when the fault began would give p = 0.0001–0.005, short of what a test that
looks every interval and does not know the start needs at ``alpha`` 0.01.

Counts may be fractional (Prometheus ``increase`` extrapolates to the window's edges); each is
rounded to the nearest integer, an error under half an event. Data never raises: negative, NaN,
infinite or implausibly large (over 2**53) counts, more bad events than requests after rounding,
and no requests on either side give NO_EVIDENCE with a reason. Invalid settings raise ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "BaselineResult",
    "BaselineSettings",
    "BaselineTrack",
    "Verdict",
    "compare",
    "extend",
    "observe",
]

_MAX_COUNT = 2.0**53  # beyond this a float no longer counts requests one by one
_NAMES = ("canary_bad", "canary_total", "stable_bad", "stable_total")


class Verdict(StrEnum):
    """What the baseline comparison concluded."""

    REGRESSION = "REGRESSION"  # the canary is worse than the stable, beyond the tolerance
    NO_EVIDENCE = "NO_EVIDENCE"  # not enough evidence of a regression (or too little data)


@dataclass(frozen=True)  # one per controller: no slots, so its defaults read as values
class BaselineSettings:
    """The parameters of the test; see the module docstring for what each does."""

    alpha: float = 0.01
    tolerance: float = 0.1
    ratios: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
    min_bad_events: int = 4
    first_weight: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), not {self.alpha!r}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0.0):
            raise ValueError(f"tolerance must be finite and ≥ 0, not {self.tolerance!r}")
        if not self.ratios:
            raise ValueError("ratios must name at least one alternative")
        for ratio in self.ratios:
            # A ratio inside the null would make the mixture grow under it: no longer valid.
            if not (math.isfinite(ratio) and ratio > 1.0 + self.tolerance):
                raise ValueError(
                    f"every ratio must be finite and above 1 + tolerance "
                    f"({1.0 + self.tolerance:g}), not {ratio!r}"
                )
        if not 0.0 < self.first_weight <= 1.0:
            raise ValueError(f"first_weight must be in (0, 1], not {self.first_weight!r}")
        if self.min_bad_events < 0:
            raise ValueError(f"min_bad_events must be ≥ 0, not {self.min_bad_events!r}")

    @property
    def threshold(self) -> float:
        """The e-value at which the canary is judged a regression: ``1 / alpha``."""
        return 1.0 / self.alpha


class BaselineResult(NamedTuple):
    """The verdict, the e-value behind it, and the counts it was computed from (as given).
    Immutable; a tuple, four times faster to build than a frozen dataclass (one per Rollout per
    cycle)."""

    verdict: Verdict
    e_value: float  # ≥ 0; +inf when it overflows a float
    log_e_value: float
    canary_bad: float
    canary_total: float
    stable_bad: float
    stable_total: float
    canary_rate: float | None  # bad ÷ total, rounded counts; None without usable data
    stable_rate: float | None
    null_share: float | None  # p0: the canary's largest share of bad events under the null
    threshold: float
    reason: str


def _count(value: float) -> int | None:
    """The nearest integer, or None when ``value`` is not a count."""
    if not (math.isfinite(value) and 0.0 <= value <= _MAX_COUNT):
        return None
    return math.floor(value + 0.5)


def _e(log_e: float) -> float:
    return math.inf if log_e > 709.0 else math.exp(log_e)  # math.exp raises past ~709.78


def _log_mean_exp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


def _log_terms(
    canary_bad: int, canary_total: int, stable_bad: int, stable_total: int, s: BaselineSettings
) -> list[float]:
    """Per alternative ``θ_k``, the log likelihood ratio of the counts; ``0`` without requests."""
    if canary_total + stable_total == 0:
        return [0.0] * len(s.ratios)
    share = canary_total / (canary_total + stable_total)
    null_log = math.log1p(share * s.tolerance)
    terms = []
    for ratio, log_lift in zip(s.ratios, _log_lifts(s.ratios, s.tolerance), strict=True):
        # log((1 − p_k) / (1 − p0)) ≤ 0 and log(p_k / p0) = log(θ_k / (1 + δ)) + that
        log_miss = null_log - math.log1p(share * (ratio - 1.0))
        terms.append(canary_bad * (log_lift + log_miss) + stable_bad * log_miss)
    return terms


@lru_cache(maxsize=64)
def _log_lifts(ratios: tuple[float, ...], tolerance: float) -> tuple[float, ...]:
    """``log(θ_k / (1 + δ))`` per alternative (worked out once per settings)."""
    return tuple(math.log(ratio) - math.log1p(tolerance) for ratio in ratios)


def _log_e_value(
    canary_bad: int, canary_total: int, stable_bad: int, stable_total: int, s: BaselineSettings
) -> float:
    """The natural log of the mixture e-value; both totals must be positive."""
    return _log_mean_exp(_log_terms(canary_bad, canary_total, stable_bad, stable_total, s))


def _checked(
    given: tuple[float, float, float, float], *, served: bool
) -> tuple[tuple[int, int, int, int] | None, str]:
    """The counts rounded to integers, or ``None`` and why they cannot be judged; with
    ``served``, both sides must have served requests."""
    cb, ct, sb, st = (_count(v) for v in given)
    if cb is None or ct is None or sb is None or st is None:
        named = zip(_NAMES, given, (cb, ct, sb, st), strict=True)
        wrong = ", ".join(f"{name}={value!r}" for name, value, c in named if c is None)
        return None, f"not a count: {wrong}"
    if served and (ct == 0 or st == 0):
        return None, f"the {'canary' if ct == 0 else 'stable'} served no requests in the window"
    if cb > ct or sb > st:
        side = "canary" if cb > ct else "stable"
        return None, f"the {side} has more bad events than requests"
    return (cb, ct, sb, st), ""


def _judged(
    given: tuple[float, float, float, float],
    counts: tuple[int, int, int, int],
    log_e: float,
    settings: BaselineSettings,
    how: str,
) -> BaselineResult:
    """The verdict on ``counts`` (the ones to report) given the log e-value."""
    cb, ct, sb, st = counts
    threshold = settings.threshold
    rates = (cb / ct, sb / st)
    p0 = ct * (1.0 + settings.tolerance) / (ct * (1.0 + settings.tolerance) + st)

    def result(verdict: Verdict, reason: str) -> BaselineResult:
        return BaselineResult(verdict, _e(log_e), log_e, *given, *rates, p0, threshold, reason)

    if cb + sb == 0:
        return result(Verdict.NO_EVIDENCE, "no bad events on either side")
    summary = (
        f"canary {cb}/{ct} bad ({rates[0]:.3%}) vs stable {sb}/{st} ({rates[1]:.3%}): "
        f"{how}e-value {_e(log_e):.3g}"
    )
    if log_e < math.log(threshold):
        return result(Verdict.NO_EVIDENCE, f"{summary} < {threshold:g}: not enough evidence")
    if cb < settings.min_bad_events:
        return result(
            Verdict.NO_EVIDENCE,
            f"{summary}, but only {cb} canary bad events (at least "
            f"{settings.min_bad_events} are needed)",
        )
    return result(
        Verdict.REGRESSION,
        f"{summary} ≥ {threshold:g}: worse than the stable by more than "
        f"{settings.tolerance:.0%} (α = {settings.alpha:g}, anytime-valid)",
    )


def _no_evidence(
    given: tuple[float, float, float, float], settings: BaselineSettings, reason: str
) -> BaselineResult:
    return BaselineResult(
        Verdict.NO_EVIDENCE, 1.0, 0.0, *given, None, None, None, settings.threshold, reason
    )


def compare(
    canary_bad: float,
    canary_total: float,
    stable_bad: float,
    stable_total: float,
    settings: BaselineSettings = BaselineSettings(),  # frozen: safe to share
) -> BaselineResult:
    """Compare the canary's bad events with the stable's over the same window, once.

    The e-value is the mixture over :attr:`BaselineSettings.ratios` of the counts as a whole:
    the test for "worse since the window began". :func:`observe` carries the test from one
    evaluation to the next and also finds a canary that *became* worse later.
    Never raises for data: anything it cannot judge is NO_EVIDENCE, with the reason.
    """
    given = (canary_bad, canary_total, stable_bad, stable_total)
    counts, why = _checked(given, served=True)
    if counts is None:
        return _no_evidence(given, settings, why)
    cb, ct, sb, st = counts
    return _judged(given, counts, _log_e_value(cb, ct, sb, st, settings), settings, "")


@dataclass(frozen=True, slots=True)
class BaselineTrack:
    """The baseline test of a rollout, carried from one evaluation to the next.

    ``counts`` are the current step's cumulative counts (canary bad, canary total, stable bad,
    stable total) as of the last evaluation; ``log_terms`` the log of the change-point mixture
    per alternative ratio (empty before the first component); ``started`` how many components
    (possible change points) have begun. A rollout starts from ``BaselineTrack()``; each new
    step goes on from :meth:`next_step`.
    """

    counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    log_terms: tuple[float, ...] = ()
    started: int = 0

    def next_step(self) -> BaselineTrack:
        """The track at a shift: the test goes on (each count is judged at the split it was
        served at), the cumulative counts begin again with the new step's windows."""
        return BaselineTrack((0, 0, 0, 0), self.log_terms, self.started)

    def to_json(self) -> dict[str, object]:
        return {
            "counts": list(self.counts),
            "logTerms": list(self.log_terms),
            "started": self.started,
        }

    @classmethod
    def from_json(cls, data: object) -> BaselineTrack:
        """The track saved by :meth:`to_json`; ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a baseline track is an object")
        counts = data.get("counts")
        terms = data.get("logTerms")
        started = data.get("started")
        if not (
            isinstance(counts, list)
            and len(counts) == 4
            and all(type(c) is int and c >= 0 for c in counts)
            and isinstance(terms, list)
            and all(
                isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
                for t in terms
            )
            and type(started) is int
            and started >= 0
            and (len(terms) == 0) == (started == 0)
        ):
            raise ValueError(f"not a baseline track: {data!r}")
        return cls((counts[0], counts[1], counts[2], counts[3]), tuple(map(float, terms)), started)


def _log_remaining(started: int, s: BaselineSettings) -> float:
    """The log prior mass of the change points not yet started (``-inf`` for none)."""
    if started == 0:
        return 0.0
    rest = (1.0 - s.first_weight) / started
    return math.log(rest) if rest > 0.0 else -math.inf


def _log_weight(j: int, s: BaselineSettings) -> float:
    """The log prior weight of the ``j``-th change point (0: the step's start)."""
    w = s.first_weight if j == 0 else (1.0 - s.first_weight) / (j * (j + 1))
    return math.log(w) if w > 0.0 else -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def observe(
    track: BaselineTrack,
    canary_bad: float,
    canary_total: float,
    stable_bad: float,
    stable_total: float,
    settings: BaselineSettings = BaselineSettings(),
) -> tuple[BaselineTrack, BaselineResult]:
    """One evaluation of the baseline test on counts *cumulative since the step began* (what a
    window clipped to the last shift measures): the track afterwards, and the verdict.

    What is new since ``track`` — never negative, never counted twice — extends the test (see
    :func:`extend`). Data that cannot be judged leaves the track as it was. Never raises for
    data.
    """
    given = (canary_bad, canary_total, stable_bad, stable_total)
    counts, why = _checked(given, served=False)
    if counts is None:
        return track, _no_evidence(given, settings, why)
    cb, ct, sb, st = counts
    ob, ot, osb, ost = track.counts
    new = (max(0, cb - ob), max(0, ct - ot), max(0, sb - osb), max(0, st - ost))
    seen = (max(cb, ob), max(ct, ot), max(sb, osb), max(st, ost))
    return _extended(track, new, seen, settings)


def extend(
    track: BaselineTrack,
    canary_bad: float,
    canary_total: float,
    stable_bad: float,
    stable_total: float,
    settings: BaselineSettings = BaselineSettings(),
) -> tuple[BaselineTrack, BaselineResult]:
    """One evaluation of the baseline test on counts *new since the track's last data* (a
    window that does not overlap what was counted before): the track afterwards, and the
    verdict on everything counted in the step.

    The new counts extend every running component; a new component starts when they hold a
    bad event. Data that cannot be judged leaves the track as it was. Never raises for data.
    """
    given = (canary_bad, canary_total, stable_bad, stable_total)
    counts, why = _checked(given, served=False)
    if counts is None:
        return track, _no_evidence(given, settings, why)
    seen = tuple(a + b for a, b in zip(counts, track.counts, strict=True))
    return _extended(track, counts, seen, settings)


def _extended(
    track: BaselineTrack,
    new: tuple[int, ...],
    seen: tuple[int, ...],
    settings: BaselineSettings,
) -> tuple[BaselineTrack, BaselineResult]:
    nt, nst = new[1], new[3]
    nb, ns = min(new[0], nt), min(new[2], nst)  # bad events without requests are not counted
    log_terms, started = track.log_terms, track.started
    if nb + ns > 0:
        start = _log_weight(started, settings)
        fresh = _log_terms(nb, nt, ns, nst, settings)
        if log_terms and start == -math.inf:  # a change point without prior weight
            log_terms = tuple(o + f for o, f in zip(log_terms, fresh, strict=True))
        elif log_terms:  # _logaddexp(o, start) + f, inlined (every Rollout, every cycle)
            log_terms = tuple(
                (o if o > start else start) + math.log(1.0 + math.exp(-abs(o - start))) + f
                for o, f in zip(log_terms, fresh, strict=True)
            )
        else:  # the first component: log(0 + e^start) = start
            log_terms = tuple(start + f for f in fresh)
        started += 1
    counts = (seen[0], seen[1], seen[2], seen[3])
    moved = BaselineTrack(counts, log_terms, started)
    given = (float(seen[0]), float(seen[1]), float(seen[2]), float(seen[3]))
    if seen[1] == 0 or seen[3] == 0:
        side = "canary" if seen[1] == 0 else "stable"
        return moved, _no_evidence(given, settings, f"the {side} served no requests in the step")
    log_e = 0.0  # no component yet: the prior mass, all unstarted
    if log_terms:
        log_e = _logaddexp(_log_mean_exp(list(log_terms)), _log_remaining(started, settings))
    how = f"{started} change points, " if started > 1 else ""
    return moved, _judged(given, counts, log_e, settings, how)
