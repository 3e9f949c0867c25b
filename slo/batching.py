"""Batching: one query per (indicator, window) for every target that shares the indicator.

Targets that use the same SLO with different ``params`` (or different SLOs with the same
indicator) share a query: their param values merge into one matcher (``service=~"a|b"``), the
result is grouped by the param labels and the ``backendLabel``, and :func:`assemble` splits it
back per target. A query lists the values of the targets it serves, however many, unless the
list would make it longer than ``max_length`` bytes: then it becomes generic
(``service=~".+"``) and the split happens here. Either way the number of queries per cycle grows
with the number of distinct indicators, never with the number of targets.

Listing matters when a query serves a few of many targets that share the indicator: a window
that only the targets of one phase ask for (Rollouts clip their windows to their last shift).
Against Prometheus 2.42 with 10,000 services, such a query for 1,429 of them listed took 0.03 s
of its CPU and answered 0.2 MB; generic, 0.17 s and 1.5 MB, all of which trimtab decoded to keep
a seventh. Listed for 8,571 of them, it cost Prometheus what the generic one did.

Full queries (``events``, ``raw``, and gauges other than a selector or an aggregation that keeps
the placeholders' labels) group as the user wrote them; with placeholders they are sent once per
distinct params.

Per window, an error ratio (``errorRatio``, ``latency``) is asked as two counts — the bad or
good requests (``counted``) and all of them (``events``) — and the ratio made here
(:class:`~trimtab.slo.promql.Counting`); other SLIs are asked as they are (``value``), with the
request count when the indicator knows it.

Sources use this module as their plan: :func:`plan_queries`, run each :class:`Query` their own
way (PromQL over HTTP, or the embedded scraper's evaluator), then :func:`assemble`.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from types import MappingProxyType
from typing import Literal

from .health import WindowMeasurement, counts_events, new_tuple
from .models import SLOSpec
from .ports import Measurements, SeriesRequest, SeriesResult
from .promql import (
    Counting,
    Membership,
    batchable,
    compile_sli,
    counting,
    exact_params,
    membership,
    placeholder_matchers,
)

__all__ = [
    "Answer",
    "Assembly",
    "Query",
    "Sample",
    "Split",
    "assemble",
    "plan_queries",
    "plan_what_can_be_planned",
    "with_unplanned",
]

Field = Literal["value", "events", "counted"]
Sample = tuple[Mapping[str, str], float]
Answer = Sequence[Sample] | str
"""The samples a query returned (labels, value), or the reason it failed."""

MAX_QUERY_LENGTH = 15_000
"""The longest query, in UTF-8 bytes, that a plan lists values in: VictoriaMetrics refuses
queries over 16 KiB unless told otherwise (``-search.maxQueryLen``). About 1,500 values of 8
characters."""


@dataclass(frozen=True)
class Query:
    """One query and the requests it serves."""

    promql: str
    field: Field
    window: float
    spec: SLOSpec  # the indicator to evaluate (every member's compiles alike)
    params: Mapping[str, tuple[str, ...]] | None  # merged values, or None for generic
    members: tuple[SeriesRequest, ...]


def _fields(spec: SLOSpec) -> tuple[Field, ...]:
    """What is queried of ``spec`` per window: an error ratio as two counts (the bad or good
    requests, and all of them), other SLIs as they are, with the count when there is one."""
    if counting(spec) is not None:
        return ("counted", "events")
    return ("value", "events") if counts_events(spec) else ("value",)


def _text(
    spec: SLOSpec, window: float, field: Field, params: Mapping[str, Sequence[str]] | None
) -> str:
    sli = compile_sli(spec, window, params)
    texts = {"events": sli.events, "counted": sli.counted, "value": sli.ratio or sli.value}
    text = texts[field]
    assert text is not None
    return text


def plan_queries(
    requests: Sequence[SeriesRequest], *, max_length: int = MAX_QUERY_LENGTH
) -> list[Query]:
    """The queries that answer ``requests``, each serving every request it can; one that lists
    its targets' values is at most ``max_length`` bytes long, else generic."""
    groups: dict[tuple[str, Field, float], list[SeriesRequest]] = defaultdict(list)
    generic: dict[tuple[int, float, Field], str] = {}  # targets share SLO objects: compile once
    fields: dict[int, tuple[Field, ...]] = {}
    for request in requests:
        spec = request.slo.spec
        asked = fields.get(id(spec))
        if asked is None:
            asked = fields[id(spec)] = _fields(spec)
        for window in request.windows:
            for field in asked:
                key = (id(spec), window, field)
                if key not in generic:
                    generic[key] = _text(spec, window, field, None)
                groups[(generic[key], field, window)].append(request)

    queries: list[Query] = []
    for (text_of_all, field, window), members in groups.items():
        spec = members[0].slo.spec
        if not batchable(spec):
            by_params: dict[tuple[tuple[str, str], ...], list[SeriesRequest]] = defaultdict(list)
            for member in members:
                by_params[member.params].append(member)
            for pairs, same in by_params.items():
                bound = {name: (value,) for name, value in pairs} if pairs else None
                text = _text(spec, window, field, bound) if bound else text_of_all
                queries.append(Query(text, field, window, spec, bound, tuple(same)))
            continue
        merged: dict[str, set[str]] = defaultdict(set)
        for member in members:
            for name, value in member.params:
                merged[name].add(value)
        batch: dict[str, tuple[str, ...]] | None = None
        text = text_of_all  # generic: one query for all, split here
        # The values' own length (and a '|' each) is less than the bytes they take listed:
        # past the budget, nothing is built.
        if merged and sum(len(v) + 1 for vs in merged.values() for v in vs) <= max_length:
            listed = {n: tuple(sorted(v)) for n, v in merged.items()}
            listed_text = _text(spec, window, field, listed)
            if len(listed_text.encode()) <= max_length:
                batch, text = listed, listed_text
        queries.append(Query(text, field, window, spec, batch, tuple(members)))
    return queries


def plan_what_can_be_planned(
    requests: Sequence[SeriesRequest], *, max_length: int = MAX_QUERY_LENGTH
) -> tuple[list[Query], dict[tuple[str, str], str]]:
    """:func:`plan_queries`, setting aside the requests whose queries cannot be built.

    Returns the plan for the others and, per request key set aside, why — so one broken SLO
    makes its own results UNKNOWN instead of failing the whole batch.
    """
    try:
        return plan_queries(requests, max_length=max_length), {}
    except ValueError:
        pass
    good: list[SeriesRequest] = []
    bad: dict[tuple[str, str], str] = {}
    for request in requests:
        try:
            plan_queries([request])
        except ValueError as exc:
            bad[request.key] = f"cannot build the query: {exc}"
        else:
            good.append(request)
    return plan_queries(good, max_length=max_length), bad


def with_unplanned(
    requests: Sequence[SeriesRequest],
    measured: Measurements,
    unplanned: Mapping[tuple[str, str], str],
) -> Measurements:
    """``measured``, with a failed result for each request :func:`plan_what_can_be_planned` set
    aside (every window failing with why its query could not be built)."""
    if not unplanned:
        return measured
    failed = {
        r.key: SeriesResult(r, errors=dict.fromkeys(r.windows, unplanned[r.key]))
        for r in requests
        if r.key in unplanned
    }
    return Measurements({**measured.results, **failed}, measured.source_error)


def assemble(
    requests: Sequence[SeriesRequest],
    answers: Sequence[tuple[Query, Answer]],
    *,
    source_error: str | None = None,
) -> Measurements:
    """Split the answers back per request and backend."""
    assembly = Assembly(requests)
    for query, answer in answers:
        assembly.add(query, answer)
    return assembly.measurements(source_error)


_VALUE, _EVENTS, _COUNTED = 1, 2, 4  # which numbers of a slot arrived (``_Table.seen``'s bits)
_FIELDS: dict[Field, int] = {"value": _VALUE, "events": _EVENTS, "counted": _COUNTED}
_NONE: Mapping[float, str] = MappingProxyType({})  # no failed window: one shared empty mapping
_UNMEASURED: Mapping[str, Mapping[float, WindowMeasurement]] = MappingProxyType({})  # no series


def _plain_values(
    names: tuple[str, ...], params: tuple[tuple[str, str], ...]
) -> tuple[str, ...] | None:
    """The values of the params ``names`` (``None`` when one is missing): looked up in the
    few pairs, with no dict built per member indexed (at 10,000 targets, 60,000 a cycle)."""
    values = []
    for name in names:
        for key, value in params:
            if key == name:
                values.append(value)
                break
        else:
            return None
    return tuple(values)


class _Table:
    """A batch's numbers in flat columns: a slot per (request, backend, window measured).

    At 10,000 targets a batch measures 180,000 windows; as dicts of
    :class:`~trimtab.slo.health.WindowMeasurement` they took 47 MB, in these columns 3 MB.
    """

    __slots__ = ("events", "seen", "values")

    def __init__(self) -> None:
        self.values = array("d")
        self.events = array("d")
        self.seen = bytearray()  # per slot, the bits of the numbers that arrived

    def grow(self, slots: int) -> int:
        """Room for ``slots`` more; returns the first."""
        first = len(self.seen)
        self.values.frombytes(bytes(8 * slots))
        self.events.frombytes(bytes(8 * slots))
        self.seen.extend(bytes(slots))
        return first

    def read(
        self,
        first: int,
        windows: tuple[float, ...],
        counting: Counting | None,
        failed: Mapping[float, str],
    ) -> dict[float, WindowMeasurement]:
        """The measurements of the slots from ``first``, one per window, by window (a slot
        nothing arrived for is left out). With ``counting``, the value column holds the counted
        requests, and the value is the ratio they make of the events — none when a query of
        the window ``failed`` (an unanswered count is not a count of zero)."""
        seen_at, values, events_at = self.seen, self.values, self.events
        found = {}
        for slot, window in enumerate(windows, first):
            seen = seen_at[slot]
            if not seen:
                continue
            events = events_at[slot] if seen & _EVENTS else None
            if counting is None:
                value = values[slot] if seen & _VALUE else None
            elif events is None:
                continue  # counted requests without the count of all say nothing
            elif window in failed:
                value = None
            else:
                value = counting.ratio(values[slot] if seen & _COUNTED else None, events)
            found[window] = new_tuple(WindowMeasurement, (value, events))
        return found


class _Packed(Mapping[str, Mapping[float, WindowMeasurement]]):
    """One request's measurements, per backend, per window: read from its batch's table when
    asked (a result is judged once or twice a cycle, then let go of)."""

    __slots__ = ("_built", "_counting", "_failed", "_firsts", "_names", "_table", "_windows")

    def __init__(
        self,
        table: _Table,
        windows: tuple[float, ...],
        names: tuple[str, ...],
        firsts: tuple[int, ...],
        counting: Counting | None,
        failed: Mapping[float, str],
    ) -> None:
        self._table, self._windows, self._names, self._firsts = table, windows, names, firsts
        self._counting, self._failed = counting, failed
        self._built: dict[str, Mapping[float, WindowMeasurement]] | None = None

    def __getitem__(self, backend: str) -> Mapping[float, WindowMeasurement]:
        """The backend's measurements, made when first asked for and kept: a cycle reads a
        result's backends to judge them, and the canary's and the stable's again for the
        baseline test."""
        built = self._built
        if built is None:
            built = self._built = {}
        else:
            found = built.get(backend)
            if found is not None:
                return found
        try:
            first = self._firsts[self._names.index(backend)]
        except ValueError:
            raise KeyError(backend) from None
        built[backend] = found = self._table.read(
            first, self._windows, self._counting, self._failed
        )
        return found

    def get(  # type: ignore[override]  # one signature for Mapping.get's overloads
        self, backend: str, default: Mapping[float, WindowMeasurement] | None = None
    ) -> Mapping[float, WindowMeasurement] | None:
        """:meth:`__getitem__`, or ``default``, in one call: Mapping's ``get`` is a Python
        method around it (a cycle asks 60,000 times at 10,000 targets)."""
        return self[backend] if backend in self._names else default

    def __contains__(self, backend: object) -> bool:
        return backend in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr(dict(self))


_Index = Mapping[object, list[tuple[SeriesRequest, Membership | None]]]
"""A query's members by the label values their series carry, with their membership test."""


def _reader(labels: tuple[str, ...]) -> Callable[[Mapping[str, str]], object]:
    """How a series' values of the exact ``labels`` are read, as :meth:`Assembly.split` keys
    its index: one value as it is, several as a tuple (:class:`operator.itemgetter`'s own way,
    in C: at 10,000 targets a cycle reads 180,000 series). Raises KeyError when one is missing.
    """
    if not labels:
        return _no_labels
    return itemgetter(*labels)


def _no_labels(labels: Mapping[str, str]) -> object:
    return ()


class Split:
    """One query's samples on their way into an :class:`Assembly`'s table (see
    :meth:`Assembly.split`). :meth:`fail` takes back what was added: an answer found broken
    after some of its samples were split counts as failed, as a whole."""

    __slots__ = (
        "_bit",
        "_column",
        "_errors",
        "_firsts",
        "_index",
        "_label",
        "_names",
        "_query",
        "_read",
        "_table",
        "_written",
    )

    def __init__(
        self,
        query: Query,
        index: _Index,
        read: Callable[[Mapping[str, str]], object],
        table: _Table,
        firsts: dict[tuple[str, str], dict[str, int]],
        names: dict[str, str],
        errors: dict[tuple[str, str], dict[float, str]],
    ) -> None:
        self._query, self._index = query, index
        self._table, self._firsts, self._names, self._errors = table, firsts, names, errors
        self._bit = _FIELDS[query.field]
        self._column = table.events if self._bit == _EVENTS else table.values
        self._read = read  # a series' key in ``index``; KeyError when it has none
        self._label = query.spec.backend_label  # every member's SLO compiles to this query alike
        self._written = array("q")  # the slots this split set, for fail()

    def add(self, labels: Mapping[str, str], value: float) -> None:
        """One sample: to the requests whose series it is, under its backend."""
        try:
            found = self._index.get(self._read(labels))
        except KeyError:
            return
        if not found:
            return
        query, bit, label = self._query, self._bit, self._label
        table, firsts = self._table, self._firsts
        backend = labels.get(label) if label else ""
        if backend is None:
            return
        backend = self._names.setdefault(backend, backend)
        column, seen, written = self._column, table.seen, self._written
        for member, belongs in found:
            if belongs is not None and belongs.patterns and not belongs.admits(labels):
                continue
            mine = firsts.get(member.key)
            if mine is None:
                mine = firsts[member.key] = {}
            first = mine.get(backend)
            if first is None:
                first = mine[backend] = table.grow(len(member.windows))
            slot = first + member.windows.index(query.window)
            if seen[slot] & bit:
                self._errors[member.key][query.window] = (
                    f"the query returned several series for backend {backend!r}; "
                    f"group it by {label!r} and the params' labels"
                )
            seen[slot] |= bit
            column[slot] = value
            written.append(slot)

    def fail(self, reason: str) -> None:
        """The query failed: its requests' window fails with ``reason``, and what was added
        is taken back."""
        seen, bit = self._table.seen, self._bit
        for slot in self._written:
            seen[slot] &= ~bit
        del self._written[:]
        for member in self._query.members:
            self._errors[member.key][self._query.window] = reason


class Assembly:
    """:func:`assemble` one answer at a time: a source splits each answer as it arrives and
    lets go of it, so a batch never holds every answer at once (at 10,000 targets each holds
    20,000 series)."""

    def __init__(self, requests: Sequence[SeriesRequest]) -> None:
        self._requests = requests
        self._table = _Table()
        # request key → backend → its first slot (then one per window, in request.windows order)
        self._firsts: dict[tuple[str, str], dict[str, int]] = {}
        self._names: dict[str, str] = {}  # one string per backend name, not one per sample
        self._errors: dict[tuple[str, str], dict[float, str]] = defaultdict(dict)
        # (the SLO's placeholder matchers, numbered; params) → membership: the targets of SLOs
        # whose matchers are alike share one (at 10,000 targets, 30,000 were 10 MB a cycle)
        self._memberships: dict[tuple[int, tuple[tuple[str, str], ...]], Membership] = {}
        self._matchers: dict[
            int, tuple[int, tuple[tuple[str, str, str], ...], tuple[str, ...] | None]
        ] = {}
        self._numbers: dict[tuple[tuple[str, str, str], ...], int] = {}
        # The last query's members (by identity), indexed: a plan asks one SLO's windows and
        # counts one after another, of the same targets, and each index is built once.
        self._indexed: tuple[tuple[int, ...], _Index, Callable[[Mapping[str, str]], object]]
        self._indexed = ((), {}, _no_labels)

    def add(self, query: Query, answer: Answer) -> None:
        """Split one query's answer (or failure) to the requests it serves."""
        if isinstance(answer, str):
            for member in query.members:
                self._errors[member.key][query.window] = answer
            return
        split = self.split(query)
        for labels, value in answer:
            split.add(labels, value)

    def split(self, query: Query) -> Split:
        """Where one query's samples go, one at a time: a source can split an answer while it
        decodes it, and never hold it whole (at 10,000 targets, 20,000 series of labels)."""
        index, read = self._index(query.members)
        return Split(query, index, read, self._table, self._firsts, self._names, self._errors)

    def _index(
        self, members: tuple[SeriesRequest, ...]
    ) -> tuple[_Index, Callable[[Mapping[str, str]], object]]:
        """``members`` by the exact label values their series carry, so that splitting a batch
        of N targets costs O(N + samples), not O(N × samples); and how a series' values are
        read. The same members as the last query's share its index (at 10,000 targets, a
        cycle's 9 queries built 9 indexes of 10,000 targets; now 3, one per SLO)."""
        ids = tuple(map(id, members))
        if ids == self._indexed[0]:
            return self._indexed[1], self._indexed[2]
        index: defaultdict[object, list[tuple[SeriesRequest, Membership | None]]]
        index = defaultdict(list)
        memberships = self._memberships
        probe: Membership | None = None
        for member in members:
            number, matchers, names = self._placeholders(member.slo.spec)
            belongs: Membership | None = None
            values = _plain_values(names, member.params) if names is not None else None
            if values is None:
                cached = (number, member.params)
                belongs = memberships.get(cached)
                if belongs is None:
                    belongs = memberships[cached] = membership(matchers, member.param_map)
                values = belongs.values
            if probe is None:
                probe = belongs or membership(matchers, member.param_map)
            key = values[0] if len(values) == 1 else values  # as _reader reads it
            index[key].append((member, belongs))
        read = _reader(tuple(label for label, _ in probe.exact) if probe else ())
        self._indexed = (ids, index, read)
        return index, read

    def _placeholders(
        self, spec: SLOSpec
    ) -> tuple[int, tuple[tuple[str, str, str], ...], tuple[str, ...] | None]:
        """The SLO's placeholder matchers, the number they share with alike SLOs', and their
        :func:`~trimtab.slo.promql.exact_params`: with those, a target's membership is its
        values of the params, and costs no object (at 10,000 targets, 5 MB a cycle)."""
        known = self._matchers.get(id(spec))
        if known is None:
            matchers = placeholder_matchers(spec)
            number = self._numbers.setdefault(matchers, len(self._numbers))
            names = exact_params(matchers)
            known = self._matchers[id(spec)] = (number, matchers, names)
        return known

    def measurements(self, source_error: str | None = None) -> Measurements:
        """Every request's result from the answers added (once: it lets go of them)."""
        results = _Results(self._requests, self._table, self._firsts, self._errors)
        self._table, self._firsts, self._indexed = _Table(), {}, ((), {}, _no_labels)
        return Measurements(results, source_error)


class _Results(Mapping[tuple[str, str], SeriesResult]):
    """A batch's results by request key, each made when asked and not kept: a cycle judges a
    target's results once, then lets go of them (at 10,000 targets, made all at once, they
    took 7 MB beside the batch's numbers).

    What each request's result reads is kept in flat columns: the backends that answered (one
    tuple per distinct list of them) and the first slot of each in the table.
    """

    __slots__ = (
        "_backends",
        "_bounds",
        "_countings",
        "_errors",
        "_order",
        "_requests",
        "_starts",
        "_table",
    )

    def __init__(
        self,
        requests: Sequence[SeriesRequest],
        table: _Table,
        firsts: dict[tuple[str, str], dict[str, int]],
        errors: dict[tuple[str, str], dict[float, str]],
    ) -> None:
        self._requests, self._table, self._errors = requests, table, errors
        self._order: dict[tuple[str, str], int] = {}
        self._backends: list[tuple[str, ...]] = []
        self._starts = array("q")  # request i's backends start at _starts[_bounds[i]:]
        self._bounds = array("q")
        self._countings: dict[int, Counting | None] = {}
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # equal lists of backends: one tuple
        for i, request in enumerate(requests):
            self._order.setdefault(request.key, i)  # should a request come twice: its first
            mine = firsts.pop(request.key, None) or {}  # each let go of as it is copied
            names = tuple(mine)
            self._backends.append(shared.setdefault(names, names))
            self._bounds.append(len(self._starts))
            self._starts.extend(mine.values())

    def __getitem__(self, key: tuple[str, str]) -> SeriesResult:
        i = self._order[key]
        request = self._requests[i]
        failed = self._errors.get(key) or _NONE
        names = self._backends[i]
        if not names:
            return SeriesResult(request, _UNMEASURED, failed)
        spec = request.slo.spec
        if id(spec) not in self._countings:
            self._countings[id(spec)] = counting(spec)
        how, first = self._countings[id(spec)], self._bounds[i]
        starts = tuple(self._starts[first : first + len(names)])
        measured = _Packed(self._table, request.windows, names, starts, how, failed)
        return SeriesResult(request, measured, failed)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)
