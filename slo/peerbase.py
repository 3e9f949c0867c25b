"""What the peer-format readers (:mod:`.sloth`, :mod:`.openslo`) share.

- :class:`Peer` — the base of every peer-format model: unknown keys rejected, ``null`` read as
  absent (as Go's YAML does), scalars read into strings as Go does (``tier: 2`` is ``"2"``);
- :func:`parse` — validation with pydantic's errors turned into positioned
  :class:`~trimtab.slo.errors.Problem` s ("unknown key 'x'; expected one of: …");
- :class:`Draft` — a trimtab SLO as data plus where each part was written in the peer file, so a
  value trimtab rejects (a label name, say) is reported at the peer file's line;
- :func:`dns_name` — a peer name made a valid trimtab name.
"""

from __future__ import annotations

import hashlib
import re
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .errors import ConfigError, Problem
from .models import API_VERSION, SLO
from .yamlsource import SourceDocument

__all__ = [
    "WINDOW",
    "Camel",
    "Draft",
    "Invalid",
    "Path",
    "Peer",
    "Text",
    "dns_name",
    "exactly_one",
    "number",
    "parse",
    "percent",
]

Path = tuple[str | int, ...]
WINDOW = "{{window}}"
"""trimtab's placeholder for the range of a full query."""


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, int | float | date):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_text)]
"""A string; a YAML number, boolean or date is read as its text, as Go reads it."""


class Peer(BaseModel):
    """A peer format's mapping: unknown keys rejected; ``null`` is absent, as in Go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class Camel(Peer):
    """A peer mapping with camelCase keys (OpenSLO)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False)


def exactly_one(model: BaseModel, names: Sequence[str]) -> None:
    """Raise ``ValueError`` unless exactly one of the fields ``names`` is set."""
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        fields = type(model).model_fields
        raise ValueError(f"give exactly one of: {', '.join(fields[n].alias or n for n in names)}")


def dns_name(text: str) -> str:
    """``text`` as a trimtab name: lowercase ``[a-z0-9-]``, at most 63 characters.

    A longer name is cut and ends in a hash of the whole text, so it stays unique and stable.
    """
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(name) > 63:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def number(value: float) -> str:
    """A number as PromQL text, without a needless ``.0`` or exponent."""
    return format(Decimal(repr(float(value))).normalize(), "f")


def percent(fraction: float) -> float:
    """``0.999`` → ``99.9`` without binary noise (``99.89999999999999``)."""
    return float(Decimal(repr(float(fraction))) * 100)


class Invalid(Exception):
    """One problem that stops converting one peer SLO (the others are still converted)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class Draft:
    """A trimtab SLO as data, and where its parts were written (trimtab path → peer position).

    ``where`` must map ``()`` (the fallback) and ``("metadata", "name")``.
    """

    data: dict[str, Any]
    where: dict[Path, tuple[SourceDocument, Path]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.data["metadata"]["name"])

    def build(self) -> SLO:
        """The validated SLO; raises :class:`ConfigError` positioned in the peer file."""
        self.data.setdefault("apiVersion", API_VERSION)
        self.data.setdefault("kind", "SLO")
        try:
            return SLO.model_validate(self.data)
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_url=False):
                loc = tuple(p for p in error["loc"] if p != "[key]")
                prefix = max((p for p in self.where if loc[: len(p)] == p), key=len)
                doc, path = self.where[prefix]
                message = str(error["msg"]).removeprefix("Value error, ")
                is_key = bool(error["loc"]) and error["loc"][-1] == "[key]"
                problems.append(doc.problem(path, message, key=is_key))
            raise ConfigError(problems) from None


M = TypeVar("M", bound=BaseModel)


def parse(
    model: type[M], doc: SourceDocument, base: Path, data: Any, problems: list[Problem]
) -> M | None:
    """``data`` (found at ``base`` in ``doc``) as ``model``, or ``None`` with ``problems`` added."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(model, doc, base, exc))
        return None


def _problems(
    model: type[BaseModel], doc: SourceDocument, base: Path, exc: ValidationError
) -> Iterator[Problem]:
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        is_key = bool(loc) and loc[-1] == "[key]"
        path = (*base, *(p for p in loc if p != "[key]"))
        kind = error["type"]
        if kind == "extra_forbidden":
            message = f"unknown key {str(loc[-1])!r}"
            expected = _keys_at(model, loc[:-1])
            if expected:
                message += f"; expected one of: {', '.join(expected)}"
            yield doc.problem(path, message, key=True)
            continue
        if kind == "missing":
            yield doc.problem(path, "required field is missing", key=True)
            continue
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            message = "expected a mapping"
        elif kind == "list_type":
            message = "expected a list"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        if kind != "value_error" and not isinstance(value, dict | list):
            message += f" (got {value!r})"
        yield doc.problem(path, message, key=is_key)


def _keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys ``model`` accepts at ``loc`` (for "unknown key" messages)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {(f.alias or n): f for n, f in current.model_fields.items()}
            if part not in fields:
                return []
            current = fields[str(part)].annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, …]`` → ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
