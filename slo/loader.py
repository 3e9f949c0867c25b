"""Loading configuration files into validated models.

:func:`load` reads files and folders (like ``kubectl -f``), validates every document, runs the
cross-document checks of :mod:`trimtab.slo.checks`, and either returns a :class:`Config` or raises
one :class:`~trimtab.slo.errors.ConfigError` listing every problem with ``file:line:col``.
Anything unexpected inside (a value pydantic cannot coerce, odd YAML) becomes a problem too:
the loader returns models or raises ``ConfigError``, never anything else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from . import peers
from .durations import FROM_TEXT
from .errors import ConfigError, Problem
from .models import API_VERSION, SLO, Balance, Controller, Rollout
from .presets import default_backend_label
from .sharing import Pool, share
from .yamlsource import SourceDocument, read_documents

__all__ = ["Config", "load", "load_text", "yaml_files"]

KINDS: dict[str, type[BaseModel]] = {
    "SLO": SLO,
    "Rollout": Rollout,
    "Balance": Balance,
    "Controller": Controller,
}
_SECRET_WORDS = ("password", "token", "secret", "apikey", "api_key", "credential")
# Route and controller paths that resolve against the directory of their YAML file.
_RELATIVE_PATHS = (
    ("spec", "route", "envoy", "rdsPath"),
    ("spec", "route", "nginx", "upstreamPath"),
    ("spec", "route", "nginx", "pidFile"),
    ("spec", "route", "haproxy", "socket"),
    ("spec", "route", "file", "path"),
    ("spec", "stateDir"),
)


@dataclass
class Config:
    """Every validated document, by kind and name, and where each came from."""

    slos: dict[str, SLO] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    balances: dict[str, Balance] = field(default_factory=dict)
    controller: Controller | None = None
    origins: dict[tuple[str, str], SourceDocument] = field(default_factory=dict)
    invalid: set[tuple[str, str]] = field(default_factory=set)
    """(kind, name) of documents that failed validation: references to them are not reported
    again as missing."""

    def origin(self, kind: str, name: str) -> SourceDocument:
        """The document a model was read from."""
        return self.origins[(kind, name)]

    def forget_sources(self) -> None:
        """Let go of where each document came from (the text kept to place a later problem
        at its ``file:line:col``) once nothing more is checked against it, as in a controller
        that has wired its targets: 10,000 documents keep about 7 MB of it."""
        self.origins.clear()


def yaml_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The YAML files named by ``paths``: files as given, folders searched recursively."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in (".yaml", ".yml")
                    and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            found.append(path)
    return found


def load(paths: Iterable[str | os.PathLike[str]]) -> Config:
    """Load and check every document in ``paths``; raises :class:`ConfigError`."""
    problems: list[Problem] = []
    files = yaml_files(paths)
    if not files:
        raise ConfigError(
            [Problem(str(p), 1, 1, "", "no YAML files found") for p in paths]
            or [Problem("-", 1, 1, "", "no files given")]
        )

    def documents() -> Iterator[SourceDocument]:
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(path), 1, 1, "", f"cannot read file: {exc}"))
                continue
            try:
                yield from read_documents(text, str(path))
            except ConfigError as exc:
                problems.extend(exc.problems)

    return _build(documents(), problems)


def load_text(text: str, file: str = "<string>") -> Config:
    """Load documents from a string (for tools and tests); raises :class:`ConfigError`."""
    return _build(read_documents(text, file), [])


def _build(documents: Iterable[SourceDocument], problems: list[Problem]) -> Config:
    """Validate ``documents`` one at a time, as they are read: each lets go of its data once
    its model is made (it reads it again if asked), so 10,000 documents are never all held."""
    from .checks import check  # checks needs Config; imported here to keep the modules acyclic

    config = Config()
    blocks = Pool()
    for doc in documents:
        for kind, model in _models(doc, problems, config.invalid):
            model = share(model, blocks)  # equal blocks of many documents, kept once
            name: str = model.metadata.name  # type: ignore[attr-defined]
            key = ("Controller", "") if kind == "Controller" else (kind, name)
            if key in config.origins:
                first = config.origins[key].locate(("metadata", "name"))
                what = (
                    "a second Controller"
                    if kind == "Controller"
                    else f"duplicate {kind} name {name!r}"
                )
                problems.append(
                    doc.problem(
                        ("metadata", "name"),
                        f"{what} (first defined at {first.file}:{first.line}:{first.column})",
                    )
                )
                continue
            config.origins[key] = doc
            if isinstance(model, Controller):
                config.controller = model
            else:
                _table(config, kind)[name] = model
        doc.release()
    problems.extend(check(config))
    if problems:
        raise ConfigError(problems)
    return config


def _table(config: Config, kind: str) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = {
        "SLO": config.slos,
        "Rollout": config.rollouts,
        "Balance": config.balances,
    }
    return tables.get(kind, {})


def _models(
    doc: SourceDocument, problems: list[Problem], invalid: set[tuple[str, str]]
) -> Iterator[tuple[str, BaseModel]]:
    data = doc.data
    if not isinstance(data, dict):
        problems.append(
            doc.problem((), "expected a mapping with apiVersion, kind, metadata and spec")
        )
        return
    if peers.is_peer_document(data):
        try:
            for slo in peers.read_peer(doc):
                yield "SLO", slo
        except ConfigError as exc:
            problems.extend(exc.problems)
        return
    api_version = data.get("apiVersion")
    if api_version != API_VERSION:
        what = (
            "missing apiVersion"
            if api_version is None
            else f"unsupported apiVersion {api_version!r}"
        )
        problems.append(
            doc.problem(
                ("apiVersion",),
                f"{what}: expected {API_VERSION}, openslo/v1, or Sloth's version: prometheus/v1",
                key=api_version is None,
            )
        )
        return
    kind = data.get("kind")
    model_type = KINDS.get(kind) if isinstance(kind, str) else None
    if model_type is None:
        what = "missing kind" if kind is None else f"unknown kind {kind!r}"
        problems.append(doc.problem(("kind",), f"{what}: expected one of {', '.join(KINDS)}"))
        return
    data = _resolve_paths(data, doc.file)
    try:
        model = model_type.model_validate(data, context={FROM_TEXT: True})
    except ValidationError as exc:
        problems.extend(validation_problems(doc, exc))
        metadata = data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(kind, str) and isinstance(name, str):
            invalid.add((kind, name))
        return
    except (ValueError, TypeError, OverflowError) as exc:  # pragma: no cover - defensive
        problems.append(doc.problem((), f"invalid document: {exc}"))
        return
    if isinstance(model, SLO) and model.spec.backend_label is None:
        label = default_backend_label(model.spec.indicator)
        if label:
            model = model.model_copy(
                update={"spec": model.spec.model_copy(update={"backend_label": label})}
            )
    yield kind, model  # type: ignore[misc]


def _resolve_paths(data: dict[str, Any], file: str) -> dict[str, Any]:
    """``data`` with its relative paths resolved against the directory of ``file``: a copy
    where one changes (the document keeps what was written)."""
    base = Path(file).parent
    for path in _RELATIVE_PATHS:
        parents: list[Any] = [data]
        for key in path[:-1]:
            parent = parents[-1]
            parents.append(parent.get(key) if isinstance(parent, dict) else None)
        parent = parents[-1]
        if not isinstance(parent, dict):
            continue
        value = parent.get(path[-1])
        if isinstance(value, str) and value and not value.startswith(("/", "tcp://")):
            copy = {**parent, path[-1]: str(base / value)}
            for key, outer in zip(reversed(path[:-1]), reversed(parents[:-1]), strict=True):
                copy = {**outer, key: copy}
            data = copy
    return data


def validation_problems(doc: SourceDocument, exc: ValidationError) -> list[Problem]:
    """Pydantic's errors as positioned problems, in words a YAML author reads."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        is_key = bool(loc) and loc[-1] == "[key]"
        path = tuple(p for p in loc if p != "[key]")
        kind = error["type"]
        if kind == "extra_forbidden":
            key = str(path[-1]) if path else "?"
            message = f"unknown key {key!r}"
            if any(word in key.lower() for word in _SECRET_WORDS):
                message += ": secrets are never read from YAML; use a *File or *Env field instead"
            problems.append(doc.problem(path, message, key=True))
            continue
        if kind == "missing":
            message = "required field is missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if (
                "input" in error
                and kind not in ("value_error",)
                and not isinstance(error["input"], dict | list)
            ):
                message += f" (got {error['input']!r})"
        # A rule about a whole block (exactly one indicator kind, one adapter...) is shown at
        # the key naming the block: a block's own position is that of its first child key.
        whole_block = isinstance(error.get("input"), dict)
        problems.append(doc.problem(path, message, key=is_key or kind == "missing" or whole_block))
    return problems
