"""trimtab keeps production traffic where the SLOs say it is safe.

The distribution maps four top-level folders into this namespace:

- ``trimtab.slo`` — what healthy means (pure: models, YAML, PromQL, health, rules);
- ``trimtab.controller`` — when and how far to move traffic (cycle, policies, CLI);
- ``trimtab.adapters`` — the outside world (metric sources, proxies, Grafana);
- ``trimtab.dashboards`` — Grafana dashboards generated from the same models.

Imports flow one way: controller → adapters → slo.
"""

__version__ = "0.1.0"
