"""When and how far to move traffic: the reconcile cycle, policies, guardrails, state, the
decision record, telemetry, the scheduler and the command line. May import adapters and slo."""

__all__: list[str] = []
