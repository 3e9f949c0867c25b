"""The JSON Schema of ``trimtab schema`` accepts the examples and rejects what it must."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from trimtab.slo.models import API_VERSION
from trimtab.slo.schema import json_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _example_documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION:
                found.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return found


EXAMPLE_DOCUMENTS = _example_documents()

SLO_DOC: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "SLO",
    "metadata": {"name": "checkout-errors"},
    "spec": {
        "service": "checkout",
        "objective": 99.9,
        "window": "30d",
        "backendLabel": "version",
        "indicator": {
            "errorRatio": {
                "errors": 'http_requests_total{code=~"5.."}',
                "total": "http_requests_total",
            }
        },
        "health": {
            "degraded": {"burnRate": 6, "windows": ["5m", "30m"]},
            "unavailable": {"burnRate": 14.4, "windows": ["1m", "5m"]},
        },
    },
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _with(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    parent: Any = changed
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return changed


def test_schema_is_draft_2020_12_with_an_id() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("https://")
    assert schema["title"]
    assert {ref["$ref"] for ref in schema["oneOf"]} == {
        "#/$defs/SLO",
        "#/$defs/Rollout",
        "#/$defs/Balance",
        "#/$defs/Controller",
    }


def test_every_object_in_the_schema_rejects_unknown_keys() -> None:
    def objects(node: Any) -> list[dict[str, Any]]:
        found = []
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                found.append(node)
            for value in node.values():
                found.extend(objects(value))
        elif isinstance(node, list):
            for item in node:
                found.extend(objects(item))
        return found

    models = objects(json_schema()["$defs"])
    assert len(models) > 20
    assert [m["title"] for m in models if m.get("additionalProperties") is not False] == []


def test_examples_exist() -> None:
    assert EXAMPLE_DOCUMENTS, f"no {API_VERSION} documents under {EXAMPLES}"


@pytest.mark.parametrize(("where", "doc"), EXAMPLE_DOCUMENTS, ids=[w for w, _ in EXAMPLE_DOCUMENTS])
def test_schema_accepts_example(
    validator: jsonschema.Draft202012Validator, where: str, doc: dict[str, Any]
) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == [], where


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "indicator", "latency"), {"histogram": "h", "threshold": "250ms"}),
        (("spec", "indicator", "latency"), {"histogram": "h", "threshold": 0.25}),
        (("spec", "health", "degraded"), {"above": "250ms"}),
        (("spec", "health", "degraded"), {"below": 3, "windows": ["1h30m"]}),
        (("spec", "window"), "4w"),
    ],
    ids=["threshold-duration", "threshold-number", "above-duration", "below-number", "weeks"],
)
def test_schema_accepts_valid_variants(
    validator: jsonschema.Draft202012Validator, path: tuple[str, ...], value: Any
) -> None:
    doc = _with(SLO_DOC, path, value)
    if path[-1] == "latency":
        doc["spec"]["indicator"].pop("errorRatio")
    assert list(validator.iter_errors(doc)) == []


def test_schema_shows_duration_defaults_as_durations() -> None:
    no_data = json_schema()["$defs"]["NoData"]["properties"]["rollbackAfter"]
    assert no_data["default"] == "10m"


BAD: list[tuple[str, dict[str, Any]]] = [
    ("unknown-top-level-key", {**SLO_DOC, "specs": {}}),
    ("unknown-nested-key", _with(SLO_DOC, ("spec", "health", "degraded", "burnrate"), 6)),
    ("unknown-kind", {**SLO_DOC, "kind": "ServiceLevelObjective"}),
    ("wrong-kind-for-spec", {**SLO_DOC, "kind": "Rollout"}),
    ("wrong-api-version", {**SLO_DOC, "apiVersion": "trimtab.dev/v1"}),
    ("missing-kind", {k: v for k, v in SLO_DOC.items() if k != "kind"}),
    ("bad-duration-words", _with(SLO_DOC, ("spec", "window"), "5 minutes")),
    ("bad-duration-bare-number", _with(SLO_DOC, ("spec", "window"), 5)),
    ("bad-duration-negative", _with(SLO_DOC, ("spec", "health", "degraded", "windows"), ["-5m"])),
    ("bad-duration-empty", _with(SLO_DOC, ("spec", "window"), "")),
    ("bad-threshold", _with(SLO_DOC, ("spec", "health", "degraded"), {"above": "fast"})),
    ("objective-not-a-number", _with(SLO_DOC, ("spec", "objective"), "high")),
    ("objective-100", _with(SLO_DOC, ("spec", "objective"), 100)),
    ("name-uppercase", _with(SLO_DOC, ("metadata", "name"), "Checkout")),
    (
        "two-indicator-kinds",
        _with(SLO_DOC, ("spec", "indicator", "gauge"), {"query": "up"}),
    ),
    ("no-indicator-kind", _with(SLO_DOC, ("spec", "indicator"), {})),
    (
        "secret-in-yaml",
        {
            "apiVersion": API_VERSION,
            "kind": "Controller",
            "spec": {"metrics": {"prometheus": {"url": "http://p:9090", "bearerToken": "x"}}},
        },
    ),
]


@pytest.mark.parametrize(("case", "doc"), BAD, ids=[case for case, _ in BAD])
def test_schema_rejects(
    validator: jsonschema.Draft202012Validator, case: str, doc: dict[str, Any]
) -> None:
    assert validator.is_valid(doc) is False, case


def test_base_document_of_the_rejections_is_valid(
    validator: jsonschema.Draft202012Validator,
) -> None:
    # Each rejection above changes one thing in this document, so it must pass by itself.
    assert list(validator.iter_errors(SLO_DOC)) == []


def test_trimtab_schema_prints_the_same_schema() -> None:
    trimtab = Path(sys.executable).parent / "trimtab"
    result = subprocess.run(
        [str(trimtab), "schema"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json_schema()
