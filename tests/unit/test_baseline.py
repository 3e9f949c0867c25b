"""The baseline comparison: anytime-valid, blind to low traffic, and never raising on data."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trimtab.slo.baseline import (
    BaselineResult,
    BaselineSettings,
    BaselineTrack,
    Verdict,
    compare,
    extend,
    observe,
)

REGRESSION, NO_EVIDENCE = Verdict.REGRESSION, Verdict.NO_EVIDENCE
RAW = BaselineSettings(min_bad_events=0)  # the bare sequential test, without the floor


@pytest.mark.parametrize(
    ("canary_bad", "canary_total", "stable_bad", "stable_total", "verdict"),
    [
        pytest.param(100, 2000, 2, 2000, REGRESSION, id="5%-vs-0.1%-is-a-regression"),
        pytest.param(20, 2000, 20, 2000, NO_EVIDENCE, id="equal-rates"),
        pytest.param(22, 2000, 20, 2000, NO_EVIDENCE, id="within-the-tolerance"),
        pytest.param(1, 20, 0, 2000, NO_EVIDENCE, id="low-traffic-one-error"),
        pytest.param(0, 2000, 0, 2000, NO_EVIDENCE, id="no-errors-anywhere"),
        pytest.param(2, 2000, 100, 2000, NO_EVIDENCE, id="canary-better-than-stable"),
        pytest.param(0, 200, 50, 1800, NO_EVIDENCE, id="canary-clean-stable-failing"),
        pytest.param(30, 100, 90, 900, REGRESSION, id="10%-weight-30%-vs-10%"),
        pytest.param(60, 1000, 30, 1000, NO_EVIDENCE, id="twice-as-bad-on-little-data"),
        pytest.param(200, 10000, 100, 10000, REGRESSION, id="twice-as-bad-on-more-data"),
        pytest.param(2000, 100000, 1500, 100000, REGRESSION, id="a-third-worse-on-much-data"),
        pytest.param(100.4, 2000.2, 1.6, 1999.7, REGRESSION, id="extrapolated-counts"),
    ],
)
def test_verdict(
    canary_bad: float, canary_total: float, stable_bad: float, stable_total: float, verdict: Verdict
) -> None:
    result = compare(canary_bad, canary_total, stable_bad, stable_total)
    assert result.verdict is verdict, result.reason
    assert (result.e_value >= result.threshold) is (verdict is REGRESSION)


def test_one_bad_request_can_never_reach_the_threshold() -> None:
    # One event gives at most mean(θ_k) / (1 + tolerance) ≈ 19.7, however small the canary.
    result = compare(1, 1, 0, 10**7, RAW)
    assert result.verdict is NO_EVIDENCE
    assert result.e_value < 20


def test_three_bad_requests_never_roll_back_even_when_significant() -> None:
    # At 0.5 % of the traffic three errors are improbable under the null, but they are three
    # requests.
    assert compare(3, 10, 0, 2000, RAW).verdict is REGRESSION
    result = compare(3, 10, 0, 2000)
    assert result.verdict is NO_EVIDENCE
    assert "only 3 canary bad events (at least 4 are needed)" in result.reason
    assert compare(4, 10, 0, 2000).verdict is REGRESSION


def test_e_value_is_the_likelihood_ratio_mixed_over_the_ratios() -> None:
    # Equal traffic, tolerance 0: p0 = 1/2; the alternative "2× worse" is p = 2/3.
    one = BaselineSettings(tolerance=0.0, ratios=(2.0,), min_bad_events=0)
    assert compare(1, 100, 0, 100, one).e_value == pytest.approx((2 / 3) / (1 / 2))
    assert compare(1, 100, 1, 100, one).e_value == pytest.approx((2 / 3) * (1 / 3) / (1 / 4))
    two = BaselineSettings(tolerance=0.0, ratios=(2.0, 3.0), min_bad_events=0)
    assert compare(1, 100, 0, 100, two).e_value == pytest.approx(((2 / 3) / 0.5 + 0.75 / 0.5) / 2)
    assert compare(1, 100, 0, 100, one).null_share == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("counts", "reason"),
    [
        ((1, 0, 0, 100), "the canary served no requests"),
        ((0, 100, 0, 0), "the stable served no requests"),
        ((0, 0.4, 0, 100), "the canary served no requests"),
        ((5, 3, 0, 100), "the canary has more bad events than requests"),
        ((0, 100, 7, 6), "the stable has more bad events than requests"),
        ((math.nan, 100, 0, 100), "not a count: canary_bad=nan"),
        ((1, 100, -1, 100), "not a count: stable_bad=-1"),
        ((1, math.inf, 0, 100), "not a count: canary_total=inf"),
        ((1, 100, 0, 1e300), "not a count: stable_total=1e+300"),
        ((0, 100, 0, 100), "no bad events on either side"),
    ],
)
def test_data_it_cannot_judge_is_no_evidence_with_the_reason(
    counts: tuple[float, float, float, float], reason: str
) -> None:
    result = compare(*counts)
    assert result.verdict is NO_EVIDENCE
    assert reason in result.reason
    assert result.e_value == 1.0
    assert (result.canary_bad, result.canary_total, result.stable_bad, result.stable_total) == (
        pytest.approx(counts, nan_ok=True)
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"alpha": 0.0},
        {"alpha": 1.0},
        {"tolerance": -0.1},
        {"tolerance": math.nan},
        {"ratios": ()},
        {"ratios": (1.05, 2.0)},  # inside the null (1 + 0.1): the mixture would grow under it
        {"ratios": (math.inf,)},
        {"min_bad_events": -1},
        {"first_weight": 0.0},
        {"first_weight": 1.5},
    ],
)
def test_invalid_settings_raise(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BaselineSettings(**fields)


# --- Anytime validity, by simulation -------------------------------------------------------
# Each stream is one step of a canary at 10 % weight: 1,000 requests per analysis interval, the
# test applied after every interval, 60 intervals. Bad events are Poisson.

STREAMS, LOOKS, PER_LOOK, WEIGHT, STABLE_RATE = 400, 60, 1000, 0.1, 0.01
Z_ONE_SIDED_1PCT = 2.326


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _naive_z(cb: int, ct: int, sb: int, st_: int) -> bool:
    """A fixed-threshold two-proportion z-test, as a per-look judge would apply it."""
    pooled = (cb + sb) / (ct + st_)
    if pooled in (0.0, 1.0):
        return False
    z = (cb / ct - sb / st_) / math.sqrt(pooled * (1 - pooled) * (1 / ct + 1 / st_))
    return z >= Z_ONE_SIDED_1PCT


def _alarm_looks(
    judge: Callable[[int, int, int, int], bool],
    canary_rate: float,
    seed: int,
    stable_rate: float = STABLE_RATE,
) -> list[int | None]:
    """Per stream, the first look at which ``judge`` said regression (None: never)."""
    rng = random.Random(seed)
    ct_step, st_step = round(PER_LOOK * WEIGHT), round(PER_LOOK * (1 - WEIGHT))
    firsts: list[int | None] = []
    for _ in range(STREAMS):
        cb = sb = 0
        first = None
        for look in range(1, LOOKS + 1):
            cb += _poisson(rng, ct_step * canary_rate)
            sb += _poisson(rng, st_step * stable_rate)
            if judge(cb, ct_step * look, sb, st_step * look):
                first = look
                break
        firsts.append(first)
    return firsts


def _sequential(settings: BaselineSettings) -> Callable[[int, int, int, int], bool]:
    def judge(cb: int, ct: int, sb: int, st_: int) -> bool:
        return compare(cb, ct, sb, st_, settings).verdict is REGRESSION

    return judge


def _share_alarmed(firsts: list[int | None]) -> float:
    return sum(f is not None for f in firsts) / len(firsts)


# α plus three binomial standard errors of a share over 400 streams: √(0.01·0.99/400) ≈ 0.005.
FALSE_ALARM_BOUND = 0.01 + 3 * math.sqrt(0.01 * 0.99 / STREAMS)


@pytest.mark.parametrize(
    "canary_rate",
    [
        pytest.param(STABLE_RATE, id="equal-rates"),
        pytest.param(STABLE_RATE * 1.1, id="at-the-tolerance"),  # the edge of the null
        # A mixture with alternatives inside the null (e.g. a prior centred at p0) fails here.
        pytest.param(STABLE_RATE * 0.5, id="canary-better"),
    ],
)
def test_looking_every_interval_keeps_false_rollbacks_under_alpha(canary_rate: float) -> None:
    sequential = _share_alarmed(_alarm_looks(_sequential(RAW), canary_rate, seed=7))
    assert sequential <= FALSE_ALARM_BOUND


def test_a_naive_per_look_z_test_rolls_back_healthy_canaries_far_more_often() -> None:
    # Same streams (same seed) as the validity test: only the judge differs.
    sequential = _share_alarmed(_alarm_looks(_sequential(RAW), STABLE_RATE, seed=7))
    naive = _share_alarmed(_alarm_looks(_naive_z, STABLE_RATE, seed=7))
    assert naive >= 5 * RAW.alpha  # measured: 16 % of healthy streams, against 0.25 %
    assert naive >= 4 * max(sequential, 1 / STREAMS)


def _caught_within(firsts: list[int | None], looks: int) -> float:
    return sum(f is not None and f <= looks for f in firsts) / len(firsts)


def test_a_canary_five_times_worse_is_caught_in_most_streams_within_a_few_looks() -> None:
    firsts = _alarm_looks(_sequential(BaselineSettings()), STABLE_RATE * 5, seed=11)
    assert _share_alarmed(firsts) == 1.0
    assert _caught_within(firsts, 5) >= 0.9


def test_the_design_fault_0_1_to_5_percent_is_caught_within_two_intervals() -> None:
    # DESIGN §12: canary at 10 % weight, errors from 0.1 % to 5 %; here 100 canary requests a look.
    firsts = _alarm_looks(_sequential(BaselineSettings()), 0.05, seed=13, stable_rate=0.001)
    assert _caught_within(firsts, 2) >= 0.95


# --- The test carried across evaluations (observe): change points -------------------------


def _tracked_looks(
    settings: BaselineSettings,
    canary_rate: float,
    seed: int,
    *,
    onset: int = 0,
    healthy_rate: float = STABLE_RATE,
    carried: bool = True,
) -> list[int | None]:
    """Per stream, the first look (counted from ``onset``) at which the baseline said
    regression; the canary's rate is ``healthy_rate`` before look ``onset`` and ``canary_rate``
    from it. ``carried``: :func:`observe` on a track; otherwise :func:`compare` on the counts."""
    rng = random.Random(seed)
    ct_step, st_step = round(PER_LOOK * WEIGHT), round(PER_LOOK * (1 - WEIGHT))
    firsts: list[int | None] = []
    for _ in range(STREAMS):
        track, cb, sb, first = BaselineTrack(), 0, 0, None
        for look in range(1, LOOKS + 1):
            rate = canary_rate if look > onset else healthy_rate
            cb += _poisson(rng, ct_step * rate)
            sb += _poisson(rng, st_step * STABLE_RATE)
            counts = (cb, ct_step * look, sb, st_step * look)
            if carried:
                track, result = observe(track, *counts, settings)
            else:
                result = compare(*counts, settings)
            if result.verdict is REGRESSION:
                first = look - onset
                break
        firsts.append(first)
    return firsts


@pytest.mark.parametrize(
    "canary_rate",
    [
        pytest.param(STABLE_RATE, id="equal-rates"),
        pytest.param(STABLE_RATE * 1.1, id="at-the-tolerance"),
        pytest.param(STABLE_RATE * 0.5, id="canary-better"),
    ],
)
def test_the_carried_test_keeps_false_rollbacks_under_alpha(canary_rate: float) -> None:
    # Every look starts a possible change point; their prior weights sum to one, so the
    # mixture is still a test supermartingale: Ville's bound holds for the whole stream.
    assert _share_alarmed(_tracked_looks(RAW, canary_rate, seed=7)) <= FALSE_ALARM_BOUND


def test_a_canary_that_turns_bad_late_is_caught_sooner_than_by_the_counts_as_a_whole() -> None:
    # Healthy for 40 looks, then three times worse: the step's counts as a whole dilute the
    # fault with 40 looks of good traffic; the change point that starts at the fault does not.
    late = {"onset": 40, "healthy_rate": STABLE_RATE}
    carried = _tracked_looks(BaselineSettings(), STABLE_RATE * 3, seed=17, **late)
    whole = _tracked_looks(BaselineSettings(), STABLE_RATE * 3, seed=17, carried=False, **late)
    # Measured: within 15 looks 67 % against 21 %, within 20 looks 88 % against 50 %.
    assert _caught_within(carried, 15) >= _caught_within(whole, 15) + 0.3
    assert _caught_within(carried, 20) >= _caught_within(whole, 20) + 0.25


def test_counts_seen_twice_are_counted_once() -> None:
    track, first = observe(BaselineTrack(), 6, 200, 2, 1800)
    again, second = observe(track, 6, 200, 2, 1800)
    assert again == track
    assert second.log_e_value == first.log_e_value


def test_a_count_that_shrinks_is_no_evidence_either_way() -> None:
    # Prometheus' increase() extrapolates: a cumulative count may read a little lower later.
    track, _ = observe(BaselineTrack(), 6, 200, 2, 1800)
    lower, result = observe(track, 5.6, 199, 1.8, 1790)
    assert lower == track
    assert result.canary_bad == 6  # judged on what was counted


def test_observe_extends_the_test_by_what_is_new() -> None:
    cumulative = [(2, 100, 1, 900), (5, 200, 1, 1800), (5, 300, 3, 2700), (12, 400, 4, 3600)]
    by_observe, by_extend, before = BaselineTrack(), BaselineTrack(), (0, 0, 0, 0)
    for counts in cumulative:
        by_observe, observed = observe(by_observe, *counts)
        new = [a - b for a, b in zip(counts, before, strict=True)]
        by_extend, extended = extend(by_extend, *new)
        before = counts
        assert by_observe == by_extend
        assert observed.log_e_value == pytest.approx(extended.log_e_value)
    assert by_observe.counts == cumulative[-1]
    assert by_observe.started == 4  # every stretch held a bad event


def test_a_stretch_without_bad_events_starts_no_change_point() -> None:
    track, _ = observe(BaselineTrack(), 0, 100, 0, 900)
    assert track.started == 0
    assert track.log_terms == ()
    track, _ = observe(track, 1, 200, 0, 1800)
    assert track.started == 1


def test_one_stretch_is_the_whole_count_test_with_the_first_weight() -> None:
    # Before any other change point, the mixture is first_weight · E + (1 − first_weight).
    settings = BaselineSettings(first_weight=0.25)
    _, carried = observe(BaselineTrack(), 30, 1000, 10, 9000, settings)
    whole = compare(30, 1000, 10, 9000, settings)
    assert carried.e_value == pytest.approx(0.25 * whole.e_value + 0.75)


def test_the_next_step_keeps_the_evidence_and_counts_again() -> None:
    track, before = observe(BaselineTrack(), 3, 100, 2, 900)
    following = track.next_step()
    assert following.counts == (0, 0, 0, 0)
    assert (following.log_terms, following.started) == (track.log_terms, track.started)
    # The next step's first counts extend the same test, at the new split.
    _, after = observe(following, 4, 250, 1, 750)
    assert after.log_e_value > before.log_e_value


def test_a_track_round_trips_through_json() -> None:
    track, _ = observe(BaselineTrack(), 7, 300, 2, 2700)
    assert BaselineTrack.from_json(track.to_json()) == track
    assert BaselineTrack.from_json(BaselineTrack().to_json()) == BaselineTrack()


@given(st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 4))
def test_observe_never_raises_on_data(counts: tuple[float, float, float, float]) -> None:
    start, _ = observe(BaselineTrack(), 3, 100, 2, 900)
    track, result = observe(start, *counts)
    assert result.verdict in (REGRESSION, NO_EVIDENCE)
    assert not math.isnan(result.log_e_value)
    assert all(a >= b for a, b in zip(track.counts, start.counts, strict=True))


# --- Properties ----------------------------------------------------------------------------

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


def _sane(result: BaselineResult) -> None:
    assert result.e_value >= 0.0
    assert not math.isnan(result.e_value)
    assert not math.isnan(result.log_e_value)
    assert result.verdict in (REGRESSION, NO_EVIDENCE)


@given(ANY_FLOAT, ANY_FLOAT, ANY_FLOAT, ANY_FLOAT)
def test_compare_never_raises_on_data(cb: float, ct: float, sb: float, st_: float) -> None:
    _sane(compare(cb, ct, sb, st_))


@st.composite
def _counts(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    ct = draw(st.integers(1, 10**7))
    st_ = draw(st.integers(1, 10**7))
    cb = draw(st.integers(0, ct - 1))
    sb = draw(st.integers(0, st_))
    more = draw(st.integers(1, ct - cb))
    return cb, ct, sb, st_, more


@given(_counts())
def test_more_canary_bad_events_never_lower_the_e_value(
    counts: tuple[int, int, int, int, int],
) -> None:
    cb, ct, sb, st_, more = counts
    before, after = compare(cb, ct, sb, st_), compare(cb + more, ct, sb, st_)
    _sane(before)
    _sane(after)
    assert after.log_e_value >= before.log_e_value - 1e-9 * max(1.0, abs(before.log_e_value))
    if before.verdict is REGRESSION:
        assert after.verdict is REGRESSION


@given(_counts())
def test_more_stable_bad_events_never_raise_the_e_value(
    counts: tuple[int, int, int, int, int],
) -> None:
    cb, ct, sb, st_, _ = counts
    before = compare(cb, ct, sb, st_)
    after = compare(cb, ct, min(sb + 1, st_), st_)
    assert after.log_e_value <= before.log_e_value + 1e-9 * max(1.0, abs(before.log_e_value))
