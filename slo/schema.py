"""The JSON Schema (draft 2020-12) of every trimtab kind, for editors and CI linters.

Generated from the pydantic models, so it cannot drift from what the loader accepts on shapes:
unknown keys are rejected (``additionalProperties: false``), durations are Prometheus duration
strings, and thresholds take a number or a duration. Rules that relate several fields or
documents (steps rising to 100, thresholds in order, references between documents) are beyond a
schema and stay with ``trimtab validate``. OpenSLO and Sloth documents are read by the loader
but are not described here: they have schemas of their own.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BeforeValidator, WithJsonSchema
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import CoreSchema, core_schema

from .durations import Duration, format_duration
from .modelbase import ThresholdValue
from .models import API_VERSION, SLO, Balance, Controller, Rollout

__all__ = ["SCHEMA_ID", "json_schema"]

SCHEMA_ID = "https://trimtab.dev/schemas/v1alpha1/trimtab.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

KINDS = (SLO, Rollout, Balance, Controller)

# Blocks whose model requires exactly one of its keys (an indicator kind, an adapter, ...). The
# models check this in a validator, which pydantic cannot express in a schema; saying it here lets
# an editor flag ``indicator: {errorRatio: …, latency: …}`` while typing.
_EXACTLY_ONE_KEY = ("Indicator", "Route", "LeaderElection")
_AT_MOST_ONE_KEY = ("Metrics",)


def _metadata_of(annotated: Any, kind: type[Any]) -> Any:
    """The first piece of ``Annotated`` metadata of type ``kind``."""
    for item in get_args(annotated)[1:]:
        if isinstance(item, kind):
            return item
    raise LookupError(f"{annotated!r} carries no {kind.__name__}")


_DURATION: dict[str, Any] = dict(_metadata_of(Duration, WithJsonSchema).json_schema or {})
_DURATION["minLength"] = 1  # the pattern alone (every unit optional) would accept ""
_THRESHOLD_PARSER = _metadata_of(ThresholdValue, BeforeValidator).func


class _Generator(GenerateJsonSchema):
    """pydantic's generator, taught what trimtab's annotated types accept in YAML."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        if schema["function"].get("function") is _THRESHOLD_PARSER:
            # A threshold is a number, or a duration meaning seconds ("250ms").
            return {"anyOf": [inner, dict(_DURATION)]}
        return inner

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        default = json_schema.get("default")
        if (
            json_schema.get("pattern") == _DURATION["pattern"]
            and isinstance(default, int | float)
            and not isinstance(default, bool)
        ):
            # Defaults are held in seconds; show them the way a user writes them.
            json_schema["default"] = format_duration(default)
        return json_schema

    def field_title_should_be_set(self, schema: CoreSchema | Any) -> bool:
        # Titles made from snake_case attribute names ("Burnrate") would mislead: keys are
        # camelCase. Models keep their titles.
        return False


def _tighten(defs: dict[str, Any]) -> None:
    for name in _EXACTLY_ONE_KEY:
        defs[name]["minProperties"] = 1
        defs[name]["maxProperties"] = 1
    for name in _AT_MOST_ONE_KEY:
        defs[name]["maxProperties"] = 1
    _normalize(defs)


# pydantic writes a numeric bound it could not place on a type (``Field(gt=0)`` on
# ``ThresholdValue | None``) under its Python name; JSON Schema has its own.
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def _normalize(node: Any) -> None:
    """Give every duration the same schema (``minLength`` included); place stray bounds."""
    if isinstance(node, dict):
        if node.get("pattern") == _DURATION["pattern"] and node.get("type") == "string":
            node.update({k: v for k, v in _DURATION.items() if k not in node})
        for python_name, schema_name in _BOUNDS.items():
            if python_name in node and "type" not in node:
                bound = node.pop(python_name)
                for branch in _numeric_branches(node):
                    branch[schema_name] = bound
        for value in node.values():
            _normalize(value)
    elif isinstance(node, list):
        for item in node:
            _normalize(item)


def _numeric_branches(node: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for branch in node.get("anyOf", ()):
        if branch.get("type") in ("number", "integer"):
            found.append(branch)
        else:
            found.extend(_numeric_branches(branch))
    return found


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one trimtab document: any of SLO, Rollout, Balance or Controller."""
    refs, top = models_json_schema(
        [(model, "validation") for model in KINDS],
        by_alias=True,
        ref_template="#/$defs/{model}",
        schema_generator=_Generator,
    )
    defs: dict[str, Any] = top["$defs"]
    _tighten(defs)
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": f"trimtab configuration ({API_VERSION})",
        "description": (
            "One trimtab document. A file holds one or more, separated by '---'. "
            "Cross-field rules are checked by `trimtab validate`."
        ),
        "type": "object",
        "required": ["apiVersion", "kind"],
        "oneOf": [refs[(model, "validation")] for model in KINDS],
        "$defs": defs,
    }
