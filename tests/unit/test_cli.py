"""The command line as a user runs it: the installed console script, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PEER_SPECS = REPO.parent / "shared" / "peer-specs"
TRIMTAB = str(Path(sys.executable).parent / "trimtab")
PEER_FILES = sorted(
    p
    for p in [*PEER_SPECS.glob("sloth/*.yml"), *PEER_SPECS.glob("openslo/**/*.yaml")]
    if p.is_file()
)


def trimtab(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRIMTAB, *map(str, args)], capture_output=True, text=True, check=False, cwd=REPO
    )


def test_validate_examples_exits_zero_and_counts_documents() -> None:
    result = trimtab("validate", "-f", "examples/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("valid: 6 SLOs, 2 Rollouts, 1 Balance, 1 Controller")


def test_validate_json_output() -> None:
    result = trimtab("validate", "-f", "examples/checkout", "-o", "json")
    assert json.loads(result.stdout) == {
        "valid": True,
        "slos": 5,
        "rollouts": 1,
        "balances": 1,
        "controller": True,
    }


def test_usage_errors_exit_two() -> None:
    assert trimtab("validate", "--no-such-flag").returncode == 2
    assert trimtab("validate").returncode == 2
    assert trimtab("no-such-command").returncode == 2


def test_invalid_file_exits_one_and_shows_the_offending_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: trimtab.dev/v1alpha1\nkind: Balance\nmetadata: {name: Bad_Name}\nspec: {}\n"
    )
    result = trimtab("validate", "-f", bad)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "metadata.name" in line)
    assert lines[at].startswith(f"{bad}:3:18: metadata.name: invalid name 'Bad_Name'")
    assert "metadata: {name: Bad_Name}" in lines[at + 1]
    assert lines[at + 2].index("^") == lines[at + 1].index("Bad_Name")
    assert f"{bad}:4:1: spec: required field is missing" not in result.stderr
    assert any(line.startswith(f"{bad}:4:1: spec.slos:") for line in lines)


@pytest.mark.parametrize("peer", PEER_FILES, ids=lambda p: str(p.relative_to(PEER_SPECS)))
def test_convert_prints_trimtab_yaml_that_validates(peer: Path, tmp_path: Path) -> None:
    result = trimtab("convert", "-f", peer)
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert documents
    assert {d["apiVersion"] for d in documents} == {"trimtab.dev/v1alpha1"}
    converted = tmp_path / "converted.yaml"
    converted.write_text(result.stdout)
    check = trimtab("validate", "-f", converted)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"valid: {len(documents)} SLO")


def test_peer_specs_are_found() -> None:
    assert len(PEER_FILES) >= 10, f"expected the peer specs under {PEER_SPECS}"


def test_convert_without_peer_documents_fails() -> None:
    result = trimtab("convert", "-f", "examples/gitops")
    assert result.returncode == 1
    assert "no OpenSLO or Sloth SLOs" in result.stderr


def test_rules_writes_a_rule_file(tmp_path: Path) -> None:
    target = tmp_path / "rules.yaml"
    result = trimtab("rules", "-f", "examples/checkout", "-o", target)
    assert result.returncode == 0, result.stderr
    groups = yaml.safe_load(target.read_text())["groups"]
    assert [g["name"] for g in groups] == sorted(g["name"] for g in groups)
    assert "trimtab-slo-checkout-errors" in {g["name"] for g in groups}


def test_schema_is_json_that_validates_an_example() -> None:
    result = trimtab("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    document = next(yaml.safe_load_all((REPO / "examples/checkout/rollout.yaml").read_text()))
    jsonschema.Draft202012Validator(schema).validate(document)
