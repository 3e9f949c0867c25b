"""Weights every adapter handles: validation, proxy scales with an exact round trip, the errors."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trimtab.slo.errors import TrimtabError
from trimtab.slo.traffic import (
    PermanentTrafficError,
    TrafficError,
    TransientTrafficError,
    WeightsError,
    from_scale,
    to_scale,
    validate_weights,
)

NAMED_SCALES = [100, 256, 999, 1000]  # trimtab, HAProxy, ALB, a round Envoy total

# ---------------------------------------------------------------------------- the hierarchy


def test_retriability_is_in_the_type() -> None:
    transient = TransientTrafficError("proxy answered 503", delay=2.5)
    assert isinstance(transient, TrafficError)
    assert isinstance(transient, TrimtabError)
    assert transient.delay == 2.5
    assert TransientTrafficError("x").delay is None
    assert issubclass(PermanentTrafficError, TrafficError)
    assert not issubclass(PermanentTrafficError, TransientTrafficError)
    assert not issubclass(TransientTrafficError, PermanentTrafficError)


def test_invalid_weights_are_a_value_error_not_a_traffic_failure() -> None:
    assert issubclass(WeightsError, ValueError)
    assert issubclass(WeightsError, TrimtabError)
    assert not issubclass(WeightsError, TrafficError)  # never retried, never "the proxy failed"


# ------------------------------------------------------------------------------- validation


def test_valid_weights_come_back_as_a_dict_in_the_routes_order() -> None:
    got = validate_weights({"v2": 5, "v1": 95}, ["v1", "v2"])
    assert got == {"v1": 95, "v2": 5}
    assert list(got) == ["v1", "v2"]
    assert validate_weights({"only": 100}, ("only",)) == {"only": 100}
    assert validate_weights({"a": 0, "b": 100}, ["a", "b"]) == {"a": 0, "b": 100}


@pytest.mark.parametrize(
    ("weights", "backends", "expected"),
    [
        (
            {"v1": 100},
            ["v1", "v2"],
            "must name exactly the route's backends ('v1', 'v2'): missing 'v2'",
        ),
        ({"v1": 90, "v2": 5, "v3": 5}, ["v1", "v2"], "unknown 'v3'"),
        ({"v1": 50, "v3": 50}, ["v1", "v2"], "missing 'v2'; unknown 'v3'"),
        (
            {"v1": 95.0, "v2": 5},
            ["v1", "v2"],
            "the weight of 'v1' must be an integer from 0 to 100, not float 95.0",
        ),
        ({"v1": True, "v2": 99}, ["v1", "v2"], "not bool True"),
        ({"v1": "95", "v2": 5}, ["v1", "v2"], "not str '95'"),
        ({"v1": None, "v2": 100}, ["v1", "v2"], "not NoneType None"),
        ({"v1": -5, "v2": 105}, ["v1", "v2"], "the weight of 'v1' must be from 0 to 100, not -5"),
        ({"v1": 150, "v2": 0}, ["v1", "v2"], "the weight of 'v1' must be from 0 to 100, not 150"),
        ({"v1": 50, "v2": 40}, ["v1", "v2"], "weights must sum to 100, not 90 (v1=50, v2=40)"),
        ({"v1": 60, "v2": 60}, ["v1", "v2"], "weights must sum to 100, not 120"),
        ({}, [], "a route needs at least one backend"),
        ([("v1", 100)], ["v1"], "weights must be a mapping of backend to percent, not list"),
    ],
)
def test_invalid_weights_say_what_is_wrong(
    weights: Mapping[str, int], backends: list[str], expected: str
) -> None:
    with pytest.raises(WeightsError) as caught:
        validate_weights(weights, backends)
    assert expected in str(caught.value)
    assert str(caught.value).startswith(("invalid weights: ", "a route", "weights must be a"))


def test_every_problem_is_named_in_one_message() -> None:
    weights: dict[str, Any] = {"v1": 150, "v3": 1.5}
    with pytest.raises(WeightsError) as caught:
        validate_weights(weights, ["v1", "v2"])
    message = str(caught.value)
    assert "missing 'v2'" in message
    assert "unknown 'v3'" in message
    assert "'v1' must be from 0 to 100, not 150" in message
    assert "'v3' must be an integer" in message


def test_long_backend_lists_are_cut_short_in_messages() -> None:
    backends = [f"zone-{i:02}" for i in range(30)]
    with pytest.raises(WeightsError) as caught:
        validate_weights({"zone-00": 100}, backends)
    assert "and 21 more" in str(caught.value)
    assert len(str(caught.value)) < 400


# ---------------------------------------------------------------------------- proxy scales


@pytest.mark.parametrize(
    ("weights", "total", "scaled"),
    [
        ({"a": 50, "b": 50}, 256, {"a": 128, "b": 128}),
        ({"a": 1, "b": 99}, 256, {"a": 3, "b": 253}),  # 2.56 and 253.44: the .56 gets the unit
        ({"a": 34, "b": 33, "c": 33}, 999, {"a": 339, "b": 330, "c": 330}),
        ({"a": 95, "b": 5}, 1000, {"a": 950, "b": 50}),
        ({"a": 100, "b": 0}, 999, {"a": 999, "b": 0}),
        ({"a": 25, "b": 25, "c": 25, "d": 25}, 255, {"a": 64, "b": 64, "c": 64, "d": 63}),
        ({"a": 5, "b": 95}, 100, {"a": 5, "b": 95}),
    ],
)
def test_to_scale_keeps_the_proportions_and_the_total(
    weights: dict[str, int], total: int, scaled: dict[str, int]
) -> None:
    assert to_scale(weights, total) == scaled
    assert sum(scaled.values()) == total
    assert from_scale(scaled) == weights


def test_ties_go_by_backend_name_not_by_mapping_order() -> None:
    forward = {"a": 25, "b": 25, "c": 25, "d": 25}
    backward = dict(reversed(forward.items()))
    assert to_scale(forward, 255) == to_scale(backward, 255)
    assert from_scale({"z": 1, "y": 1, "x": 1}) == {"x": 34, "y": 33, "z": 33}


@pytest.mark.parametrize("total", [99, 0, -256, 256.0, True])
def test_a_scale_too_small_to_tell_percents_apart_is_refused(total: int) -> None:
    with pytest.raises(WeightsError, match="at least 100"):
        to_scale({"a": 50, "b": 50}, total)


def test_to_scale_validates_the_weights() -> None:
    with pytest.raises(WeightsError, match="sum to 100, not 90"):
        to_scale({"a": 50, "b": 40}, 256)
    with pytest.raises(WeightsError, match="at least one backend"):
        to_scale({}, 256)


def test_weights_set_by_someone_else_read_as_the_nearest_percents() -> None:
    assert from_scale({"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert from_scale({"a": 1, "b": 3}) == {"a": 25, "b": 75}
    assert from_scale({"a": 1, "b": 998}) == {"a": 0, "b": 100}  # a tiny share reads as 0
    assert from_scale({"a": 7}) == {"a": 100}


@pytest.mark.parametrize(
    ("scaled", "expected"),
    [
        ({"a": 0, "b": 0}, "every weight is 0"),
        ({"a": -1, "b": 10}, "non-negative integers, not a=-1"),
        ({"a": 1.5, "b": 10}, "non-negative integers, not a=1.5"),
        ({}, "at least one backend"),
    ],
)
def test_from_scale_refuses_what_percents_cannot_express(
    scaled: dict[str, int], expected: str
) -> None:
    with pytest.raises(WeightsError, match=expected):
        from_scale(scaled)


@st.composite
def percents(draw: st.DrawFn, max_backends: int = 12) -> dict[str, int]:
    """Valid trimtab weights over 1 to ``max_backends`` backends, zeros and 100 included."""
    count = draw(st.integers(1, max_backends))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=count - 1, max_size=count - 1)))
    shares = [b - a for a, b in itertools.pairwise([0, *cuts, 100])]
    names = draw(st.permutations([f"b{i}" for i in range(count)]))
    return dict(zip(names, shares, strict=True))


@settings(max_examples=500)
@given(weights=percents(), total=st.sampled_from(NAMED_SCALES))
def test_round_trip_is_exact_on_the_proxy_scales(weights: dict[str, int], total: int) -> None:
    scaled = to_scale(weights, total)
    assert from_scale(scaled) == weights
    assert sum(scaled.values()) == total
    for backend, weight in weights.items():
        assert abs(scaled[backend] - weight * total / 100) < 1  # proportions kept
        assert (scaled[backend] == 0) == (weight == 0)  # drained stays drained, and only that
        assert (scaled[backend] == total) == (weight == 100)


@settings(max_examples=300)
@given(weights=percents(), total=st.integers(100, 100_000))
def test_round_trip_is_exact_on_any_scale_of_at_least_100(
    weights: dict[str, int], total: int
) -> None:
    assert from_scale(to_scale(weights, total)) == weights


@pytest.mark.parametrize("total", NAMED_SCALES)
def test_round_trip_is_exact_for_every_split_of_three_backends(total: int) -> None:
    for a in range(101):
        for b in range(101 - a):
            weights = {"a": a, "b": b, "c": 100 - a - b}
            assert from_scale(to_scale(weights, total)) == weights, weights
