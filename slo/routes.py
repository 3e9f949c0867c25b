"""Route blocks: where a Rollout's or Balance's weights are applied (DESIGN.md section 7).

One model per adapter; ``Route`` holds exactly one. Every name that reaches a proxy's config
(clusters, upstreams, servers, Kubernetes objects) is validated by a strict pattern here.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .modelbase import Backend, DnsLabel, HostPort, Model, OneOf, ProxyName

__all__ = [
    "AwsAlbRoute",
    "EnvoyRoute",
    "EnvoyVirtualHost",
    "FileRoute",
    "GatewayApiRoute",
    "HAProxyRoute",
    "IngressNginxRoute",
    "IstioDestination",
    "IstioRoute",
    "NginxRoute",
    "Route",
    "Route53Route",
]


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
    # NGINX's pid file: lets the adapter see the old workers retire after a reload, so a change
    # is verified when NGINX serves it (without it, verification waits a fixed settle time).
    pid_file: str | None = Field(default=None, min_length=1)

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


class Route(OneOf):
    """Exactly one adapter block: where the weights are applied."""

    what: ClassVar[str] = "adapter block"

    envoy: EnvoyRoute | None = None
    nginx: NginxRoute | None = None
    haproxy: HAProxyRoute | None = None
    file: FileRoute | None = None
    gateway_api: GatewayApiRoute | None = None
    istio: IstioRoute | None = None
    ingress_nginx: IngressNginxRoute | None = None
    aws_alb: AwsAlbRoute | None = None
    route53: Route53Route | None = None

    @property
    def adapter(self) -> str:
        """The YAML name of the adapter block given (``envoy``, ``gatewayApi``, …)."""
        return self.chosen[0]

    def backends(self) -> set[str] | None:
        """The backends this route block maps, or ``None`` when it maps none itself."""
        block = self.chosen[1]
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
