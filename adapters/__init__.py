"""The outside world, one module per system.

Metric sources (Prometheus, the embedded scraper) answer queries; traffic adapters (Envoy, NGINX,
HAProxy, Kubernetes, cloud load balancers, a plain file) set, read and verify weights; the Grafana
adapter pushes dashboards. Adapters may import ``trimtab.slo`` and never each other.
"""

__all__: list[str] = []
