"""The YAML reader: libyaml and PyYAML's own reader give the same documents, positions and
problems, and positions are found only when asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import missing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trimtab.slo import ConfigError, load, load_text, yamlsource
from trimtab.slo.yamlsource import read_documents

ROOT = Path(__file__).resolve().parents[2]

# fmt: off
TOKENS = [
    "apiVersion: ", "trimtab.dev/v1alpha1", "kind: ", "SLO", "spec:", "metadata:", "name: ",
    "\n", "\n  ", "\n    ", "  ", "- ", "---\n", "...\n", "{", "}", "[", "]", ": ", ":", ", ",
    "'", '"', "\\", "&a ", "*a", "!!binary ", "!!timestamp ", "!!set ", "!foo ", "<<: ", "? ",
    "|\n", ">-\n", "# c", "%YAML 1.1\n", "%YAML 1.2\n", "%TAG ! tag:x,2000:\n", "1e309", "0x1F",
    ".nan", "~", "yes", "\t", "\x00", "\ufeff", "\r", "\x85", "\u2028", "5m", "é", "\U0001f600",
    "a: 1\nb: [1, {c: d}]\n", "x: |\n  line\n  two\n", "- [a, b]\n- {k: v}\n", "k: 'it''s'\n",
    "!!python/object ", "!!omap ", "0o17", "-.inf", "null", "2001-12-14t21:59:43.10-05:00",
    "{{service}}", "99.9", "*b ", "&b [1]", "--- !!map\n", "? [a]\n: b\n", "\"\\u00e9\"",
]
# fmt: on
YAMLISH = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


def read(text: str, file: str = "t.yaml") -> list[Any]:
    """Every document with its positions, or the problems: what a reader's caller can see."""
    out: list[Any] = []
    try:
        for doc in read_documents(text, file):
            out.append((doc.index, doc.line, doc.column, doc.data, doc.values, doc.keys))
    except ConfigError as error:
        out.append([str(p) for p in error.problems])
    return out


def pure(text: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    with monkeypatch.context() as patched:
        patched.setattr(yamlsource, "_FAST_LOADER", None)
        return read(text)


def yaml_files() -> Iterator[Path]:
    for folder in ("examples", "tests", "deploy", "bench"):
        yield from sorted((ROOT / folder).rglob("*.yaml"))


def test_libyaml_is_used_when_there() -> None:
    if not yaml.__with_libyaml__:
        missing("libyaml (PyYAML's C extension)")  # fails in CI, which installs it
    assert yamlsource._FAST_LOADER is yaml.CSafeLoader


@pytest.mark.parametrize("path", list(yaml_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_project_files_read_the_same_with_and_without_libyaml(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = path.read_text(encoding="utf-8")
    assert read(text) == pure(text, monkeypatch)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=YAMLISH)
def test_any_text_reads_the_same_with_and_without_libyaml(text: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert read(text) == pure(text, monkeypatch)


def test_a_valid_configuration_keeps_no_positions(tmp_path: Path) -> None:
    (tmp_path / "slo.yaml").write_text(
        "apiVersion: trimtab.dev/v1alpha1\nkind: SLO\nmetadata: {name: errors}\nspec:\n"
        "  service: shop\n  objective: 99.9\n  backendLabel: version\n"
        "  indicator: {errorRatio: {errors: 'e{code=\"500\"}', total: e}}\n"
    )
    config = load([tmp_path])
    doc = config.origin("SLO", "errors")
    assert doc._values is None  # not read: nothing asked for them
    assert doc._keys is None
    assert doc.locate(("spec", "objective")).line == 6  # found when asked
    assert doc.keys[("spec", "service")] == (5, 3)


def test_a_problem_after_many_documents_points_at_its_line() -> None:
    slo = (
        "apiVersion: trimtab.dev/v1alpha1\nkind: SLO\nmetadata: {{name: s{i}}}\nspec:\n"
        "  service: shop\n  objective: {objective}\n  backendLabel: version\n"
        "  indicator: {{errorRatio: {{errors: e, total: t}}}}\n"
    )
    text = "---\n".join(slo.format(i=i, objective=99.9 if i != 7 else 200) for i in range(10))
    with pytest.raises(ConfigError) as caught:
        load_text(text, "many.yaml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (7 * 9 + 6, 14)
    assert "objective" in str(problem)


def test_a_loaded_document_reads_its_data_again_as_written(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(
        "apiVersion: trimtab.dev/v1alpha1\nkind: SLO\nmetadata: {name: errors}\nspec:\n"
        "  service: shop\n  objective: 99.9\n  backendLabel: version\n"
        "  indicator: {errorRatio: {errors: e, total: t}}\n---\n"
        "apiVersion: trimtab.dev/v1alpha1\nkind: Rollout\nmetadata: {name: shop}\nspec:\n"
        "  slos: [{name: errors}]\n  stable: v1\n  canary: v2\n"
        "  route: {file: {path: weights.json}}\n  steps: [{weight: 100}]\n"
    )
    config = load([tmp_path])
    rollout = config.rollouts["shop"]
    assert rollout.spec.route.file is not None
    assert rollout.spec.route.file.path == str(tmp_path / "weights.json")  # resolved
    doc = config.origin("Rollout", "shop")
    assert doc._data is None  # let go of once loaded
    assert doc.data["spec"]["route"] == {"file": {"path": "weights.json"}}  # as written
    assert doc.locate(("spec", "stable")).line == 15
