"""Strict patterns for every name that can reach a proxy's configuration or a query.

A name that reaches an NGINX include, an Envoy RDS file, an HAProxy runtime command or a PromQL
label matcher is checked here first: no config injection through a service or server name.
Each check returns the name unchanged or raises ``ValueError`` saying what is allowed.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "check_backend",
    "check_dns_label",
    "check_host_port",
    "check_label_name",
    "check_object_name",
    "check_proxy_name",
]

_BACKEND = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROXY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


_OBJECT = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_object_name(name: str) -> str:
    """The name of an SLO, Rollout or Balance (``metadata.name``)."""
    if not _OBJECT.fullmatch(name):
        raise ValueError(
            f"invalid name {name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def check_backend(name: str) -> str:
    """A backend: a ``backendLabel`` value such as ``v1`` or ``zone-a``."""
    if not _BACKEND.fullmatch(name):
        raise ValueError(
            f"invalid backend name {name!r}: use 1-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return name


def check_label_name(name: str) -> str:
    """A Prometheus label name."""
    if not _LABEL.fullmatch(name) or name.startswith("__"):
        raise ValueError(
            f"invalid label name {name!r}: expected [A-Za-z_][A-Za-z0-9_]*, not starting with __"
        )
    return name


def check_proxy_name(name: str) -> str:
    """An Envoy cluster/route, NGINX upstream or HAProxy backend/server name."""
    if not _PROXY.fullmatch(name):
        raise ValueError(
            f"invalid proxy object name {name!r}: use letters, digits, '_', '.', ':' or '-' "
            "(at most 128), starting with a letter, digit or '_'"
        )
    return name


def check_dns_label(name: str) -> str:
    """A Kubernetes object name or namespace (RFC 1123 label)."""
    if not _DNS_LABEL.fullmatch(name):
        raise ValueError(
            f"invalid Kubernetes name {name!r}: lowercase letters, digits and '-', at most 63"
        )
    return name


def check_host_port(address: str) -> str:
    """``host:port`` with a hostname, an IPv4 address or a bracketed IPv6 address."""
    host, sep, port = address.rpartition(":")
    valid_port = sep and port.isdigit() and 0 < int(port) < 65536
    if valid_port and host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            valid_port = False
        else:
            return address
    if valid_port and _HOSTNAME.fullmatch(host):
        return address
    raise ValueError(f"invalid address {address!r}: expected host:port such as 10.0.0.1:8080")
