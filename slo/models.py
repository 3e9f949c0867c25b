"""The configuration language: one pydantic model per kind of DESIGN.md section 3.

Models check shapes and single fields (types, ranges, name patterns, unknown keys). Rules that
relate several fields or documents (steps ending at 100, thresholds in order, references between
documents) live in :mod:`trimtab.slo.checks`, where they can point at the exact field.

YAML keys are camelCase; Python attributes are snake_case.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, ClassVar, Literal

from pydantic import (
    Field,
    model_validator,
)

from .modelbase import (
    Backend,
    DnsLabel,
    HostPort,
    LabelName,
    Model,
    ObjectName,
    OneOf,
    PositiveDuration,
    ThresholdValue,
)
from .routes import Route

__all__ = [
    "API_VERSION",
    "SLO",
    "UNIT_PER_SECOND",
    "Analysis",
    "Balance",
    "BalanceGuardrails",
    "BalanceSpec",
    "Controller",
    "ControllerSpec",
    "Drain",
    "ErrorRatioIndicator",
    "EventsIndicator",
    "GaugeIndicator",
    "HealthSpec",
    "HistogramUnit",
    "Indicator",
    "LatencyIndicator",
    "LevelThreshold",
    "Metadata",
    "NoData",
    "PresetIndicator",
    "QuantileIndicator",
    "RawIndicator",
    "Rollout",
    "RolloutGuardrails",
    "RolloutSpec",
    "Route",
    "SLORef",
    "SLOSpec",
    "Step",
]

API_VERSION = "trimtab.dev/v1alpha1"


class Metadata(Model):
    name: ObjectName
    display_name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------------- indicators


class ErrorRatioIndicator(Model):
    """SLI = rate(errors) / rate(total), from counter selectors; or 1 − rate(good)/rate(total)."""

    errors: str | None = None
    good: str | None = None
    total: str

    @model_validator(mode="after")
    def _one_of_errors_or_good(self) -> ErrorRatioIndicator:
        if (self.errors is None) == (self.good is None):
            raise ValueError("give exactly one of 'errors' or 'good' beside 'total'")
        return self


HistogramUnit = Literal["seconds", "milliseconds"]
"""The unit of a histogram's bucket bounds; trimtab's thresholds and values are in seconds."""

UNIT_PER_SECOND = {"seconds": 1.0, "milliseconds": 1000.0}


class LatencyIndicator(Model):
    """Share of requests slower than ``threshold``, from the histogram's ``le`` bucket."""

    histogram: str
    selector: str = ""
    threshold: ThresholdValue = Field(gt=0, description="seconds, or a duration such as 250ms")
    unit: HistogramUnit = "seconds"


class QuantileIndicator(Model):
    """A quantile (e.g. p95) of a histogram via ``histogram_quantile``; judged by value."""

    histogram: str
    selector: str = ""
    quantile: float = Field(gt=0, lt=1)
    unit: HistogramUnit = "seconds"


class GaugeIndicator(Model):
    """A gauge such as queue depth, aggregated over the window; judged by value."""

    query: str
    aggregate: Literal["max", "avg", "last"] = "max"


class EventsIndicator(Model):
    """Full PromQL for error (or good) and total events, with ``{{window}}`` for the range.

    This is Sloth's ``events`` SLI and OpenSLO's ratio metric: the queries do their own
    aggregation, so they should group by the SLO's ``backendLabel`` when targets use it.
    """

    error_query: str | None = None
    good_query: str | None = None
    total_query: str

    @model_validator(mode="after")
    def _one_of_error_or_good(self) -> EventsIndicator:
        if (self.error_query is None) == (self.good_query is None):
            raise ValueError("give exactly one of 'errorQuery' or 'goodQuery' beside 'totalQuery'")
        return self


class RawIndicator(Model):
    """Full PromQL giving the error ratio itself over ``{{window}}`` (Sloth's ``raw`` SLI)."""

    error_ratio_query: str


PresetName = Literal["otel-http", "envoy", "haproxy", "istio", "nginx-ingress"]
PresetSignal = Literal["errors", "latency", "quantile", "queue"]


class PresetIndicator(Model):
    """A well-known metric family; expands to one of the plain indicators (see ``presets``)."""

    name: PresetName
    signal: PresetSignal = "errors"
    selector: str = ""
    threshold: ThresholdValue | None = Field(default=None, gt=0)
    quantile: float | None = Field(default=None, gt=0, lt=1)


class Indicator(OneOf):
    """Exactly one of the indicator kinds."""

    what: ClassVar[str] = "indicator kind"

    error_ratio: ErrorRatioIndicator | None = None
    latency: LatencyIndicator | None = None
    quantile: QuantileIndicator | None = None
    gauge: GaugeIndicator | None = None
    events: EventsIndicator | None = None
    raw: RawIndicator | None = None
    preset: PresetIndicator | None = None

    @property
    def kind(self) -> str:
        """The YAML name of the kind given (``errorRatio``, ``latency``, …)."""
        return self.chosen[0]


# ------------------------------------------------------------------------------------- health


class LevelThreshold(Model):
    """Budget-based level: exceeded when the burn rate is above ``burnRate`` in every window."""

    burn_rate: float | None = Field(default=None, gt=0)
    above: ThresholdValue | None = None
    below: ThresholdValue | None = None
    windows: list[PositiveDuration] = Field(default_factory=lambda: [300.0], min_length=1)

    @model_validator(mode="after")
    def _one_comparison(self) -> LevelThreshold:
        given = [v for v in (self.burn_rate, self.above, self.below) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'burnRate', 'above' or 'below'")
        return self

    @cached_property
    def value(self) -> float:
        """The threshold number, whatever comparison it uses (computed once: judged often)."""
        for v in (self.burn_rate, self.above, self.below):
            if v is not None:
                return v
        raise AssertionError("validated threshold has a value")

    @cached_property
    def comparison(self) -> Literal["burnRate", "above", "below"]:
        if self.burn_rate is not None:
            return "burnRate"
        return "above" if self.above is not None else "below"


class HealthSpec(Model):
    """The shared health definition: what DEGRADED and UNAVAILABLE mean for this SLO."""

    degraded: LevelThreshold
    unavailable: LevelThreshold

    @cached_property
    def windows(self) -> tuple[float, ...]:
        """Every window either level names, shortest first (computed once)."""
        return tuple(sorted(set(self.degraded.windows) | set(self.unavailable.windows)))


DEFAULT_BUDGET_HEALTH = HealthSpec(
    degraded=LevelThreshold(burn_rate=6, windows=[300.0, 1800.0]),
    unavailable=LevelThreshold(burn_rate=14.4, windows=[60.0, 300.0]),
)


class AlertSeverity(Model):
    disable: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Alerting(Model):
    """Optional alert naming and labels (Sloth's ``alerting`` block maps here)."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    page: AlertSeverity = Field(default_factory=AlertSeverity)
    ticket: AlertSeverity = Field(default_factory=AlertSeverity)


class SLOSpec(Model):
    service: str = Field(min_length=1)
    description: str | None = None
    objective: float | None = Field(
        default=None,
        gt=0,
        lt=100,
        description="percent of good events over `window`; required for budget-based indicators",
    )
    window: PositiveDuration = 30 * 86400.0
    backend_label: LabelName | None = None
    indicator: Indicator
    health: HealthSpec | None = None
    min_events: int = Field(default=50, ge=0)
    min_bad_events: int = Field(
        default=4,
        ge=0,
        description="budget-based: a window counts as exceeded only with at least this many "
        "bad events in it (a few bad requests never make a backend unhealthy)",
    )
    labels: dict[LabelName, str] = Field(default_factory=dict)
    alerting: Alerting = Field(default_factory=Alerting)

    @cached_property
    def plain(self) -> Indicator:
        """The indicator with any preset expanded (computed once: cycles ask it per backend)."""
        from .presets import resolve  # presets builds on this module

        return resolve(self.indicator)


class SLO(Model):
    api_version: Literal["trimtab.dev/v1alpha1"]
    kind: Literal["SLO"]
    metadata: Metadata
    spec: SLOSpec


# ------------------------------------------------------------------------------ rollout/balance


class SLORef(Model):
    name: ObjectName
    params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict
    )


class Step(Model):
    weight: int = Field(ge=1, le=100)
    hold: PositiveDuration | None = None


class NoData(Model):
    hold: bool = True
    rollback_after: PositiveDuration = 600.0


class Analysis(Model):
    interval: PositiveDuration = 30.0
    baseline: bool = True
    failure_limit: int = Field(default=2, ge=0)
    no_data: NoData = Field(default_factory=NoData)
    pause_timeout: PositiveDuration = Field(
        default=3600.0, description="a Paused rollout rolls back after this long"
    )
    step_timeout: PositiveDuration = Field(
        default=3600.0, description="a step that has not moved on after this long rolls back"
    )


class RolloutGuardrails(Model):
    max_step: int = Field(default=25, ge=1, le=100)
    min_interval: PositiveDuration = 60.0
    max_shifts_per_hour: int = Field(default=12, ge=1)


class RolloutSpec(Model):
    slos: list[SLORef] = Field(min_length=1)
    stable: Backend
    canary: Backend
    route: Route
    steps: list[Step] = Field(min_length=1)
    analysis: Analysis = Field(default_factory=Analysis)
    guardrails: RolloutGuardrails = Field(default_factory=RolloutGuardrails)
    dry_run: bool = False


class Rollout(Model):
    api_version: Literal["trimtab.dev/v1alpha1"]
    kind: Literal["Rollout"]
    metadata: Metadata
    spec: RolloutSpec


class Drain(Model):
    degraded: int = Field(default=50, ge=0, le=100)
    unavailable: int = Field(default=100, ge=0, le=100)


class BalanceGuardrails(Model):
    max_step: int = Field(default=20, ge=1, le=100)
    min_interval: PositiveDuration = 60.0
    max_shifts_per_hour: int = Field(default=12, ge=1)
    max_drain: int = Field(default=50, ge=0, le=100)


class BalanceSpec(Model):
    slos: list[SLORef] = Field(min_length=1)
    backends: dict[Backend, Annotated[int, Field(ge=0, le=100)]] = Field(min_length=2)
    route: Route
    drain: Drain = Field(default_factory=Drain)
    restore_after: PositiveDuration = 300.0
    guardrails: BalanceGuardrails = Field(default_factory=BalanceGuardrails)
    dry_run: bool = False


class Balance(Model):
    api_version: Literal["trimtab.dev/v1alpha1"]
    kind: Literal["Balance"]
    metadata: Metadata
    spec: BalanceSpec


# ----------------------------------------------------------------------------------- controller


class TLS(Model):
    ca_file: str | None = None
    insecure_skip_verify: bool = False


class BasicAuth(Model):
    username: str
    password_file: str | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_password_source(self) -> BasicAuth:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("give exactly one of 'passwordFile' or 'passwordEnv'")
        return self


class PrometheusSource(Model):
    """Any Prometheus-compatible API. Secrets come from files or the environment, never YAML."""

    url: str = Field(pattern=r"^https?://\S+$")
    timeout: PositiveDuration = 10.0
    bearer_token_file: str | None = None
    bearer_token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tls: TLS = Field(default_factory=TLS)


class ScrapeTarget(Model):
    url: str = Field(pattern=r"^https?://\S+$")
    labels: dict[LabelName, str] = Field(default_factory=dict)


class ScrapeSource(Model):
    targets: list[ScrapeTarget] = Field(min_length=1)
    interval: PositiveDuration = 5.0


class Metrics(Model):
    prometheus: PrometheusSource | None = None
    scrape: ScrapeSource | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> Metrics:
        if self.prometheus is not None and self.scrape is not None:
            raise ValueError("give one of 'prometheus' or 'scrape', not both")
        return self


class FileLeaderElection(Model):
    path: str | None = None


class KubernetesLeaderElection(Model):
    namespace: DnsLabel
    lease: DnsLabel


class LeaderElection(OneOf):
    what: ClassVar[str] = "leader election"

    file: FileLeaderElection | None = None
    kubernetes: KubernetesLeaderElection | None = None


class ControllerSpec(Model):
    metrics: Metrics = Field(default_factory=Metrics)
    state_dir: str = ".trimtab"
    listen: HostPort = "127.0.0.1:9464"
    leader_election: LeaderElection = Field(
        default_factory=lambda: LeaderElection(file=FileLeaderElection())
    )
    dry_run: bool = False
    runbook_base_url: str = Field(
        default="https://trimtab.dev/runbooks/", pattern=r"^https?://\S+$"
    )


class ControllerMetadata(Model):
    name: ObjectName = "trimtab"


class Controller(Model):
    api_version: Literal["trimtab.dev/v1alpha1"]
    kind: Literal["Controller"]
    metadata: ControllerMetadata = Field(default_factory=ControllerMetadata)
    spec: ControllerSpec = Field(default_factory=ControllerSpec)
