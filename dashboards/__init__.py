"""Grafana dashboards generated from the same SLO models the controller acts on."""

__all__: list[str] = []
