"""OpenSLO documents, read as they are into trimtab SLOs.

``openslo/v1``, ``kind: SLO``, with an inline ``indicator`` or an ``indicatorRef`` to an SLI
object. One SLO with N ``objectives`` becomes N trimtab SLOs:

- the first keeps the SLO's name, the others are named ``<name>-<index>`` (``-1``, ``-2``, … by
  position), so adding an objective never renames the SLOs already running. The SLO's and the
  objective's ``displayName`` become the display name; ``metadata.labels`` (lists joined with
  ``,``) and ``annotations`` carry over to ``metadata``;
- ``target`` (0–1) or ``targetPercent`` becomes the objective in percent; ``timeWindow[0]`` the
  window, in OpenSLO's duration shorthand: ``m`` minutes, ``h``, ``d``, ``w``, ``M`` = 30 days,
  ``Q`` = 90 days, ``Y`` = 365 days (as OpenSLO's reference library counts them). Without a
  ``timeWindow`` the window is 30 days. A calendar-aligned window is read as a rolling window of
  the same length, and the annotation ``trimtab.dev/approximation`` says so;
- ``ratioMetric`` queries are PromQL. A query holding ``{{window}}`` (or ``{{.window}}``) is used
  as written. Otherwise it is read as a counter (``counter: true``, also when ``counter`` is
  absent: Prometheus event counts are counters): a selector ``Q`` becomes
  ``sum(rate(Q[{{window}}]))``, another expression ``sum(rate((Q)[{{window}}:]))`` — a subquery,
  which sees a counter reset inside a pre-aggregated expression as a smaller increase, so prefer
  selectors. A counter query that already applies ``rate``/``increase``/``*_over_time`` over a
  fixed range is an error (set ``counter: false`` or put ``{{window}}`` in its range). With
  ``counter: false`` values are averaged: ``sum(avg_over_time(…))``. ``good`` or ``bad`` with
  ``total`` become indicator ``events``; ``raw`` with ``rawType`` an indicator ``raw``
  (``avg(avg_over_time(…))``, subtracted from 1 for ``success``);
- ``thresholdMetric``: an instant query, good while ``query <op> value``. It becomes an indicator
  ``raw``: ``1 - avg(avg_over_time(((Q) <op> bool VALUE)[{{window}}:]))``, the share of bad
  samples;
- ``budgetingMethod: Occurrences`` is trimtab's own model. ``Timeslices`` is computed, not
  approximated: a slice of ``timeSliceWindow`` is good when its ratio compares with
  ``timeSliceTarget`` by the objective's ``op`` (``gte`` when absent) — for a thresholdMetric,
  when its share of good samples is at least ``timeSliceTarget``. The error ratio over a window
  is the share of bad slices, by a subquery stepping one slice at a time. ``RatioTimeslices``
  averages the slices' ratios the same way (for a thresholdMetric it is the share of bad samples
  again, sampled once a slice). Slices without traffic (0/0) count neither way. Burn rates are
  then bad-slice share ÷ (1 − target). Long windows make long subqueries (30 days at 1m is
  43,200 steps);
- on a ratioMetric objective, ``op`` only matters for ``Timeslices`` (OpenSLO defines it for
  threshold metrics, but its examples set it on ratio objectives too); ``value`` there is an
  error, as are ``timeSliceTarget``/``timeSliceWindow`` where the budgeting method has no use
  for them;
- ``alertPolicies`` and ``metricSource.type``/``metricSourceRef`` are accepted and not used:
  trimtab alerts from its own health definition and reads its own Prometheus. ``metricSource.
  spec`` must hold exactly a ``query``.

Kind ``SLI`` is read (for ``indicatorRef``) and gives no SLO itself. ``Service``,
``DataSource``, ``AlertPolicy``, ``AlertCondition`` and ``AlertNotificationTarget`` are accepted
and ignored: they describe notification and connection details trimtab does not use.

``openslo/v1alpha`` (the version Sloth reads): ``kind: SLO`` with ``budgetingMethod:
Occurrences`` and ``ratioMetrics`` objectives, mapped like ``openslo/v1`` ratio metrics (names
included); the window is ``timeWindows[0]``, ``count`` × ``unit`` (Second … Year). Threshold
indicators and ``Timeslices`` are errors there; ``kind: Service`` is ignored. Every other
``openslo/*`` version is an "unsupported apiVersion" error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from .durations import format_duration
from .errors import Problem
from .peerbase import (
    WINDOW,
    Camel,
    Draft,
    Invalid,
    Path,
    Peer,
    Text,
    dns_name,
    exactly_one,
    number,
    parse,
    percent,
)
from .promql import PromQLError, parse_selector
from .yamlsource import SourceDocument

__all__ = ["APPROXIMATION", "V1", "V1ALPHA", "SLISource", "drafts", "sli_source"]

V1 = "openslo/v1"
V1ALPHA = "openslo/v1alpha"
APPROXIMATION = "trimtab.dev/approximation"
"""Annotation saying where a converted SLO only approximates its source."""

_IGNORED = {
    V1: ("Service", "DataSource", "AlertPolicy", "AlertCondition", "AlertNotificationTarget"),
    V1ALPHA: ("Service",),
}
_DAY = 86400
_SHORTHAND = {"m": 60, "h": 3600, "d": _DAY, "w": 7 * _DAY, "M": 30 * _DAY, "Q": 90 * _DAY,
              "Y": 365 * _DAY}  # fmt: skip
_ALPHA_UNITS = {"Second": 1, "Minute": 60, "Hour": 3600, "Day": _DAY, "Week": 7 * _DAY,
                "Month": 30 * _DAY, "Quarter": 90 * _DAY, "Year": 365 * _DAY}  # fmt: skip
_DEFAULT_WINDOW = 30 * _DAY
_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_WINDOW = re.compile(r"\{\{\s*\.?window\s*\}\}")
_RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv|[a-z]+_over_time)\s*\(")


def _shorthand(value: Any) -> Any:
    match = re.fullmatch(r"(\d+)([mhdwMQY])", value) if isinstance(value, str) else None
    if match is None or int(match[1]) == 0:
        raise ValueError(
            f"invalid duration {value!r}: expected a positive number and one of m (minutes), "
            "h, d, w, M (months), Q, Y, such as 28d"
        )
    return int(match[1]) * _SHORTHAND[match[2]]


def _slice_window(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):  # minutes, per OpenSLO
        if value <= 0:
            raise ValueError(f"invalid time slice {value!r}: must be greater than zero")
        return value * 60
    return _shorthand(value)


def _label_value(value: Any) -> Any:
    return ",".join(str(v) for v in value) if isinstance(value, list) else value


Shorthand = Annotated[float, BeforeValidator(_shorthand)]
SliceWindow = Annotated[float, BeforeValidator(_slice_window)]
LabelValue = Annotated[Text, BeforeValidator(_label_value)]
Op = Literal["lt", "lte", "gt", "gte"]


class _Metadata(Camel):
    name: str = Field(min_length=1)
    display_name: Text | None = None
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    annotations: dict[str, Text] = Field(default_factory=dict)


class _Query(Peer):
    query: str = Field(min_length=1)


class _MetricSource(Camel):
    metric_source_ref: str | None = None
    type: str | None = None
    spec: _Query


class _Metric(Camel):
    metric_source: _MetricSource


class _RatioMetric(Camel):
    counter: bool = True
    good: _Metric | None = None
    bad: _Metric | None = None
    total: _Metric | None = None
    raw_type: Literal["success", "failure"] | None = None
    raw: _Metric | None = None

    @model_validator(mode="after")
    def _shape(self) -> _RatioMetric:
        if self.raw is not None or self.raw_type is not None:
            if self.raw is None or self.raw_type is None or self.good or self.bad or self.total:
                raise ValueError("'raw' goes with 'rawType' alone (no good, bad or total)")
        elif self.total is None or (self.good is None) == (self.bad is None):
            raise ValueError("give 'total' and exactly one of 'good' or 'bad' (or 'raw')")
        return self


class _SLISpec(Camel):
    description: Text | None = None
    threshold_metric: _Metric | None = None
    ratio_metric: _RatioMetric | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _SLISpec:
        exactly_one(self, ("threshold_metric", "ratio_metric"))
        return self


class _Indicator(Camel):
    metadata: _Metadata | None = None
    spec: _SLISpec


class _Calendar(Camel):
    start_time: Text
    time_zone: str


class _TimeWindow(Camel):
    duration: Shorthand
    is_rolling: bool | None = None
    calendar: _Calendar | None = None


class _Objective(Camel):
    display_name: Text | None = None
    op: Op | None = None
    value: float | None = None
    target: float | None = Field(default=None, gt=0, lt=1)
    target_percent: float | None = Field(default=None, gt=0, lt=100)
    time_slice_target: float | None = Field(default=None, gt=0, le=1)
    time_slice_window: SliceWindow | None = None

    @model_validator(mode="after")
    def _one_target(self) -> _Objective:
        exactly_one(self, ("target", "target_percent"))
        return self


class _SLOSpec(Camel):
    description: Text | None = None
    service: str = Field(min_length=1)
    indicator: _Indicator | None = None
    indicator_ref: str | None = None
    budgeting_method: Literal["Occurrences", "Timeslices", "RatioTimeslices"]
    time_window: list[_TimeWindow] | None = Field(default=None, min_length=1, max_length=1)
    objectives: list[_Objective] = Field(min_length=1)
    alert_policies: list[Any] | None = None

    @model_validator(mode="after")
    def _one_indicator(self) -> _SLOSpec:
        exactly_one(self, ("indicator", "indicator_ref"))
        return self


class _SLO(Camel):
    api_version: Literal["openslo/v1"]
    kind: Literal["SLO"]
    metadata: _Metadata
    spec: _SLOSpec


class _SLI(Camel):
    api_version: Literal["openslo/v1"]
    kind: Literal["SLI"]
    metadata: _Metadata
    spec: _SLISpec


class _AlphaQuery(Camel):
    source: str
    query_type: str
    query: str = Field(min_length=1)


class _AlphaRatio(Camel):
    counter: bool = True
    good: _AlphaQuery
    total: _AlphaQuery


class _AlphaObjective(Camel):
    display_name: Text | None = None
    op: Op | None = None
    target: float = Field(gt=0, lt=1)
    ratio_metrics: _AlphaRatio | None = None


class _AlphaWindow(Camel):
    count: int = Field(gt=0)
    unit: Literal["Second", "Minute", "Hour", "Day", "Week", "Month", "Quarter", "Year"]
    is_rolling: bool | None = None
    calendar: _Calendar | None = None


class _AlphaSpec(Camel):
    description: Text | None = None
    service: str = Field(min_length=1)
    budgeting_method: Literal["Occurrences", "Timeslices"]
    time_windows: list[_AlphaWindow] = Field(min_length=1, max_length=1)
    indicator: dict[str, Any] | None = None
    objectives: list[_AlphaObjective] = Field(min_length=1)


class _AlphaSLO(Camel):
    api_version: Literal["openslo/v1alpha"]
    kind: Literal["SLO"]
    metadata: _Metadata
    spec: _AlphaSpec


# ------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class SLISource:
    """An ``openslo/v1`` SLI spec and where it is written (an SLI object or inline)."""

    doc: SourceDocument
    path: Path
    spec: _SLISpec


def sli_source(doc: SourceDocument, base: Path, data: Any) -> tuple[str, SLISource] | None:
    """The name and spec of ``data`` if it is a valid ``openslo/v1`` SLI object."""
    if not (isinstance(data, dict) and data.get("apiVersion") == V1 and data.get("kind") == "SLI"):
        return None
    try:
        sli = _SLI.model_validate(data)
    except ValidationError:
        return None  # reported when the document itself is read
    return sli.metadata.name, SLISource(doc, (*base, "spec"), sli.spec)


def drafts(
    doc: SourceDocument,
    base: Path,
    data: dict[str, Any],
    slis: Mapping[str, SLISource],
    problems: list[Problem],
) -> list[Draft]:
    """The SLOs of the ``openslo/*`` object ``data`` (at ``base``); problems are appended."""
    version, kind = data.get("apiVersion"), data.get("kind")
    if version not in _IGNORED:
        problems.append(
            doc.problem(
                (*base, "apiVersion"),
                f"unsupported apiVersion {version!r}: trimtab reads {V1} and {V1ALPHA}",
            )
        )
    elif kind == "SLO" and version == V1:
        slo = parse(_SLO, doc, base, data, problems)
        return _v1(doc, base, slo, slis, problems) if slo else []
    elif kind == "SLO":
        alpha = parse(_AlphaSLO, doc, base, data, problems)
        return _v1alpha(doc, base, alpha, problems) if alpha else []
    elif kind == "SLI" and version == V1:
        parse(_SLI, doc, base, data, problems)
    elif kind not in _IGNORED[version]:
        known = ", ".join(("SLO", "SLI", *_IGNORED[V1]) if version == V1 else ("SLO", "Service"))
        problems.append(
            doc.problem(
                (*base, "kind"),
                f"unknown {version} kind {kind!r}: expected one of {known}",
                key=kind is None,
            )
        )
    return []


@dataclass
class _Common:
    """What every objective of one OpenSLO SLO shares, and where it was written."""

    doc: SourceDocument
    base: Path
    metadata: _Metadata
    service: str
    description: str | None
    window: float
    window_at: Path
    notes: dict[str, str] = field(default_factory=dict)

    def draft(
        self, index: int, objective_name: str | None, target_percent: float, at: Path
    ) -> Draft:
        meta = self.metadata
        name = dns_name(meta.name if index == 0 else f"{meta.name}-{index}")
        if not name:
            raise Invalid(
                self.doc.problem(
                    (*self.base, "metadata", "name"), "the name needs letters or digits"
                )
            )
        names = [n for n in (meta.display_name, objective_name) if n]
        data: dict[str, Any] = {
            "metadata": {
                "name": name,
                "displayName": ": ".join(names) if names else None,
                "labels": dict(meta.labels),
                "annotations": {**meta.annotations, **self.notes},
            },
            "spec": {
                "service": self.service,
                "description": self.description,
                "objective": target_percent,
                "window": format_duration(self.window),
            },
        }
        doc, base = self.doc, self.base
        where: dict[Path, tuple[SourceDocument, Path]] = {
            (): (doc, at),
            ("metadata",): (doc, (*base, "metadata")),
            ("metadata", "name"): (doc, (*base, "metadata", "name")),
            ("spec", "service"): (doc, (*base, "spec", "service")),
            ("spec", "description"): (doc, (*base, "spec", "description")),
            ("spec", "window"): (doc, self.window_at),
        }
        return Draft(data, where)


def _calendar_note(window: float, is_rolling: bool | None, calendar: _Calendar | None) -> str:
    if calendar is None and is_rolling is not False:
        return ""
    return f"calendar-aligned time window read as a rolling {format_duration(window)} window"


def _v1(
    doc: SourceDocument,
    base: Path,
    slo: _SLO,
    slis: Mapping[str, SLISource],
    problems: list[Problem],
) -> list[Draft]:
    spec = slo.spec
    if spec.indicator is not None:
        sli = SLISource(doc, (*base, "spec", "indicator", "spec"), spec.indicator.spec)
    elif spec.indicator_ref is not None and spec.indicator_ref in slis:
        sli = slis[spec.indicator_ref]
    else:
        message = f"no openslo/v1 SLI named {spec.indicator_ref!r} was read with this SLO"
        problems.append(doc.problem((*base, "spec", "indicatorRef"), message))
        return []
    description = spec.description or sli.spec.description
    common = _Common(
        doc, base, slo.metadata, spec.service, description, _DEFAULT_WINDOW, (*base, "spec")
    )
    if spec.time_window:
        window = spec.time_window[0]
        common.window, common.window_at = window.duration, (*base, "spec", "timeWindow", 0)
        note = _calendar_note(window.duration, window.is_rolling, window.calendar)
        if note:
            common.notes[APPROXIMATION] = note
    result = []
    for j, objective in enumerate(spec.objectives):
        at = (*base, "spec", "objectives", j)
        try:
            indicator = _indicator(sli, objective, spec.budgeting_method, doc, at)
            if objective.target is not None:
                target, target_at = percent(objective.target), (*at, "target")
            else:
                assert objective.target_percent is not None
                target, target_at = objective.target_percent, (*at, "targetPercent")
            draft = common.draft(j, objective.display_name, target, at)
        except Invalid as exc:
            problems.append(exc.problem)
            continue
        draft.data["spec"]["indicator"] = indicator
        draft.where[("spec", "objective")] = (doc, target_at)
        draft.where[("spec", "indicator")] = (sli.doc, sli.path)
        result.append(draft)
    return result


def _indicator(
    sli: SLISource, objective: _Objective, method: str, doc: SourceDocument, at: Path
) -> dict[str, Any]:
    """The trimtab indicator for one objective (the formulas are in the module docstring)."""
    slices = method != "Occurrences"
    if objective.time_slice_window is not None and not slices:
        raise Invalid(doc.problem((*at, "timeSliceWindow"), f"unused by budgetingMethod {method}"))
    if objective.time_slice_target is not None and method != "Timeslices":
        raise Invalid(doc.problem((*at, "timeSliceTarget"), f"unused by budgetingMethod {method}"))
    step = ""
    if slices:
        if objective.time_slice_window is None:
            raise Invalid(doc.problem(at, f"budgetingMethod {method} needs a timeSliceWindow"))
        step = format_duration(objective.time_slice_window)
    if method == "Timeslices" and objective.time_slice_target is None:
        raise Invalid(doc.problem(at, "budgetingMethod Timeslices needs a timeSliceTarget"))
    slice_target = number(objective.time_slice_target or 1)

    if sli.spec.threshold_metric is not None:
        if objective.op is None or objective.value is None:
            raise Invalid(doc.problem(at, "a thresholdMetric objective needs 'op' and 'value'"))
        query = sli.spec.threshold_metric.metric_source.spec.query.strip()
        if _WINDOW.search(query):
            path = (*sli.path, "thresholdMetric", "metricSource", "spec", "query")
            message = "trimtab samples a thresholdMetric query itself: give it without {{window}}"
            raise Invalid(sli.doc.problem(path, message))
        good = f"(({query}) {_OPS[objective.op]} bool {number(objective.value)})"
        if method == "Timeslices":  # here op compares values, so slices compare by >=
            good = f"(avg_over_time({good}[{step}:]) >= bool {slice_target})"
        return _raw(f"1 - avg(avg_over_time({good}[{WINDOW}:{step}]))")

    ratio = sli.spec.ratio_metric
    assert ratio is not None
    if objective.value is not None:
        message = "'value' is for thresholdMetric objectives; this SLI is a ratioMetric"
        raise Invalid(doc.problem((*at, "value"), message))

    def windowed(part: str, metric: _Metric, *, counter: bool, average: bool = False) -> str:
        path = (*sli.path, "ratioMetric", part, "metricSource", "spec", "query")
        query = metric.metric_source.spec.query
        return _windowed(query, counter=counter, average=average, doc=sli.doc, path=path)

    if ratio.raw is not None:
        raw = windowed("raw", ratio.raw, counter=False, average=True)
        success = raw if ratio.raw_type == "success" else f"1 - ({raw})"
        if not slices:
            return _raw(raw if ratio.raw_type == "failure" else f"1 - ({raw})")
    else:
        assert ratio.total is not None
        total = windowed("total", ratio.total, counter=ratio.counter)
        part, metric = ("good", ratio.good) if ratio.good is not None else ("bad", ratio.bad)
        assert metric is not None
        counted = windowed(part, metric, counter=ratio.counter)
        if not slices:
            key = "goodQuery" if part == "good" else "errorQuery"
            return {"events": {key: counted, "totalQuery": total}}
        share = f"({counted}) / ({total})"
        success = share if part == "good" else f"1 - {share}"
    # One sample per slice; ">= 0" drops the slices without traffic (0/0 is NaN).
    in_slice = f"(({success.replace(WINDOW, step)}) >= 0)"
    if method == "Timeslices":
        in_slice = f"({in_slice} {_OPS[objective.op or 'gte']} bool {slice_target})"
    return _raw(f"1 - avg_over_time({in_slice}[{WINDOW}:{step}])")


def _raw(query: str) -> dict[str, Any]:
    return {"raw": {"errorRatioQuery": query}}


def _windowed(query: str, *, counter: bool, average: bool, doc: SourceDocument, path: Path) -> str:
    """``query`` over ``{{window}}``: as written if it says where the range goes, else wrapped."""
    if _WINDOW.search(query):
        return _WINDOW.sub(WINDOW, query)
    text = query.strip()
    if counter and _RANGE_FUNCTION.search(text):
        message = (
            "this counter query already computes over a fixed range: put {{window}} in its "
            "range (e.g. rate(x[{{window}}])) or set counter: false"
        )
        raise Invalid(doc.problem(path, message))
    function = "rate" if counter else "avg_over_time"
    outer = "avg" if average else "sum"
    try:
        parse_selector(text, metric_required=False)
    except PromQLError:
        return f"{outer}({function}(({text})[{WINDOW}:]))"
    return f"{outer}({function}({text}[{WINDOW}]))"


def _v1alpha(
    doc: SourceDocument, base: Path, slo: _AlphaSLO, problems: list[Problem]
) -> list[Draft]:
    spec = slo.spec
    if spec.indicator is not None:
        message = "openslo/v1alpha threshold indicators are not supported; use openslo/v1"
        problems.append(doc.problem((*base, "spec", "indicator"), message, key=True))
        return []
    if spec.budgeting_method != "Occurrences":
        message = "only Occurrences is supported in openslo/v1alpha; use openslo/v1 for Timeslices"
        problems.append(doc.problem((*base, "spec", "budgetingMethod"), message))
        return []
    tw = spec.time_windows[0]
    window = tw.count * _ALPHA_UNITS[tw.unit]
    common = _Common(
        doc, base, slo.metadata, spec.service, spec.description, window,
        (*base, "spec", "timeWindows", 0),
    )  # fmt: skip
    note = _calendar_note(window, tw.is_rolling, tw.calendar)
    if note:
        common.notes[APPROXIMATION] = note
    result = []
    for j, objective in enumerate(spec.objectives):
        at = (*base, "spec", "objectives", j)
        ratio = objective.ratio_metrics
        if ratio is None:
            problems.append(doc.problem(at, "give ratioMetrics: only ratio objectives are read"))
            continue
        try:
            good, total = (
                _windowed(q.query, counter=ratio.counter, average=False, doc=doc,
                          path=(*at, "ratioMetrics", part, "query"))
                for part, q in (("good", ratio.good), ("total", ratio.total))
            )  # fmt: skip
            draft = common.draft(j, objective.display_name, percent(objective.target), at)
        except Invalid as exc:
            problems.append(exc.problem)
            continue
        draft.data["spec"]["indicator"] = {"events": {"goodQuery": good, "totalQuery": total}}
        draft.where[("spec", "objective")] = (doc, (*at, "target"))
        draft.where[("spec", "indicator")] = (doc, (*at, "ratioMetrics"))
        result.append(draft)
    return result
