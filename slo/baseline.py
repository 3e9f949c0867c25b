"""The baseline comparison: is the canary's bad-event rate worse than the stable's?

:func:`compare` judges a Rollout's ``analysis.baseline``: the canary's bad events (errors, or slow
requests) and requests against the stable's over the same window. It answers REGRESSION or
NO_EVIDENCE — never "passed" — and it may be asked every analysis interval without inflating
false rollbacks: the test is *anytime-valid*. Low traffic gives NO_EVIDENCE, never REGRESSION.

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
0.1, ``ratios`` 1.5×, 2×, 3×, 5×, 10×, 30×, 100×; and ``min_bad_events`` 4: REGRESSION also
needs this many canary bad events, so a few bad requests never roll back (DESIGN §1.3; with 3,
``bench/decisions.py`` saw 1 false rollback in 200 low-traffic canaries, with 4 none, and the
same detection times). It only makes rejection harder, so validity is kept. (One event alone
gives at most ``mean(θ_k) / (1 + tolerance)`` ≈ 19.7 with these ratios, however small the
canary's share.)

The counts are those since the current step began: trimtab clips the analysis window to the time
since the last shift, so each step runs a fresh sequential test, and the weight — hence the split
— is constant within it. Should the split drift within a step, ``p0`` is taken from the pooled
request counts, which is exact only for a constant split.

Counts may be fractional (Prometheus ``increase`` extrapolates to the window's edges); each is
rounded to the nearest integer, an error under half an event. Data never raises: negative, NaN,
infinite or implausibly large (over 2**53) counts, more bad events than requests after rounding,
and no requests on either side give NO_EVIDENCE with a reason. Invalid settings raise ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BaselineResult", "BaselineSettings", "Verdict", "compare"]

_MAX_COUNT = 2.0**53  # beyond this a float no longer counts requests one by one
_NAMES = ("canary_bad", "canary_total", "stable_bad", "stable_total")


class Verdict(StrEnum):
    """What the baseline comparison concluded."""

    REGRESSION = "REGRESSION"  # the canary is worse than the stable, beyond the tolerance
    NO_EVIDENCE = "NO_EVIDENCE"  # not enough evidence of a regression (or too little data)


@dataclass(frozen=True)
class BaselineSettings:
    """The parameters of the test; see the module docstring for what each does."""

    alpha: float = 0.01
    tolerance: float = 0.1
    ratios: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)
    min_bad_events: int = 4

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
        if self.min_bad_events < 0:
            raise ValueError(f"min_bad_events must be ≥ 0, not {self.min_bad_events!r}")

    @property
    def threshold(self) -> float:
        """The e-value at which the canary is judged a regression: ``1 / alpha``."""
        return 1.0 / self.alpha


@dataclass(frozen=True)
class BaselineResult:
    """The verdict, the e-value behind it, and the counts it was computed from (as given)."""

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


def _log_e_value(
    canary_bad: int, canary_total: int, stable_bad: int, stable_total: int, s: BaselineSettings
) -> float:
    """The natural log of the mixture e-value; both totals must be positive."""
    share = canary_total / (canary_total + stable_total)
    null_log = math.log1p(share * s.tolerance)
    terms = []
    for ratio in s.ratios:
        # log((1 − p_k) / (1 − p0)) ≤ 0 and log(p_k / p0) = log(θ_k / (1 + δ)) + that
        log_miss = null_log - math.log1p(share * (ratio - 1.0))
        log_hit = math.log(ratio) - math.log1p(s.tolerance) + log_miss
        terms.append(canary_bad * log_hit + stable_bad * log_miss)
    return _log_mean_exp(terms)


def compare(
    canary_bad: float,
    canary_total: float,
    stable_bad: float,
    stable_total: float,
    settings: BaselineSettings = BaselineSettings(),  # frozen: safe to share
) -> BaselineResult:
    """Compare the canary's bad events with the stable's over the same window.

    Never raises for data: anything it cannot judge is NO_EVIDENCE, with the reason.
    """
    given = (canary_bad, canary_total, stable_bad, stable_total)
    threshold = settings.threshold

    def result(
        verdict: Verdict,
        reason: str,
        log_e: float = 0.0,
        rates: tuple[float | None, float | None] = (None, None),
        null_share: float | None = None,
    ) -> BaselineResult:
        return BaselineResult(
            verdict, _e(log_e), log_e, *given, *rates, null_share, threshold, reason
        )

    counts = [_count(v) for v in given]
    if None in counts:
        named = zip(_NAMES, given, counts, strict=True)
        wrong = ", ".join(f"{name}={value!r}" for name, value, c in named if c is None)
        return result(Verdict.NO_EVIDENCE, f"not a count: {wrong}")
    cb, ct, sb, st = (c for c in counts if c is not None)
    if ct == 0 or st == 0:
        side = "canary" if ct == 0 else "stable"
        return result(Verdict.NO_EVIDENCE, f"the {side} served no requests in the window")
    if cb > ct or sb > st:
        side = "canary" if cb > ct else "stable"
        return result(Verdict.NO_EVIDENCE, f"the {side} has more bad events than requests")
    rates = (cb / ct, sb / st)
    p0 = ct * (1.0 + settings.tolerance) / (ct * (1.0 + settings.tolerance) + st)
    if cb + sb == 0:
        return result(Verdict.NO_EVIDENCE, "no bad events on either side", 0.0, rates, p0)
    log_e = _log_e_value(cb, ct, sb, st, settings)
    summary = (
        f"canary {cb}/{ct} bad ({rates[0]:.3%}) vs stable {sb}/{st} ({rates[1]:.3%}): "
        f"e-value {_e(log_e):.3g}"
    )
    if log_e < math.log(threshold):
        return result(
            Verdict.NO_EVIDENCE, f"{summary} < {threshold:g}: not enough evidence", log_e, rates, p0
        )
    if cb < settings.min_bad_events:
        return result(
            Verdict.NO_EVIDENCE,
            f"{summary}, but only {cb} canary bad events (at least "
            f"{settings.min_bad_events} are needed)",
            log_e,
            rates,
            p0,
        )
    return result(
        Verdict.REGRESSION,
        f"{summary} ≥ {threshold:g}: worse than the stable by more than "
        f"{settings.tolerance:.0%} (α = {settings.alpha:g}, anytime-valid)",
        log_e,
        rates,
        p0,
    )
