"""The ports: what the controller asks of the outside world, and the values that cross.

A :class:`MetricSource` answers a batch of :class:`SeriesRequest` with :class:`Measurements`;
a :class:`TrafficAdapter` sets, reads and verifies weights. Both are ``Protocol``\\ s so adapters
implement them without importing each other, and tests can pass in-library fakes.

Failures are data: a source never raises out of ``query``. A failed query becomes an error on
the windows it served; a missing series is simply absent, and :func:`~trimtab.slo.health.judge`
makes both UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Protocol

from .health import Health, WindowMeasurement, judge
from .models import SLO

__all__ = [
    "Measurements",
    "MetricSource",
    "SeriesRequest",
    "SeriesResult",
    "TrafficAdapter",
    "Verification",
    "Weights",
]

Weights = Mapping[str, int]
"""Integer percent per backend, summing to 100 over a route's backends."""


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """One target's need: an SLO's windows, for every backend, with the target's params."""

    target: str  # who asks, e.g. "Rollout/checkout"
    slo: SLO
    params: tuple[tuple[str, str], ...] = ()  # sorted (placeholder, value) pairs
    windows: tuple[float, ...] = ()  # the windows measured
    clipped: tuple[tuple[float, float], ...] = ()  # (SLO window, shorter window measured)
    # ``(target, slo name)``: how results are looked up. One tuple, not one per lookup: a
    # batch keys three dicts by it (at 10,000 targets, 30,000 requests).
    key: tuple[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.target, self.slo.metadata.name))

    @staticmethod
    def of(
        target: str,
        slo: SLO,
        params: Mapping[str, str],
        windows: Sequence[float],
        *,
        clip_to: float | None = None,
    ) -> SeriesRequest:
        """A request with its params and windows in canonical (sorted) order.

        ``clip_to`` shortens every longer window to that many seconds (the time since the last
        shift): data from before a change never judges what changed.
        """
        return SeriesRequest.canonical(
            target, slo, tuple(sorted(params.items())), tuple(sorted(set(windows))), clip_to
        )

    @staticmethod
    def canonical(
        target: str,
        slo: SLO,
        params: tuple[tuple[str, str], ...],
        windows: tuple[float, ...],
        clip_to: float | None = None,
    ) -> SeriesRequest:
        """:meth:`of` for params and windows already in canonical order (the pairs sorted, the
        windows sorted and each once), as a target keeps them. Requests clipped alike share
        their tuples of windows: a cycle makes one request per SLO per target."""
        measured, clipped = _clip(windows, clip_to)
        return SeriesRequest(target, slo, params, measured, clipped)

    @property
    def param_map(self) -> dict[str, str]:
        return dict(self.params)


@lru_cache(maxsize=4096, typed=True)
def _clip(
    ordered: tuple[float, ...], clip_to: float | None
) -> tuple[tuple[float, ...], tuple[tuple[float, float], ...]]:
    """The windows measured and the (window, clipped) pairs for sorted ``ordered``."""
    if clip_to is None or not ordered or clip_to >= ordered[-1]:
        return ordered, ()
    shorter = tuple(w for w in ordered if w < clip_to)
    clipped = tuple((w, clip_to) for w in ordered if w > clip_to)
    return (*shorter, clip_to), clipped


@dataclass(frozen=True, slots=True)
class SeriesResult:
    """What was measured for one request: per backend, per window; and which windows failed."""

    request: SeriesRequest
    backends: Mapping[str, Mapping[float, WindowMeasurement]] = field(default_factory=dict)
    errors: Mapping[float, str] = field(default_factory=dict)

    def windows(self, backend: str) -> Mapping[float, WindowMeasurement]:
        """The measurements of one backend by window measured (empty when it was absent)."""
        return self.backends.get(backend, {})

    def judged(self, backend: str) -> Mapping[float, WindowMeasurement]:
        """The measurements of one backend by the SLO's windows (a clipped window stands for
        the window it was clipped from)."""
        raw = self.windows(backend)
        if not self.request.clipped:
            return raw
        out = dict(raw)
        for nominal, measured in self.request.clipped:
            if measured in raw:
                out[nominal] = raw[measured]
        return out

    @property
    def error(self) -> str | None:
        """The failures of the windows the request needs, in one sentence, or ``None``."""
        if not self.errors:
            return None
        failed = [self.errors[w] for w in self.request.windows if w in self.errors]
        return "; ".join(dict.fromkeys(failed)) if failed else None

    def health(self, backend: str) -> Health:
        """The shared judgement of this SLO for ``backend``."""
        return judge(self.request.slo.spec, self.judged(backend), error=self.error)


@dataclass(frozen=True)
class Measurements:
    """The answer to one batch: a result per request, and whether the source itself was down."""

    results: Mapping[tuple[str, str], SeriesResult] = field(default_factory=dict)
    source_error: str | None = None

    def __getitem__(self, request: SeriesRequest) -> SeriesResult:
        found = self.results.get(request.key)
        if found is not None:
            return found
        error = self.source_error or "no answer for this request"
        return SeriesResult(request, errors=dict.fromkeys(request.windows, error))


class MetricSource(Protocol):
    """Answers queries. Never raises for source failures: they come back as data."""

    def query(self, requests: Sequence[SeriesRequest], at: datetime) -> Measurements: ...

    def query_range(
        self, request: SeriesRequest, start: datetime, end: datetime, step: float
    ) -> list[tuple[datetime, SeriesResult]]: ...


class Verification(StrEnum):
    """Whether the proxy serves the weights asked for (Argo Rollouts' three values)."""

    VERIFIED = "VERIFIED"
    PENDING = "PENDING"
    UNSUPPORTED = "UNSUPPORTED"


class TrafficAdapter(Protocol):
    """Sets, reads and verifies a route's weights."""

    def get_weights(self) -> Weights: ...

    def set_weights(self, weights: Weights) -> None: ...

    def verify(self, weights: Weights) -> Verification: ...
