"""The per-target series of ``/metrics``: kept compact, and written in the Prometheus text format.

At 10,000 targets the controller exposes about 180,000 per-target series. Kept as a dict of
label values per group of series, they held 46 MB; kept here, 4 MB: a target's series are one
small record of about 0.4 KB that holds

- the weights, health and phase of its latest decision, as the decision holds them (read-only
  mappings that equal decisions share, :func:`trimtab.controller.record._kept`);
- its counters, as integers;
- its SLI values as one tuple, against a layout of pre-written label text that every target
  measured alike shares.

A scrape snapshots the records under one short lock and writes the text a chunk at a time
(:meth:`TargetSeries.chunks`): it never holds the whole text (14 MB at 10,000 targets). The text
is what ``prometheus_client`` writes for the same samples: labels in name order, values as
``floatToGoString`` writes them, label values escaped.

Gauges hold the last values, replaced per target, so series of backends that are gone
disappear instead of going stale; counters only grow.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from math import inf, isnan

from prometheus_client.utils import floatToGoString
from trimtab.slo.durations import format_duration
from trimtab.slo.health import Level, health_spec
from trimtab.slo.models import SLO
from trimtab.slo.ports import SeriesRequest, SeriesResult

from .record import Decision

__all__ = ["FAMILIES", "TargetSeries"]

FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # exposed name: (type, help, label names in the order written: by name)
    "trimtab_route_weight": (
        "gauge",
        "Percent of the route's traffic per backend.",
        ("backend", "target"),
    ),
    "trimtab_slo_health": (
        "gauge",
        "Health level: 2 UNAVAILABLE, 1 DEGRADED, 0 HEALTHY, -1 UNKNOWN.",
        ("backend", "slo", "target"),
    ),
    "trimtab_slo_value": (
        "gauge",
        "Measured SLI per window: error ratio (budget-based) or value.",
        ("backend", "slo", "target", "window"),
    ),
    "trimtab_slo_threshold": (
        "gauge",
        "The number an SLO's health level compares against.",
        ("level", "slo"),
    ),
    "trimtab_target_phase": (
        "gauge",
        "1 for a target's current phase (Progressing, Promoted, …).",
        ("phase", "target"),
    ),
    "trimtab_decisions_total": ("counter", "Decisions.", ("action", "target")),
    "trimtab_adapter_errors_total": (
        "counter",
        "Traffic-adapter calls that failed.",
        ("target",),
    ),
}
_LEVELS = {level.name: f"{level.value:.1f}" for level in Level}  # as floatToGoString writes them
_CHUNK = 256 * 1024  # characters per chunk of a scrape (at least)
_LAYOUTS_KEPT = 4096  # distinct layouts shared at most (a few per SLO set and backends, usually)

Layout = tuple[tuple[str, str], ...]
"""Per SLI value of a target, the text of its line before the target's name and after it."""


@dataclass(slots=True)
class _Target:
    """One target's series."""

    label: str  # the target's name, escaped for a label value
    weights: Mapping[str, int] = field(default_factory=dict)
    health: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    phase: str | None = None
    layout: Layout = ()
    values: tuple[float, ...] = ()
    decisions: dict[str, int] = field(default_factory=dict)  # by action
    adapter_errors: int = 0

    def copy(self) -> _Target:
        """A copy that later records leave as it is (the mappings it shares are read-only)."""
        return _Target(
            self.label,
            self.weights,
            self.health,
            self.phase,
            self.layout,
            self.values,
            dict(self.decisions),
            self.adapter_errors,
        )


class TargetSeries:
    """Every target's gauges and counters, and every SLO's thresholds; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, _Target] = {}
        self._thresholds: dict[str, tuple[tuple[str, float], ...]] = {}  # by SLO
        self._layouts: dict[Layout, Layout] = {}  # one object per distinct layout
        self._parts: dict[tuple[str, str, str], tuple[str, str]] = {}  # (backend, slo, window)
        # (the SLO's id, a request's clipping, a backend) → the SLO, and per window of it: the
        # window measured for it and the text of its line (see _lines)
        self._windows: dict[
            tuple[int, tuple[tuple[float, float], ...], str],
            tuple[SLO, list[tuple[float, tuple[str, str]]]],
        ] = {}

    def _target(self, name: str) -> _Target:
        """``name``'s record (the lock held)."""
        found = self._targets.get(name)
        if found is None:
            found = self._targets[name] = _Target(_label_value(name))
        return found

    # ---------------------------------------------------------------------------- record

    def add_targets(self, names: Iterable[str]) -> None:
        """Expose ``names`` from the start, their adapter errors at 0 (so ``rate()`` sees the
        first error)."""
        with self._lock:
            for name in names:
                self._target(name)

    def record_decisions(self, decisions: Sequence[Decision]) -> None:
        """Count each decision; keep its route weights, health (when judged) and phase."""
        with self._lock:
            for decision in decisions:
                target = self._target(decision.target)
                action = decision.action.value
                target.decisions[action] = target.decisions.get(action, 0) + 1
                weights = decision.weights.applied or decision.weights.desired
                if weights:
                    target.weights = weights
                if decision.health:  # a hold before judging says nothing about health
                    target.health = decision.health
                if decision.phase:
                    target.phase = decision.phase

    def record_adapter_error(self, name: str) -> None:
        with self._lock:
            self._target(name).adapter_errors += 1

    def record_thresholds(self, requests: Iterable[SeriesRequest]) -> None:
        """The thresholds of the SLOs ``requests`` measure."""
        thresholds: dict[str, tuple[tuple[str, float], ...]] = {}
        for request in requests:
            slo = request.slo.metadata.name
            if slo not in thresholds:
                spec = health_spec(request.slo.spec)
                thresholds[slo] = (
                    ("DEGRADED", spec.degraded.value),
                    ("UNAVAILABLE", spec.unavailable.value),
                )
        with self._lock:
            self._thresholds.update(thresholds)

    def record_results(self, name: str, results: Iterable[SeriesResult]) -> None:
        """Target ``name``'s SLI values per SLO window, from all its results, replacing its
        last."""
        parts: list[tuple[str, str]] = []
        values: list[float] = []
        for result in results:
            request = result.request
            for backend, measured in result.backends.items():
                for window, part in self._lines(request, backend):
                    m = measured.get(window)
                    if m is not None and m.value is not None:
                        parts.append(part)
                        values.append(m.value)
        key = tuple(parts)
        with self._lock:
            target = self._target(name)
            if len(self._layouts) >= _LAYOUTS_KEPT and key not in self._layouts:
                self._layouts.clear()  # the targets keep theirs; only the sharing restarts
            target.layout = self._layouts.setdefault(key, key)
            target.values = tuple(values)

    def _lines(self, request: SeriesRequest, backend: str) -> list[tuple[float, tuple[str, str]]]:
        """Per window of the request's SLO, the window measured for it (clipped or not) and the
        text of its ``trimtab_slo_value`` line for ``backend``; one list per SLO, clipping and
        backend (a cycle records 60,000 backends' values at 10,000 targets)."""
        slo = request.slo
        known = self._windows.get((id(slo), request.clipped, backend))
        if known is not None and known[0] is slo:
            return known[1]
        if len(self._windows) >= _LAYOUTS_KEPT:
            self._windows.clear()
        clipped = dict(request.clipped)  # by the SLO's window, clipped or not
        name = slo.metadata.name
        lines = [
            (clipped.get(w, w), self._part(backend, name, format_duration(w)))
            for w in health_spec(slo.spec).windows
        ]
        self._windows[(id(slo), request.clipped, backend)] = (slo, lines)
        return lines

    def _part(self, backend: str, slo: str, window: str) -> tuple[str, str]:
        """The text of a ``trimtab_slo_value`` line before the target's name and after it."""
        part = self._parts.get((backend, slo, window))
        if part is None:
            before = (
                f'trimtab_slo_value{{backend="{_label_value(backend)}",'
                f'slo="{_label_value(slo)}",target="'
            )
            part = (before, f'",window="{_label_value(window)}"}} ')
            self._parts[(backend, slo, window)] = part
        return part

    # ----------------------------------------------------------------------------- write

    def chunks(self) -> Iterator[bytes]:
        """The text of every family, a chunk at a time, from one snapshot."""
        with self._lock:
            targets = [t.copy() for t in self._targets.values()]
            thresholds = list(self._thresholds.items())
        batch: list[str] = []
        size = 0
        for text in _texts(targets, thresholds):
            batch.append(text)
            size += len(text)
            if size >= _CHUNK:
                yield "".join(batch).encode()
                batch.clear()
                size = 0
        if batch:
            yield "".join(batch).encode()


def _texts(
    targets: Sequence[_Target], thresholds: Sequence[tuple[str, tuple[tuple[str, float], ...]]]
) -> Iterator[str]:
    """Each family's header, then its samples (see :data:`FAMILIES`): the lines of a family
    come a target at a time, not a line at a time (a scrape at 10,000 targets writes 180,000
    SLI values)."""
    yield _header("trimtab_route_weight")
    for t in targets:
        yield from _by_key("trimtab_route_weight", "backend", t.label, t.weights)
    yield _header("trimtab_slo_health")
    for t in targets:
        label = t.label
        yield "".join(
            [
                f'trimtab_slo_health{{backend="{_label_value(backend)}",'
                f'slo="{_label_value(slo)}",target="{label}"}} {_LEVELS[level]}\n'
                for backend, levels in t.health.items()
                for slo, level in levels.items()
            ]
        )
    yield _header("trimtab_slo_value")
    for t in targets:
        label = t.label
        yield "".join(
            [
                f"{before}{label}{after}{number}\n"
                for (before, after), number in zip(t.layout, _numbers(t.values), strict=True)
            ]
        )
    yield _header("trimtab_slo_threshold")
    for slo, compared in thresholds:
        for level, threshold in compared:
            yield (
                f'trimtab_slo_threshold{{level="{level}",slo="{_label_value(slo)}"}} '
                f"{_number(threshold)}\n"
            )
    yield _header("trimtab_target_phase")
    for t in targets:
        if t.phase:
            phase = _label_value(t.phase)
            yield f'trimtab_target_phase{{phase="{phase}",target="{t.label}"}} 1.0\n'
    yield _header("trimtab_decisions_total")
    for t in targets:
        yield from _by_key("trimtab_decisions_total", "action", t.label, t.decisions)
    yield _header("trimtab_adapter_errors_total")
    for t in targets:
        yield f'trimtab_adapter_errors_total{{target="{t.label}"}} {_number(t.adapter_errors)}\n'


def _by_key(name: str, label: str, target: str, values: Mapping[str, float]) -> Iterator[str]:
    """A sample of ``name`` per key of ``values``, the key as ``label`` (which sorts before
    ``target``)."""
    for key, value in values.items():
        yield f'{name}{{{label}="{_label_value(key)}",target="{target}"}} {_number(value)}\n'


def _header(name: str) -> str:
    """HELP and TYPE, named as ``prometheus_client`` names them (a counter with ``_total``)."""
    kind, doc, _ = FAMILIES[name]
    escaped = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


def _numbers(values: Sequence[float]) -> Iterable[str]:
    """:func:`_number` of each value; in C (``map``) when ``repr`` writes them all alike (none
    infinite, NaN or of a million or more, which Go writes with an exponent): the usual case."""
    if values and max(values) < 1e6 and min(values) > -inf and not any(map(isnan, values)):
        return map(repr, map(float, values))
    return map(_number, values)


def _number(value: float) -> str:
    """A sample's value as ``prometheus_client`` writes it (``+Inf``, ``NaN``, Go's exponents)."""
    return floatToGoString(value)  # type: ignore[no-untyped-call,no-any-return]


def _label_value(value: str) -> str:
    """``value`` escaped for a label in the text format (names are validated: rarely needed)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return value
