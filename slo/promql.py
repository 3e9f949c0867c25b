"""Compiles indicators to PromQL: one query per (indicator, window).

Selectors may hold ``{{param}}`` placeholders inside label-matcher values. They are filled in one
of three ways, so the same SLO serves many services and many targets share one query:

- ``params={"service": ["checkout"]}`` — one value: ``service="checkout"``;
- ``params={"service": ["checkout", "cart"]}`` — a batch: ``service=~"checkout|cart"``;
- ``params=None`` — generic (recording rules): ``service=~".+"``.

For the built-in indicators, the result is grouped by the SLO's ``backendLabel`` and by every
label a placeholder binds, so a batched result splits back per target. ``{{window}}`` is reserved
for the range of full queries (``events``, ``raw``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Literal, cast

from .durations import format_duration
from .models import UNIT_PER_SECOND, GaugeIndicator, Indicator, SLOSpec
from .presets import resolve

__all__ = [
    "CompiledSLI",
    "Counting",
    "GaugeShape",
    "Matcher",
    "Membership",
    "PromQLError",
    "Selector",
    "batchable",
    "compile_sli",
    "counting",
    "exact_params",
    "fill_selector",
    "grouping_labels",
    "ieee_divide",
    "le_matcher",
    "membership",
    "parse_gauge",
    "parse_selector",
    "placeholder_matchers",
    "placeholders",
    "quote",
    "unquote",
]

Params = Mapping[str, Sequence[str]] | None

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_METRIC = r"[A-Za-z_:][A-Za-z0-9_:]*"
_MATCHER = re.compile(
    r'\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*'
)
# A label matcher inside free PromQL whose value holds a placeholder.
_MATCHER_IN_QUERY = re.compile(
    r'(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*\{\{(?:[^"\\]|\\.)*)"'
)
WINDOW = "window"


class PromQLError(ValueError):
    """A selector or query that cannot be compiled; the message says why."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    """``metric{label op "value", …}``; ``metric`` may be empty."""

    metric: str
    matchers: tuple[Matcher, ...]


@dataclass(frozen=True)
class CompiledSLI:
    """The PromQL for one indicator over one window.

    ``ratio`` (budget-based: the error ratio) or ``value`` (value-based) is set; ``events`` is
    the request count over the window where the indicator knows it. ``by`` is the grouping.

    ``counted`` (error ratio and latency indicators) counts the bad or good requests over the
    window, as ``events`` counts them all: with :func:`counting`, the two give the ratio
    without Prometheus evaluating ``ratio``'s selectors a second time (a rate is the
    increase over the window's seconds, so the shares are equal).
    """

    window: float
    by: tuple[str, ...]
    ratio: str | None = None
    value: str | None = None
    events: str | None = None
    counted: str | None = None


@dataclass(frozen=True)
class Counting:
    """How the error ratio follows from :attr:`CompiledSLI.counted` and ``events``, as
    :attr:`CompiledSLI.ratio` computes it."""

    bad: bool  # counted are the bad events (else the good ones: the ratio is 1 − share)
    absent_is_zero: bool  # a group without counted series counted none (else it has no ratio)

    def ratio(self, counted: float | None, events: float) -> float | None:
        """The error ratio of ``counted`` among ``events`` (``None``: no counted series)."""
        if counted is None:
            if not self.absent_is_zero:
                return None
            counted = 0.0 * events
        share = ieee_divide(counted, events)
        return share if self.bad else 1 - share


def counting(spec: SLOSpec) -> Counting | None:
    """How ``spec``'s ratio follows from counts (``None``: its SLI is queried as it is)."""
    plain = resolve(spec.indicator)
    if plain.error_ratio is not None:  # (counted or 0 * total) / total
        return Counting(bad=plain.error_ratio.errors is not None, absent_is_zero=True)
    if plain.latency is not None:  # 1 - fast / total
        return Counting(bad=False, absent_is_zero=False)
    return None


def ieee_divide(a: float, b: float) -> float:
    """IEEE division, as Go and PromQL do it: x/0 is ±Inf, 0/0 is NaN."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


_ESCAPE = re.compile(r'\\(?:(["\\\'abfnrtv])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|([0-7]{3})|(.))')
_SIMPLE_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "'": "'",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


def unquote(value: str) -> str:
    """The value of a PromQL string literal's body (Go escapes)."""

    def replace(m: re.Match[str]) -> str:
        simple, hex2, hex4, octal, bad = m.groups()
        if bad is not None:
            raise PromQLError(f"invalid escape \\{bad} in {value!r}")
        if simple is not None:
            return _SIMPLE_ESCAPES[simple]
        return chr(int(hex2 or hex4, 16) if octal is None else int(octal, 8))

    return _ESCAPE.sub(replace, value)


def placeholders(text: str) -> set[str]:
    """The placeholder names in ``text`` (``{{service}}`` → ``service``)."""
    return set(_PLACEHOLDER.findall(text))


def quote(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@lru_cache(maxsize=4096)
def parse_selector(text: str, *, metric_required: bool = True) -> Selector:
    """Parse ``metric{a="b", c=~"d"}`` (or ``{…}`` alone when ``metric_required`` is false)."""
    source = text.strip()
    match = re.match(rf"^({_METRIC})?\s*(\{{(.*)\}})?$", source, re.DOTALL)
    if match is None or (not match.group(1) and not match.group(2)):
        raise PromQLError(f'invalid selector {text!r}: expected metric{{label="value", …}}')
    metric = match.group(1) or ""
    if metric_required and not metric:
        raise PromQLError(f"invalid selector {text!r}: a metric name is required")
    body = match.group(3) or ""
    matchers: list[Matcher] = []
    position = 0
    while body[position:].strip():
        m = _MATCHER.match(body, position)
        if m is None:
            raise PromQLError(
                f"invalid label matcher in {text!r} near {body[position:].strip()[:30]!r}"
            )
        try:
            value = unquote(m["value"])
        except PromQLError as exc:
            raise PromQLError(f"{exc} in selector {text!r}") from None
        matchers.append(Matcher(m["label"], m["op"], value))
        position = m.end()
        if position < len(body):
            if body[position] != ",":
                raise PromQLError(f"expected ',' between label matchers in {text!r}")
            position += 1
    for matcher in matchers:
        if placeholders(matcher.value) and matcher.op not in ("=", "=~"):
            raise PromQLError(
                f"placeholder in {matcher.label}{matcher.op}{quote(matcher.value)}: "
                "placeholders may only be used with = or =~"
            )
    return Selector(metric, tuple(matchers))


def _fill_value(value: str, op: str, params: Params) -> tuple[str, str]:
    """The operator and value of a matcher with its placeholders filled."""
    names = placeholders(value)
    if not names:
        return op, value
    if params is not None and op == "=" and all(len(params.get(n, ())) == 1 for n in names):
        return "=", _PLACEHOLDER.sub(lambda m: params[m.group(1)][0], value)

    def alternatives(name: str) -> str:
        if params is None:
            return ".+"
        values = params.get(name)
        if not values:
            raise PromQLError(f"no value for placeholder {{{{{name}}}}}")
        return "(?:" + "|".join(re.escape(v) for v in values) + ")"

    # split() with one group alternates literal text and placeholder names. Literal parts of
    # an '=' value must be escaped once the matcher becomes a regex.
    parts = _PLACEHOLDER.split(value)
    out = [
        (re.escape(part) if op == "=" else part) if i % 2 == 0 else alternatives(part)
        for i, part in enumerate(parts)
    ]
    return "=~", "".join(out)


def fill_selector(selector: Selector, params: Params) -> Selector:
    """``selector`` with its placeholders filled exactly as the compiled PromQL fills them.

    For evaluators that match series themselves (the embedded scrape source) rather than send
    the query text to Prometheus.
    """
    filled = (Matcher(m.label, *_fill_value(m.value, m.op, params)) for m in selector.matchers)
    return Selector(selector.metric, tuple(filled))


def _render(selector: Selector, params: Params, extra: Iterable[Matcher] = ()) -> str:
    rendered = []
    for matcher in (*selector.matchers, *extra):
        op, value = _fill_value(matcher.value, matcher.op, params)
        rendered.append(f"{matcher.label}{op}{quote(value)}")
    return f"{selector.metric}{{{', '.join(rendered)}}}" if rendered else selector.metric


def fill_query(query: str, window: float, params: Params) -> str:
    """Fill ``{{window}}`` and the placeholders inside label matchers of a free PromQL query."""

    def matcher(m: re.Match[str]) -> str:
        if m["op"] not in ("=", "=~"):
            raise PromQLError(f"placeholder in {m.group(0)!r}: only = or =~ may hold one")
        op, value = _fill_value(unquote(m["value"]), m["op"], params)
        return f"{m['label']}{op}{quote(value)}"

    text = _PLACEHOLDER.sub(
        lambda m: format_duration(window) if m.group(1) == WINDOW else m.group(0), query
    )
    text = _MATCHER_IN_QUERY.sub(matcher, text)
    left = placeholders(text)
    if left:
        names = ", ".join(sorted("{{" + n + "}}" for n in left))
        raise PromQLError(f"placeholders outside label matchers are not supported: {names}")
    return text


def grouping_labels(spec: SLOSpec) -> tuple[str, ...]:
    """``backendLabel`` and the labels bound by placeholders, for built-in indicators."""
    labels: list[str] = [spec.backend_label] if spec.backend_label else []
    for selector in _selectors(spec.indicator):
        for matcher in selector.matchers:
            if placeholders(matcher.value) and matcher.label not in labels:
                labels.append(matcher.label)
    return tuple(labels)


GaugeOp = Literal["sum", "max", "min", "avg"]
_GAUGE_AGGREGATION = re.compile(
    r"^\s*(?P<op>sum|max|min|avg)\s*(?:by\s*\((?P<by>[^()]*)\)\s*)?"
    r"\(\s*(?P<selector>.*?)\s*\)\s*(?:by\s*\((?P<by_after>[^()]*)\)\s*)?$",
    re.DOTALL,
)


@dataclass(frozen=True)
class GaugeShape:
    """A gauge query that is a selector, or ``op by (labels) (selector)``."""

    selector: Selector
    op: GaugeOp | None
    by: tuple[str, ...]


def parse_gauge(text: str) -> GaugeShape | None:
    """The shape of a gauge query, or ``None`` for any other PromQL."""
    op: GaugeOp | None = None
    by: tuple[str, ...] = ()
    body = text
    m = _GAUGE_AGGREGATION.match(text)
    if m is not None:
        if m["by"] is not None and m["by_after"] is not None:
            return None
        op = cast(GaugeOp, m["op"])
        names = m["by"] if m["by"] is not None else (m["by_after"] or "")
        by = tuple(n.strip() for n in names.split(",") if n.strip())
        if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in by):
            return None
        body = m["selector"]
    try:
        return GaugeShape(parse_selector(body, metric_required=False), op, by)
    except PromQLError:
        return None


def _batchable_gauge(query: str) -> GaugeShape | None:
    """The gauge's shape when a batch can split it: its aggregation keeps the placeholders'
    labels (or it aggregates nothing)."""
    shape = parse_gauge(query)
    if shape is None:
        return None
    bound = {m.label for m in shape.selector.matchers if placeholders(m.value)}
    return shape if shape.op is None or bound <= set(shape.by) else None


def batchable(spec: SLOSpec) -> bool:
    """Whether targets with different params can share this SLO's queries."""
    plain = resolve(spec.indicator)
    if plain.gauge is not None:
        return _batchable_gauge(plain.gauge.query) is not None
    return plain.events is None and plain.raw is None


def _selectors(indicator: Indicator) -> list[Selector]:
    plain = resolve(indicator)
    if plain.gauge is not None:
        shape = _batchable_gauge(plain.gauge.query)
        return [shape.selector] if shape is not None else []
    if plain.error_ratio is not None:
        texts = [plain.error_ratio.errors or plain.error_ratio.good or "", plain.error_ratio.total]
        return [parse_selector(t) for t in texts]
    if plain.latency is not None:
        return [parse_selector(plain.latency.histogram + plain.latency.selector)]
    if plain.quantile is not None:
        return [parse_selector(plain.quantile.histogram + plain.quantile.selector)]
    return []


def le_matcher(threshold: float) -> Matcher:
    """The ``le`` bucket matcher for ``threshold``, tolerant of ``1`` vs ``1.0`` formatting."""
    text = format(Decimal(repr(threshold)).normalize(), "f")
    if "." not in text:
        return Matcher("le", "=~", re.escape(text) + r"(\.0+)?")
    return Matcher("le", "=~", re.escape(text) + "0*")


def _by(labels: Sequence[str]) -> str:
    return f" by ({', '.join(labels)})" if labels else ""


def compile_sli(spec: SLOSpec, window: float, params: Params = None) -> CompiledSLI:
    """PromQL for the SLO's indicator over ``window`` seconds (see the module docstring)."""
    plain = resolve(spec.indicator)
    w = format_duration(window)
    by = grouping_labels(spec)
    sum_by = f"sum{_by(by)}"

    if plain.error_ratio is not None:
        er = plain.error_ratio
        total = f"{sum_by} (rate({_render(parse_selector(er.total), params)}[{w}]))"
        part = parse_selector(er.errors or er.good or "")
        counted = f"{sum_by} (rate({_render(part, params)}[{w}]))"
        share = f"({counted} or 0 * {total}) / {total}"
        ratio = share if er.errors is not None else f"1 - {share}"
        events = f"{sum_by} (increase({_render(parse_selector(er.total), params)}[{w}]))"
        tally = f"{sum_by} (increase({_render(part, params)}[{w}]))"
        return CompiledSLI(window, by, ratio=ratio, events=events, counted=tally)

    if plain.latency is not None:
        lat = plain.latency
        base = parse_selector(lat.histogram + lat.selector)
        bucket = Selector(base.metric + "_bucket", base.matchers)
        count = Selector(base.metric + "_count", base.matchers)
        fast = _render(bucket, params, [le_matcher(lat.threshold * UNIT_PER_SECOND[lat.unit])])
        total = f"{sum_by} (rate({_render(count, params)}[{w}]))"
        ratio = f"1 - {sum_by} (rate({fast}[{w}])) / {total}"
        events = f"{sum_by} (increase({_render(count, params)}[{w}]))"
        tally = f"{sum_by} (increase({fast}[{w}]))"
        return CompiledSLI(window, by, ratio=ratio, events=events, counted=tally)

    if plain.quantile is not None:
        q = plain.quantile
        base = parse_selector(q.histogram + q.selector)
        buckets = _render(Selector(base.metric + "_bucket", base.matchers), params)
        counts = _render(Selector(base.metric + "_count", base.matchers), params)
        value = f"histogram_quantile({q.quantile!r}, sum{_by((*by, 'le'))} (rate({buckets}[{w}])))"
        if q.unit != "seconds":
            value = f"{value} / {UNIT_PER_SECOND[q.unit]!r}"
        events = f"{sum_by} (increase({counts}[{w}]))"
        return CompiledSLI(window, by, value=value, events=events)

    if plain.gauge is not None:
        return CompiledSLI(window, by, value=_gauge(plain.gauge, by, w, params))

    if plain.events is not None:
        ev = plain.events
        total = fill_query(ev.total_query, window, params)
        counted = fill_query(ev.error_query or ev.good_query or "", window, params)
        share = f"({counted}) / ({total})"
        return CompiledSLI(window, by, ratio=share if ev.error_query else f"1 - {share}")

    assert plain.raw is not None
    return CompiledSLI(
        window, by, ratio=f"({fill_query(plain.raw.error_ratio_query, window, params)})"
    )


def _gauge(gauge: GaugeIndicator, by: Sequence[str], w: str, params: Params) -> str:
    query = fill_query(gauge.query, 1.0, params)
    over_time = {"max": "max_over_time", "avg": "avg_over_time", "last": "last_over_time"}
    across = {"max": "max", "avg": "avg", "last": "max"}
    return f"{across[gauge.aggregate]}{_by(by)} ({over_time[gauge.aggregate]}(({query})[{w}:]))"


@dataclass(frozen=True, slots=True)
class Membership:
    """Which series of a batched result belong to one target.

    A batched query groups by the labels its placeholders bind; a series belongs to a target
    when each such label holds what the target's params make of the matcher: ``exact`` values
    (from ``=`` matchers, looked up by key) and full matches of ``patterns`` (from ``=~``).
    Full queries are never batched across params, so every series of theirs belongs.
    """

    exact: tuple[tuple[str, str], ...]
    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    values: tuple[str, ...] = field(init=False)  # the exact values, in the labels' order

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(value for _, value in self.exact))

    def admits(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` match the patterns (the exact values are checked by the caller,
        against :attr:`values`)."""
        return all(
            label in labels and pattern.fullmatch(labels[label]) is not None
            for label, pattern in self.patterns
        )


def placeholder_matchers(spec: SLOSpec) -> tuple[tuple[str, str, str], ...]:
    """``(label, op, value)`` of each matcher with a placeholder in the indicator's selectors:
    all of ``spec`` that :func:`membership` reads. SLOs whose matchers are alike share their
    targets' memberships."""
    return tuple(
        (matcher.label, matcher.op, matcher.value)
        for selector in _selectors(spec.indicator)
        for matcher in selector.matchers
        if placeholders(matcher.value)
    )


def exact_params(matchers: tuple[tuple[str, str, str], ...]) -> tuple[str, ...] | None:
    """When each of these :func:`placeholder_matchers` is ``label="{{name}}"``, each on a label
    of its own: the names, in the order of :attr:`Membership.values`. A target's membership is
    then just its values of those params (and its series those whose labels hold them)."""
    distinct = sorted(set(matchers))  # an error ratio's two selectors repeat theirs
    labels = [label for label, _, _ in distinct]
    if len(set(labels)) != len(labels):
        return None
    names = []
    for _, op, value in distinct:
        whole = _PLACEHOLDER.fullmatch(value)
        if op != "=" or whole is None:
            return None
        names.append(whole.group(1))
    return tuple(names)


def membership(matchers: tuple[tuple[str, str, str], ...], params: Mapping[str, str]) -> Membership:
    """How to recognise the series of the target with ``params`` in a batched result of an
    SLO with these :func:`placeholder_matchers`."""
    exact: dict[str, str] = {}
    patterns: list[tuple[str, re.Pattern[str]]] = []
    bound = {name: [value] for name, value in params.items()}
    for label, op, text in matchers:
        op, value = _fill_value(text, op, bound)
        if op == "=":
            exact[label] = value
        else:
            patterns.append((label, re.compile(value)))
    return Membership(tuple(sorted(exact.items())), tuple(patterns))
