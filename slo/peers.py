"""Other tools' SLO files, read as they are, and trimtab YAML written from any SLO.

trimtab reads Sloth ``version: "prometheus/v1"`` specs (:mod:`.sloth`) and OpenSLO
``openslo/v1`` / ``openslo/v1alpha`` documents (:mod:`.openslo`) into its own
:class:`~trimtab.slo.models.SLO` models; those modules' docstrings say how each field maps and
where the mapping approximates. Peer formats are read as strictly as trimtab's own: an unknown
key or a bad value is a :class:`~trimtab.slo.errors.ConfigError` naming ``file:line:col`` and the
field, and every problem in a document is reported at once.

- :func:`is_peer_document` tells the loader which documents are peers';
- :func:`read_peer` reads one document (an OpenSLO ``indicatorRef`` resolves within it);
- :func:`read_peers` reads several, resolving ``indicatorRef`` across them;
- :func:`render_trimtab_yaml` prints SLOs as trimtab YAML (``trimtab convert``).

A document may also be a YAML list of OpenSLO objects, as OpenSLO's own tools accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import yaml

from . import openslo, sloth
from .durations import format_duration
from .errors import ConfigError, Problem
from .models import SLO, SLOSpec
from .peerbase import Draft, Path
from .yamlsource import SourceDocument

__all__ = ["is_peer_document", "read_peer", "read_peers", "render_trimtab_yaml"]


def is_peer_document(data: object) -> bool:
    """True for a Sloth ``prometheus/v1`` spec and for ``openslo/*`` objects (or lists of them)."""
    if isinstance(data, list):
        return bool(data) and all(_is_openslo(item) for item in data)
    return _is_sloth(data) or _is_openslo(data)


def read_peer(doc: SourceDocument) -> list[SLO]:
    """The SLOs in one peer document; raises :class:`ConfigError` listing every problem.

    An OpenSLO ``indicatorRef`` resolves against SLI objects in the same document; use
    :func:`read_peers` to resolve it across documents and files.
    """
    return _read([doc], _slis([doc]), per_document=True)


def read_peers(docs: Iterable[SourceDocument]) -> list[SLO]:
    """The SLOs in several peer documents, with OpenSLO ``indicatorRef`` resolved across them."""
    docs = list(docs)
    return _read(docs, _slis(docs), per_document=False)


def render_trimtab_yaml(slos: Sequence[SLO]) -> str:
    """``slos`` as trimtab YAML documents separated by ``---``; they load back to equal models.

    Keys are camelCase in the models' order (apiVersion, kind, metadata, spec); defaults are left
    out, except the window; multi-line strings (queries) are literal blocks.
    """
    order = [info.alias or name for name, info in SLOSpec.model_fields.items()]
    documents = []
    for slo in slos:
        data = _prune(slo.model_dump(by_alias=True, exclude_defaults=True, mode="json"))
        spec = dict(data["spec"])
        spec.setdefault("window", format_duration(slo.spec.window))
        data["spec"] = {key: spec[key] for key in order if key in spec}
        text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 16)
        documents.append(text)
    return "---\n".join(documents)


# ------------------------------------------------------------------------------------ reading


def _is_sloth(data: object) -> bool:
    return isinstance(data, dict) and data.get("version") == sloth.VERSION


def _is_openslo(data: object) -> bool:
    version = data.get("apiVersion") if isinstance(data, dict) else None
    return isinstance(version, str) and version.startswith("openslo/")


def _objects(doc: SourceDocument) -> Iterator[tuple[Path, Any]]:
    """Each object in ``doc`` with its path: the document itself, or each item of a list."""
    if isinstance(doc.data, list):
        for i, item in enumerate(doc.data):
            yield (i,), item
    else:
        yield (), doc.data


def _slis(docs: Iterable[SourceDocument]) -> dict[str, dict[str, openslo.SLISource]]:
    """Valid ``openslo/v1`` SLI objects by document file and index, then name."""
    found: dict[str, dict[str, openslo.SLISource]] = {}
    for doc in docs:
        table = found.setdefault(f"{doc.file}#{doc.index}", {})
        for base, data in _objects(doc):
            named = openslo.sli_source(doc, base, data)
            if named is not None:
                table.setdefault(*named)
    return found


def _read(
    docs: Sequence[SourceDocument],
    slis: dict[str, dict[str, openslo.SLISource]],
    *,
    per_document: bool,
) -> list[SLO]:
    problems: list[Problem] = []
    everywhere: dict[str, openslo.SLISource] = {}
    for table in slis.values():
        for name, source in table.items():
            everywhere.setdefault(name, source)
    result: list[SLO] = []
    for doc in docs:
        visible = slis.get(f"{doc.file}#{doc.index}", {}) if per_document else everywhere
        drafts: list[Draft] = []
        for base, data in _objects(doc):
            if _is_sloth(data):
                drafts.extend(sloth.drafts(doc, base, data, problems))
            elif _is_openslo(data):
                drafts.extend(openslo.drafts(doc, base, data, visible, problems))
            else:
                message = "expected a Sloth prometheus/v1 spec or an OpenSLO object"
                problems.append(doc.problem(base, message))
        result.extend(_build(drafts, problems))
    if problems:
        raise ConfigError(problems)
    return result


def _build(drafts: Sequence[Draft], problems: list[Problem]) -> Iterator[SLO]:
    """Validated SLOs of one document; a name given twice in it is a problem."""
    first: dict[str, tuple[SourceDocument, Path]] = {}
    for draft in drafts:
        doc, path = draft.where[("metadata", "name")]
        if draft.name in first:
            where = first[draft.name][0].locate(first[draft.name][1])
            problems.append(
                doc.problem(
                    path,
                    f"gives the SLO name {draft.name!r} a second time "
                    f"(first at {where.file}:{where.line}:{where.column})",
                )
            )
            continue
        first[draft.name] = (doc, path)
        try:
            yield draft.build()
        except ConfigError as exc:
            problems.extend(exc.problems)


# ------------------------------------------------------------------------------------ writing


def _prune(value: Any) -> Any:
    """Drop the empty mappings ``exclude_defaults`` leaves (``alerting: {page: {}}``)."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v != {}}
    return value


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, multi-line strings as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
