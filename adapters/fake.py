"""In-library fakes of the two ports, for trimtab's tests and for users testing their own setup.

Like ``httpx.MockTransport``, these ship with the library: a test of a Rollout or a Balance needs
a proxy that lags and fails on cue, and a metric source that says what the test wants when it
wants. Both are deterministic (no clock, no threads of their own) and thread-safe.

- :class:`FakeTrafficAdapter` — a :class:`~trimtab.slo.ports.TrafficAdapter` whose weights
  take effect ``apply_lag`` reads after they are set (``verify`` says PENDING until then), whose
  n-th ``set_weights`` fails when ``fail(n)`` returns an exception, and whose weights a "person"
  can change behind trimtab's back (:meth:`FakeTrafficAdapter.drift`). It records every call.
- :class:`ListMetricSource` — a :class:`~trimtab.slo.ports.MetricSource` answering from a
  function, a constant table (:meth:`ListMetricSource.constant`) or a timeline of tables
  (:meth:`ListMetricSource.from_timeline`); it can be taken down (``down=True``) and counts its
  queries. Its answers are keyed and shaped like the real sources'.

For example::

    adapter = FakeTrafficAdapter({"v1": 100, "v2": 0}, apply_lag=1,
                                 fail={2: TransientTrafficError("503 from the proxy")}.get)
    source = ListMetricSource.from_timeline([
        (t0, {"v1": 0.0001, "v2": 0.0001}),
        (t0 + timedelta(minutes=5), {"v1": 0.0001, ("checkout-errors", "v2"): 0.05}),
    ])
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

from trimtab.slo.durations import parse_duration
from trimtab.slo.health import WindowMeasurement
from trimtab.slo.ports import Measurements, SeriesRequest, SeriesResult, Verification, Weights
from trimtab.slo.traffic import validate_weights

__all__ = [
    "DEFAULT_EVENTS",
    "FakeTrafficAdapter",
    "ListMetricSource",
    "Sampled",
    "Sampler",
    "Table",
    "TableKey",
    "TableValue",
]

# ------------------------------------------------------------------------------------ traffic


class FakeTrafficAdapter:
    """A proxy in memory: set, read and verify weights, with apply lag, failures and drift.

    - ``initial``: the weights served from the start; they define the route's backends unless
      ``backends`` is given. Invalid weights raise ``WeightsError`` (a ``ValueError``), here and
      in every method, as a real adapter does.
    - ``apply_lag``: weights set take effect after this many reads (:meth:`get_weights` or
      :meth:`verify` calls): the first ``apply_lag`` reads still see the old weights (PENDING),
      the next one sees the new. A newer ``set_weights`` with other weights replaces one still
      pending and restarts the lag; the same weights again change nothing.
    - ``fail(n)``: called with the 1-based number of each ``set_weights`` call (invalid ones
      included); an exception it returns is raised and the weights stay as they were.
      ``{2: TransientTrafficError("…")}.get`` fails the second call. ``read_fail(n)`` does the
      same for the n-th read.
    - ``verifies=False``: :meth:`verify` answers UNSUPPORTED (an adapter that cannot verify).
    - ``remember``: :attr:`calls` and :attr:`applied` keep the latest this many (every one when
      ``None``): a long run, or a benchmark of thousands of adapters, keeps few.
    """

    def __init__(
        self,
        initial: Weights,
        *,
        apply_lag: int = 0,
        fail: Callable[[int], Exception | None] | None = None,
        read_fail: Callable[[int], Exception | None] | None = None,
        backends: Sequence[str] | None = None,
        verifies: bool = True,
        remember: int | None = None,
    ) -> None:
        if apply_lag < 0:
            raise ValueError(f"apply_lag must be 0 or more, not {apply_lag}")
        self.backends: tuple[str, ...] = tuple(backends if backends is not None else initial)
        self.apply_lag = apply_lag
        self._fail = fail
        self._read_fail = read_fail
        self._verifies = verifies
        self._lock = threading.Lock()
        self._served = validate_weights(initial, self.backends)
        self._pending: dict[str, int] | None = None
        self._lag_left = 0
        self._remember = remember
        self._calls: list[dict[str, int]] = []  # lists: an empty deque takes ten times more
        self._call_count = 0
        self._applied: list[dict[str, int]] = []
        self._keep(self._applied, self._served)
        self._reads = 0

    def __repr__(self) -> str:
        return f"FakeTrafficAdapter({self._served!r}, apply_lag={self.apply_lag})"

    # ------------------------------------------------------------------------------- the port

    def get_weights(self) -> Weights:
        """The weights served now (the old ones while a change is still lagging)."""
        with self._lock:
            self._read()
            return dict(self._served)

    def set_weights(self, weights: Weights) -> None:
        """Record the call; validate; fail if told to; else apply now or after ``apply_lag``."""
        with self._lock:
            self._keep(self._calls, weights)
            self._call_count += 1
            wanted = validate_weights(weights, self.backends)
            if self._fail is not None:
                error = self._fail(self._call_count)
                if error is not None:
                    raise error
            if self.apply_lag == 0:
                self._serve(wanted)
            elif wanted != self._pending:  # the same change again does not restart the lag
                self._pending, self._lag_left = wanted, self.apply_lag

    def verify(self, weights: Weights) -> Verification:
        """VERIFIED when ``weights`` are served now, PENDING otherwise (UNSUPPORTED if told)."""
        wanted = validate_weights(weights, self.backends)
        with self._lock:
            self._read()
            if not self._verifies:
                return Verification.UNSUPPORTED
            return Verification.VERIFIED if self._served == wanted else Verification.PENDING

    # ---------------------------------------------------------------------------- for tests

    def drift(self, weights: Weights) -> None:
        """A person sets ``weights`` behind trimtab's back: served at once, pending change lost."""
        wanted = validate_weights(weights, self.backends)
        with self._lock:
            self._pending = None
            self._serve(wanted)

    def settle(self) -> None:
        """Apply a pending change now, as if the lag had passed (no read is counted)."""
        with self._lock:
            if self._pending is not None:
                self._serve(self._pending)
                self._pending = None

    @property
    def weights(self) -> dict[str, int]:
        """The weights served now, without counting a read."""
        with self._lock:
            return dict(self._served)

    @property
    def pending(self) -> dict[str, int] | None:
        """Weights set but not yet applied, or ``None``."""
        with self._lock:
            return None if self._pending is None else dict(self._pending)

    @property
    def calls(self) -> list[dict[str, int]]:
        """Every ``set_weights`` argument (the latest ``remember``), in order, failed and
        invalid calls included."""
        with self._lock:
            return [dict(c) for c in self._calls]

    @property
    def applied(self) -> list[dict[str, int]]:
        """Every weights that took effect (the latest ``remember``), in order: ``initial``
        first, drift included."""
        with self._lock:
            return [dict(a) for a in self._applied]

    @property
    def reads(self) -> int:
        """How many times :meth:`get_weights` and :meth:`verify` were called."""
        with self._lock:
            return self._reads

    # ------------------------------------------------------------------------------ internals

    def _read(self) -> None:
        """Count a read: fail if told to, and let a lagging change progress."""
        self._reads += 1
        if self._read_fail is not None:
            error = self._read_fail(self._reads)
            if error is not None:
                raise error
        if self._pending is None:
            return
        if self._lag_left > 0:
            self._lag_left -= 1
            return
        self._serve(self._pending)
        self._pending = None

    def _serve(self, weights: dict[str, int]) -> None:
        self._served = dict(weights)
        self._keep(self._applied, weights)

    def _keep(self, history: list[dict[str, int]], weights: Weights) -> None:
        """Append to ``history``, which keeps the latest ``remember``."""
        history.append(dict(weights))
        if self._remember is not None and len(history) > self._remember:
            del history[: len(history) - self._remember]


# ------------------------------------------------------------------------------------ metrics

Sampled: TypeAlias = WindowMeasurement | str | None
"""One backend's measurement for one window: a value, the reason the window's query failed,
or ``None`` for no series."""

Sampler: TypeAlias = Callable[[SeriesRequest, str, float, datetime], Sampled]
"""``(request, backend, window seconds, at) -> Sampled``: what a source would have measured."""

TableKey: TypeAlias = str | tuple[str, str] | tuple[str, str, float | str]
"""``backend`` (every SLO), ``(slo, backend)`` or ``(slo, backend, window)``; the window in
seconds or as a duration (``"5m"``). The most specific key wins."""

TableValue: TypeAlias = WindowMeasurement | float | tuple[float | None, float | None] | str | None
"""A value (with :data:`DEFAULT_EVENTS` requests, or the table's ``events``), a
``(value, events)`` pair, a :class:`~trimtab.slo.health.WindowMeasurement`, the reason the
window's query failed (``str``), or ``None`` for no series."""

Table: TypeAlias = Mapping[TableKey, TableValue]

DEFAULT_EVENTS = 10_000.0
"""Requests per window a bare value stands for: above any sensible ``minEvents``, so a table of
plain numbers is judged on the numbers, not found UNKNOWN for want of traffic."""

_DOWN = "the fake metric source is down"


@dataclass(frozen=True)
class _Lookup:
    """A table, normalised for lookup by (slo, backend, window)."""

    by_backend: Mapping[str, Sampled]
    by_slo: Mapping[tuple[str, str], Sampled]
    by_window: Mapping[tuple[str, str, float], Sampled]

    @staticmethod
    def of(table: Table, events: float | None) -> _Lookup:
        by_backend: dict[str, Sampled] = {}
        by_slo: dict[tuple[str, str], Sampled] = {}
        by_window: dict[tuple[str, str, float], Sampled] = {}
        for key, value in table.items():
            sampled = _measurement(value, events, key)
            if isinstance(key, str):
                by_backend[key] = sampled
            elif isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key):
                by_slo[(key[0], key[1])] = sampled
            elif (
                isinstance(key, tuple)
                and len(key) == 3
                and isinstance(key[0], str)
                and isinstance(key[1], str)
            ):
                by_window[(key[0], key[1], _window(key[2]))] = sampled
            else:
                raise TypeError(
                    f"table key {key!r}: expected backend, (slo, backend) or (slo, backend, window)"
                )
        return _Lookup(by_backend, by_slo, by_window)

    @property
    def backends(self) -> set[str]:
        return {
            *self.by_backend,
            *(b for _, b in self.by_slo),
            *(b for _, b, _ in self.by_window),
        }

    def get(self, slo: str, backend: str, window: float) -> Sampled:
        if (slo, backend, window) in self.by_window:
            return self.by_window[(slo, backend, window)]
        if (slo, backend) in self.by_slo:
            return self.by_slo[(slo, backend)]
        return self.by_backend.get(backend)


def _window(value: float | str) -> float:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TypeError(f"window {value!r}: expected seconds > 0 or a duration such as '5m'")
    return float(value)


def _measurement(value: TableValue, events: float | None, key: object) -> Sampled:
    if value is None or isinstance(value, WindowMeasurement | str):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return WindowMeasurement(value[0], value[1])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return WindowMeasurement(float(value), events)
    raise TypeError(
        f"table value for {key!r}: expected a number, (value, events), a WindowMeasurement, "
        f"an error string or None, not {value!r}"
    )


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class ListMetricSource:
    """A :class:`~trimtab.slo.ports.MetricSource` answering what a test says it measured.

    ``sample(request, backend, window, at)`` is asked for every backend of ``backends`` and
    every window the request names (``at`` is timezone-aware; naive times are taken as UTC).
    A :class:`~trimtab.slo.health.WindowMeasurement` is that backend's value; ``None`` leaves it
    out, as a missing series (a backend with no window at all is absent from the result); a
    ``str`` fails that window of the request for every backend, as a failed query does.

    ``down`` (``True`` or the error message) answers every request with the error on all its
    windows and ``Measurements.source_error`` set, like a real source that cannot be reached;
    set it at any time. Like the real sources, :meth:`query` never raises for an outage; it
    lets an exception from ``sample`` itself (a bug in the test) through.

    :attr:`history` holds every batch asked, or the latest ``remember`` of them (a benchmark
    of many cycles over thousands of targets would otherwise keep every request it made).
    """

    def __init__(
        self,
        sample: Sampler,
        *,
        backends: Sequence[str],
        down: bool | str = False,
        remember: int | None = None,
    ) -> None:
        self._sample = sample
        self.backends: tuple[str, ...] = tuple(dict.fromkeys(backends))
        self._down: bool | str = down
        self._lock = threading.RLock()  # a sampler may look at the source's own counters
        self._queries = 0
        self._range_queries = 0
        # The latest ``remember`` batches (every one when None): a long run at scale keeps few.
        self._history: deque[tuple[tuple[SeriesRequest, ...], datetime]] = deque(maxlen=remember)

    @classmethod
    def constant(
        cls,
        table: Table,
        *,
        events: float | None = DEFAULT_EVENTS,
        down: bool | str = False,
        remember: int | None = None,
    ) -> ListMetricSource:
        """The same answer at every time: see :data:`TableKey` and :data:`TableValue`."""
        lookup = _Lookup.of(table, events)

        def sample(request: SeriesRequest, backend: str, window: float, at: datetime) -> Sampled:
            return lookup.get(request.slo.metadata.name, backend, window)

        return cls(sample, backends=sorted(lookup.backends), down=down, remember=remember)

    @classmethod
    def from_timeline(
        cls,
        timeline: Sequence[tuple[datetime, Table]],
        *,
        events: float | None = DEFAULT_EVENTS,
        down: bool | str = False,
        remember: int | None = None,
    ) -> ListMetricSource:
        """A table per time: at ``at``, the last table from at or before it (none before the
        first: no data). Naive times are UTC."""
        entries = sorted(
            ((_utc(t), _Lookup.of(table, events)) for t, table in timeline), key=lambda e: e[0]
        )
        times = [t for t, _ in entries]
        if len(set(times)) != len(times):
            raise ValueError("the timeline has two tables for the same time")
        backends = sorted(set().union(*(lookup.backends for _, lookup in entries)))

        def sample(request: SeriesRequest, backend: str, window: float, at: datetime) -> Sampled:
            index = bisect.bisect_right(times, at) - 1
            if index < 0:
                return None
            return entries[index][1].get(request.slo.metadata.name, backend, window)

        return cls(sample, backends=backends, down=down, remember=remember)

    # ------------------------------------------------------------------------------ controls

    @property
    def down(self) -> bool | str:
        with self._lock:
            return self._down

    @down.setter
    def down(self, value: bool | str) -> None:
        with self._lock:
            self._down = value

    @property
    def queries(self) -> int:
        """How many batches :meth:`query` answered."""
        with self._lock:
            return self._queries

    @property
    def range_queries(self) -> int:
        """How many times :meth:`query_range` was called."""
        with self._lock:
            return self._range_queries

    @property
    def history(self) -> list[tuple[tuple[SeriesRequest, ...], datetime]]:
        """Every batch :meth:`query` answered (the latest ``remember``): its requests and
        ``at``, in order."""
        with self._lock:
            return list(self._history)

    # ------------------------------------------------------------------------------- the port

    def query(self, requests: Sequence[SeriesRequest], at: datetime) -> Measurements:
        """Every request's windows at ``at``, from ``sample``; one batch."""
        with self._lock:
            self._queries += 1
            self._history.append((tuple(requests), at))
            return self._measure(requests, _utc(at))

    def query_range(
        self, request: SeriesRequest, start: datetime, end: datetime, step: float
    ) -> list[tuple[datetime, SeriesResult]]:
        """The request at ``start``, ``start + step``, … up to ``end``."""
        if step <= 0 or end < start:
            raise ValueError("query_range needs step > 0 and end >= start")
        with self._lock:
            self._range_queries += 1
            results = []
            at = start
            while at <= end:
                results.append((at, self._measure([request], _utc(at))[request]))
                at += timedelta(seconds=step)
            return results

    def _measure(self, requests: Sequence[SeriesRequest], at: datetime) -> Measurements:
        if self._down:
            error = self._down if isinstance(self._down, str) else _DOWN
            return Measurements(
                {r.key: SeriesResult(r, errors=dict.fromkeys(r.windows, error)) for r in requests},
                source_error=error,
            )
        results: dict[tuple[str, str], SeriesResult] = {}
        for request in requests:
            backends: dict[str, dict[float, WindowMeasurement]] = {}
            errors: dict[float, str] = {}
            for backend in self.backends:
                for window in request.windows:
                    sampled = self._sample(request, backend, window, at)
                    if isinstance(sampled, str):
                        errors.setdefault(window, sampled)
                    elif sampled is not None:
                        backends.setdefault(backend, {})[window] = sampled
            results[request.key] = SeriesResult(request, backends, errors)
        return Measurements(results)
