"""Equal configuration blocks of many documents are kept once, unequal ones apart."""

from __future__ import annotations

from trimtab.slo import load_text

SLO = """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99.9
  backendLabel: version
  indicator: {errorRatio: {errors: 'e{s="{{service}}"}', total: 't{s="{{service}}"}'}}
"""
ROLLOUT = """---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  slos: [{{name: errors, params: {{service: {name}}}}}]
  stable: v1
  canary: v2
  route: {{file: {{path: /w/{name}.json}}}}
  steps: [{{weight: {first}, hold: 5m}}, {{weight: 100}}]
  {guardrails}
"""


def rollout(name: str, first: int = 10, guardrails: str = "") -> str:
    return ROLLOUT.format(name=name, first=first, guardrails=guardrails)


def test_equal_blocks_are_one_object_and_unequal_ones_are_not() -> None:
    config = load_text(SLO + rollout("a") + rollout("b") + rollout("c", first=20), "fleet.yaml")
    a, b, c = (config.rollouts[n].spec for n in "abc")
    assert a.steps[0] is b.steps[0]
    assert a.steps[1] is b.steps[1] is c.steps[1]
    assert a.steps[0] is not c.steps[0]
    assert c.steps[0].weight == 20
    assert a.analysis is b.analysis
    assert a.slos[0] is not b.slos[0]  # their params differ
    assert a.slos[0].params == {"service": "a"}
    assert b.slos[0].params == {"service": "b"}
    assert a.route.file is not None
    assert a.route.file.path == "/w/a.json"


def test_a_block_written_out_is_not_one_left_to_its_defaults() -> None:
    given = "guardrails: {maxStep: 25, minInterval: 1m, maxShiftsPerHour: 12}"
    config = load_text(SLO + rollout("a") + rollout("b", guardrails=given), "fleet.yaml")
    a, b = config.rollouts["a"].spec.guardrails, config.rollouts["b"].spec.guardrails
    assert a == b  # the defaults, written out
    assert a is not b
    assert a.model_fields_set == set()
    assert b.model_fields_set == {"max_step", "min_interval", "max_shifts_per_hour"}


def test_distinct_blocks_share_their_set_of_given_fields_and_copies_do_not() -> None:
    config = load_text(SLO + rollout("a") + rollout("b"), "fleet.yaml")
    a, b = config.rollouts["a"], config.rollouts["b"]
    assert a.metadata is not b.metadata
    assert a.metadata.model_fields_set is b.metadata.model_fields_set
    copied = a.metadata.model_copy(update={"name": "c"})
    assert copied.model_fields_set is not a.metadata.model_fields_set
    assert a.metadata.model_fields_set == {"name"}


def test_a_configuration_can_forget_its_sources_once_wired() -> None:
    config = load_text(SLO + rollout("a"), "fleet.yaml")
    assert config.origin("Rollout", "a").file == "fleet.yaml"
    config.forget_sources()
    assert config.origins == {}
    assert config.rollouts["a"].spec.slos[0].params == {"service": "a"}  # the models stay
