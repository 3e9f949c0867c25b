"""Sloth ``version: "prometheus/v1"`` specs, read as they are into trimtab SLOs.

The schema is Sloth's own (``pkg/prometheus/api/v1``), strictly: ``version``, ``service``,
``labels``, ``slos[]`` of ``name``, ``objective``, ``description``, ``labels``, ``infoLabels``,
``sli`` (``events``, ``raw`` or ``plugin``), ``alerting`` and ``interval``. One spec gives one
SLO per entry of ``slos``:

- named ``<service>-<name>`` (Sloth's own ``sloth_id``, so two services may both have an SLO
  called ``requests-availability``), made a valid trimtab name by :func:`~.peerbase.dns_name`;
- ``objective`` (percent), ``description`` and ``service`` carry over; ``labels`` of the spec,
  then of the SLO (the SLO's winning), become ``spec.labels``; ``infoLabels`` become
  ``metadata.labels``;
- ``sli.events`` → indicator ``events`` (``errorQuery``/``totalQuery``), ``sli.raw`` → ``raw``,
  Sloth's ``{{.window}}`` written as trimtab's ``{{window}}``. A query without it is an error,
  as in Sloth; so is any other template;
- ``alerting`` → ``spec.alerting``: ``page_alert`` → ``page``, ``ticket_alert`` → ``ticket``;
- the window is Sloth's default, 30 days: Sloth takes the period from its command line, not from
  the spec. ``backendLabel`` and ``minEvents`` are left to trimtab's defaults.

Not supported, as errors: ``sli.plugin`` (trimtab needs the PromQL itself) and ``interval``
(trimtab evaluates on its own schedule).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from .errors import Problem
from .peerbase import WINDOW, Draft, Invalid, Path, Peer, Text, dns_name, exactly_one, parse
from .yamlsource import SourceDocument

__all__ = ["VERSION", "drafts"]

VERSION = "prometheus/v1"

_GO_WINDOW = re.compile(r"\{\{\s*\.window\s*\}\}")
_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


class _Events(Peer):
    error_query: str = Field(min_length=1)
    total_query: str = Field(min_length=1)


class _Raw(Peer):
    error_ratio_query: str = Field(min_length=1)


class _Plugin(Peer):
    id: str
    options: dict[str, Text] = Field(default_factory=dict)


class _SLI(Peer):
    events: _Events | None = None
    raw: _Raw | None = None
    plugin: _Plugin | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _SLI:
        exactly_one(self, ("events", "raw", "plugin"))
        return self


class _Alert(Peer):
    disable: bool = False
    labels: dict[str, Text] = Field(default_factory=dict)
    annotations: dict[str, Text] = Field(default_factory=dict)


class _Alerting(Peer):
    name: str | None = None
    labels: dict[str, Text] = Field(default_factory=dict)
    annotations: dict[str, Text] = Field(default_factory=dict)
    page_alert: _Alert = Field(default_factory=_Alert)
    ticket_alert: _Alert = Field(default_factory=_Alert)


class _SLO(Peer):
    name: str = Field(min_length=1)
    description: Text | None = None
    objective: float = Field(gt=0, lt=100)
    labels: dict[str, Text] = Field(default_factory=dict)
    info_labels: dict[str, Text] = Field(default_factory=dict, alias="infoLabels")
    sli: _SLI
    alerting: _Alerting = Field(default_factory=_Alerting)
    interval: dict[str, Any] | None = None


class _Spec(Peer):
    version: Literal["prometheus/v1"]
    service: str = Field(min_length=1)
    labels: dict[str, Text] = Field(default_factory=dict)
    slos: list[_SLO] = Field(min_length=1)


def drafts(doc: SourceDocument, base: Path, data: Any, problems: list[Problem]) -> list[Draft]:
    """The SLOs of the Sloth spec ``data`` (at ``base`` in ``doc``); problems are appended."""
    spec = parse(_Spec, doc, base, data, problems)
    if spec is None:
        return []
    result = []
    for i, slo in enumerate(spec.slos):
        try:
            result.append(_draft(doc, base, (*base, "slos", i), spec, slo))
        except Invalid as exc:
            problems.append(exc.problem)
    return result


def _draft(doc: SourceDocument, base: Path, at: Path, spec: _Spec, slo: _SLO) -> Draft:
    if slo.interval is not None:
        raise Invalid(
            doc.problem(
                (*at, "interval"),
                "rule group intervals are not supported: trimtab evaluates on its own schedule",
                key=True,
            )
        )
    name = dns_name(f"{spec.service}-{slo.name}")
    if not name:
        raise Invalid(doc.problem((*at, "name"), "the name needs letters or digits"))
    sli = (*at, "sli")
    indicator: dict[str, Any]
    if slo.sli.plugin is not None:
        raise Invalid(
            doc.problem(
                (*sli, "plugin"),
                "Sloth SLI plugins are not supported: write the plugin's PromQL as sli.events "
                "or sli.raw",
                key=True,
            )
        )
    if slo.sli.events is not None:
        events, at_events = slo.sli.events, (*sli, "events")
        indicator = {
            "events": {
                "errorQuery": _query(events.error_query, doc, (*at_events, "error_query")),
                "totalQuery": _query(events.total_query, doc, (*at_events, "total_query")),
            }
        }
    else:
        assert slo.sli.raw is not None
        query = _query(slo.sli.raw.error_ratio_query, doc, (*sli, "raw", "error_ratio_query"))
        indicator = {"raw": {"errorRatioQuery": query}}
    alerting = slo.alerting
    data: dict[str, Any] = {
        "metadata": {"name": name, "labels": dict(slo.info_labels)},
        "spec": {
            "service": spec.service,
            "description": slo.description,
            "objective": slo.objective,
            "indicator": indicator,
            "labels": {**spec.labels, **slo.labels},
            "alerting": {
                "name": alerting.name,
                "labels": dict(alerting.labels),
                "annotations": dict(alerting.annotations),
                "page": alerting.page_alert.model_dump(),
                "ticket": alerting.ticket_alert.model_dump(),
            },
        },
    }
    where: dict[Path, tuple[SourceDocument, Path]] = {
        (): (doc, at),
        ("metadata", "name"): (doc, (*at, "name")),
        ("metadata", "labels"): (doc, (*at, "infoLabels")),
        ("spec", "service"): (doc, (*base, "service")),
        ("spec", "description"): (doc, (*at, "description")),
        ("spec", "objective"): (doc, (*at, "objective")),
        ("spec", "indicator"): (doc, sli),
        ("spec", "alerting"): (doc, (*at, "alerting")),
        ("spec", "alerting", "name"): (doc, (*at, "alerting", "name")),
        ("spec", "alerting", "page"): (doc, (*at, "alerting", "page_alert")),
        ("spec", "alerting", "ticket"): (doc, (*at, "alerting", "ticket_alert")),
    }
    for key in spec.labels:
        where[("spec", "labels", key)] = (doc, (*base, "labels", key))
    for key in slo.labels:
        where[("spec", "labels", key)] = (doc, (*at, "labels", key))
    return Draft(data, where)


def _query(query: str, doc: SourceDocument, path: Path) -> str:
    """A Sloth query with ``{{.window}}`` written as ``{{window}}``."""
    text = _GO_WINDOW.sub(WINDOW, query)
    if WINDOW not in text:
        raise Invalid(doc.problem(path, "the query needs {{.window}} where the range goes"))
    other = _TEMPLATE.findall(text.replace(WINDOW, ""))
    if other:
        raise Invalid(doc.problem(path, f"unsupported template {other[0]}: only {{{{.window}}}}"))
    return text
