"""The configuration language: one pydantic model per kind of DESIGN.md section 3.

Models check shapes and single fields (types, ranges, name patterns, unknown keys). Rules that
relate several fields or documents (steps ending at 100, thresholds in order, references between
documents) live in :mod:`trimtab.slo.checks`, where they can point at the exact field.

YAML keys are camelCase; Python attributes are snake_case.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .durations import Duration, parse_duration
from .names import (
    check_backend,
    check_dns_label,
    check_host_port,
    check_label_name,
    check_object_name,
    check_proxy_name,
)

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

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Model(BaseModel):
    """Base of every configuration model: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        allow_inf_nan=False,
    )


def _seconds_or_number(value: Any) -> Any:
    """A threshold written as a duration (``250ms``) becomes seconds; numbers stay numbers."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(
                f"expected a number or a duration such as 250ms, got {value!r}"
            ) from None
    return value


ThresholdValue = Annotated[float, BeforeValidator(_seconds_or_number)]
"""A number, or a duration string meaning seconds (for latency values)."""

ObjectName = Annotated[
    str,
    AfterValidator(check_object_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}),
]
Backend = Annotated[str, AfterValidator(check_backend)]
LabelName = Annotated[str, AfterValidator(check_label_name)]
ProxyName = Annotated[str, AfterValidator(check_proxy_name)]
DnsLabel = Annotated[str, AfterValidator(check_dns_label)]
HostPort = Annotated[str, AfterValidator(check_host_port)]
PositiveDuration = Annotated[Duration, Field(gt=0)]


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


class Indicator(Model):
    """Exactly one of the indicator kinds."""

    error_ratio: ErrorRatioIndicator | None = None
    latency: LatencyIndicator | None = None
    quantile: QuantileIndicator | None = None
    gauge: GaugeIndicator | None = None
    events: EventsIndicator | None = None
    raw: RawIndicator | None = None
    preset: PresetIndicator | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Indicator:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            kinds = ", ".join(f.alias or n for n, f in type(self).model_fields.items())
            raise ValueError(f"give exactly one indicator kind of: {kinds}")
        return self

    @property
    def kind(self) -> str:
        """The YAML name of the kind given (``errorRatio``, ``latency``, …)."""
        for name, info in type(self).model_fields.items():
            if getattr(self, name) is not None:
                return info.alias or name
        raise AssertionError("validated indicator has a kind")


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

    @property
    def value(self) -> float:
        """The threshold number, whatever comparison it uses."""
        for v in (self.burn_rate, self.above, self.below):
            if v is not None:
                return v
        raise AssertionError("validated threshold has a value")

    @property
    def comparison(self) -> Literal["burnRate", "above", "below"]:
        if self.burn_rate is not None:
            return "burnRate"
        return "above" if self.above is not None else "below"


class HealthSpec(Model):
    """The shared health definition: what DEGRADED and UNAVAILABLE mean for this SLO."""

    degraded: LevelThreshold
    unavailable: LevelThreshold


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
    labels: dict[LabelName, str] = Field(default_factory=dict)
    alerting: Alerting = Field(default_factory=Alerting)


class SLO(Model):
    api_version: Literal["trimtab.dev/v1alpha1"]
    kind: Literal["SLO"]
    metadata: Metadata
    spec: SLOSpec


# --------------------------------------------------------------------------------------- routes


class EnvoyVirtualHost(Model):
    name: ProxyName
    domains: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9*.:\[\]-]+$")]] = Field(
        default_factory=lambda: ["*"], min_length=1
    )


class EnvoyRoute(Model):
    rds_path: str = Field(min_length=1)
    route_config: ProxyName
    virtual_host: EnvoyVirtualHost
    clusters: dict[Backend, ProxyName] = Field(min_length=1)
    admin: str = Field(default="http://127.0.0.1:9901", pattern=r"^https?://[^\s/]+/?$")


class NginxRoute(Model):
    upstream_path: str = Field(min_length=1)
    upstream: ProxyName
    servers: dict[Backend, list[HostPort]] = Field(min_length=1)
    test: list[str] = Field(default_factory=lambda: ["nginx", "-t"], min_length=1)
    reload: list[str] = Field(default_factory=lambda: ["nginx", "-s", "reload"], min_length=1)

    @field_validator("servers")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for backend, servers in value.items():
            if not servers:
                raise ValueError(f"backend {backend!r} needs at least one host:port")
        return value


class HAProxyRoute(Model):
    socket: str = Field(pattern=r"^(tcp://[A-Za-z0-9.\-\[\]:]+:\d+|/\S+|[^\s:]\S*)$")
    backend: ProxyName
    servers: dict[Backend, list[ProxyName]] = Field(min_length=1)


class FileRoute(Model):
    path: str = Field(min_length=1)


class GatewayApiRoute(Model):
    namespace: DnsLabel = "default"
    http_route: DnsLabel
    rule: int = Field(default=0, ge=0)
    backend_refs: dict[Backend, DnsLabel] = Field(min_length=1)


class IstioDestination(Model):
    host: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    subset: DnsLabel | None = None


class IstioRoute(Model):
    namespace: DnsLabel = "default"
    virtual_service: DnsLabel
    route: str | None = None
    destinations: dict[Backend, IstioDestination] = Field(min_length=1)


class IngressNginxRoute(Model):
    namespace: DnsLabel = "default"
    canary_ingress: DnsLabel


class AwsAlbRoute(Model):
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    listener_arn: str | None = Field(default=None, pattern=r"^arn:aws[-a-z]*:elasticloadbalancing:")
    rule_arn: str | None = Field(default=None, pattern=r"^arn:aws[-a-z]*:elasticloadbalancing:")
    target_groups: dict[Backend, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _listener_or_rule(self) -> AwsAlbRoute:
        if (self.listener_arn is None) == (self.rule_arn is None):
            raise ValueError("give exactly one of 'listenerArn' or 'ruleArn'")
        return self


class Route53Route(Model):
    hosted_zone_id: str = Field(pattern=r"^[A-Z0-9]{1,32}$")
    record_name: str = Field(pattern=r"^[A-Za-z0-9*_.-]+$")
    record_type: Literal["A", "AAAA", "CNAME"] = "A"
    set_identifiers: dict[Backend, str] = Field(min_length=1)


class Route(Model):
    """Exactly one adapter block: where the weights are applied."""

    envoy: EnvoyRoute | None = None
    nginx: NginxRoute | None = None
    haproxy: HAProxyRoute | None = None
    file: FileRoute | None = None
    gateway_api: GatewayApiRoute | None = None
    istio: IstioRoute | None = None
    ingress_nginx: IngressNginxRoute | None = None
    aws_alb: AwsAlbRoute | None = None
    route53: Route53Route | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Route:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            kinds = ", ".join(f.alias or n for n, f in type(self).model_fields.items())
            raise ValueError(f"give exactly one adapter block of: {kinds}")
        return self

    @property
    def adapter(self) -> str:
        """The YAML name of the adapter block given."""
        for name, info in type(self).model_fields.items():
            if getattr(self, name) is not None:
                return info.alias or name
        raise AssertionError("validated route has an adapter")

    def backends(self) -> set[str] | None:
        """The backends this route block maps, or ``None`` when it maps none itself."""
        block = getattr(self, _snake(self.adapter))
        for attr in (
            "clusters",
            "servers",
            "backend_refs",
            "destinations",
            "target_groups",
            "set_identifiers",
        ):
            if hasattr(block, attr):
                return set(getattr(block, attr))
        return None


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()


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


class LeaderElection(Model):
    file: FileLeaderElection | None = None
    kubernetes: KubernetesLeaderElection | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LeaderElection:
        if (self.file is None) == (self.kubernetes is None):
            raise ValueError("give exactly one of 'file' or 'kubernetes'")
        return self


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
