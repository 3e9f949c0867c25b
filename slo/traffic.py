"""Traffic weights as every adapter handles them: validation, scales, and the errors adapters raise.

Weights in trimtab are integer percents summing to 100 over exactly a route's backends
(:data:`~trimtab.slo.ports.Weights`). :func:`validate_weights` checks that and says what is
wrong; :func:`to_scale` and :func:`from_scale` translate to and from a proxy's own scale
(HAProxy 0–256, ALB 0–999, Envoy any total) by largest-remainder apportionment, so the scaled
weights keep the proportions, a drained backend stays at exactly 0, and reading back what was
written gives the same percents: ``from_scale(to_scale(w, total)) == w`` for every valid ``w``
and every ``total >= 100``.

Why the round trip is exact: ``to_scale`` gives each backend ``floor(w·T/100)`` and hands the
units left over to the largest fractional parts ``f``. Reading back, a backend rounded down by
``f`` comes to ``w − f·100/T`` (fractional part ``1 − f·100/T``) and one rounded up by ``1 − g``
to ``w + (1 − g)·100/T`` (fractional part ``(1 − g)·100/T``). Every rounded-up ``g`` is at least
every rounded-down ``f``, so with ``100/T ≤ 1`` the rounded-down backends have the strictly
larger fractional parts and are exactly the ones ``from_scale`` rounds up again.

Errors, with retriability in the type (a caller never parses a message to decide)::

    TrimtabError                      (trimtab.slo.errors)
    ├── WeightsError                  also a ValueError: the weights asked for are not valid for
    │                                 the route; the caller's mistake, nothing was changed
    └── TrafficError                  an adapter could not set, read or verify weights
        ├── TransientTrafficError     may succeed if tried again: retry with backoff
        │                             (``delay``: the adapter's hint, in seconds, or None)
        └── PermanentTrafficError     will not succeed until a person acts (wrong
                                      configuration, permissions, a hand-edited file that no
                                      longer parses): hold the weights and alert

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import TrimtabError

__all__ = [
    "PERCENT",
    "PermanentTrafficError",
    "TrafficError",
    "TransientTrafficError",
    "WeightsError",
    "from_scale",
    "to_scale",
    "validate_weights",
]

PERCENT = 100
"""What trimtab's weights sum to."""

_SHOWN = 8  # backends quoted in a message before it is cut short


class WeightsError(TrimtabError, ValueError):
    """Weights that are not integer percents summing to 100 over exactly the route's backends."""


class TrafficError(TrimtabError):
    """An adapter could not set, read or verify a route's weights."""


class TransientTrafficError(TrafficError):
    """A failure that may pass (a timeout, a refused connection, throttling): retry with backoff.

    ``delay`` is the adapter's hint of how long to wait, in seconds (``Retry-After``), or
    ``None`` to let the caller's backoff decide.
    """

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentTrafficError(TrafficError):
    """A failure retrying will not fix (configuration, permissions, an unreadable route).

    The controller holds the weights where they are and alerts; a person has to act.
    """


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(names: Iterable[object]) -> str:
    listed = sorted(names, key=str)
    shown = ", ".join(repr(n) for n in listed[:_SHOWN])
    return shown + (f" and {len(listed) - _SHOWN} more" if len(listed) > _SHOWN else "")


def _show(weights: Mapping[str, object]) -> str:
    items = sorted(weights.items(), key=lambda kv: str(kv[0]))
    shown = ", ".join(f"{k}={v!r}" for k, v in items[:_SHOWN])
    return shown + (", …" if len(items) > _SHOWN else "")


def validate_weights(weights: Mapping[str, int], backends: Iterable[str]) -> dict[str, int]:
    """``weights`` as a plain dict in ``backends`` order, if they are valid for the route.

    Valid: exactly one weight per backend of ``backends``, each an ``int`` (not a ``bool``, not
    a ``float``) from 0 to 100, summing to 100. Otherwise raises :class:`WeightsError` (a
    ``ValueError``) naming every problem found: missing and unknown backends, out-of-range or
    non-integer weights, and the sum.
    """
    if not isinstance(weights, Mapping):
        raise WeightsError(
            f"weights must be a mapping of backend to percent, not {type(weights).__name__}"
        )
    route = list(dict.fromkeys(backends))
    if not route:
        raise WeightsError("a route needs at least one backend")
    known = set(route)
    problems: list[str] = []
    missing = [b for b in route if b not in weights]
    unknown = [k for k in weights if k not in known]
    if missing or unknown:
        parts = [f"missing {_names(missing)}"] if missing else []
        parts += [f"unknown {_names(unknown)}"] if unknown else []
        problems.append(
            f"weights must name exactly the route's backends ({_names(route)}): " + "; ".join(parts)
        )
    for key, value in weights.items():
        if not _is_int(value):
            problems.append(
                f"the weight of {key!r} must be an integer from 0 to 100, not "
                f"{type(value).__name__} {value!r}"
            )
        elif not 0 <= value <= PERCENT:
            problems.append(f"the weight of {key!r} must be from 0 to 100, not {value}")
    if not problems:
        total = sum(weights.values())
        if total != PERCENT:
            problems.append(f"weights must sum to 100, not {total} ({_show(weights)})")
    if problems:
        raise WeightsError("invalid weights: " + "; ".join(problems))
    return {b: weights[b] for b in route}


def _apportion(parts: Mapping[str, int], total: int) -> dict[str, int]:
    """``total`` split in proportion to ``parts`` by largest remainder, in integers.

    Exact integer arithmetic; leftover units go to the largest remainders, ties to the backend
    whose name sorts first, so the answer does not depend on the mapping's order. A part of 0
    gets exactly 0, and a part equal to the whole gets exactly ``total``.
    """
    whole = sum(parts.values())
    floors = {k: v * total // whole for k, v in parts.items()}
    leftover = total - sum(floors.values())
    ranked = sorted(parts, key=lambda k: (-(parts[k] * total % whole), k))
    for key in ranked[:leftover]:
        floors[key] += 1
    return floors


def to_scale(weights: Mapping[str, int], total: int) -> dict[str, int]:
    """Percent ``weights`` as integers summing to ``total`` (a proxy's scale), in proportion.

    ``weights`` must be valid percents over their own keys (see :func:`validate_weights`);
    ``total`` must be at least 100, the smallest scale that keeps every percent apart, so that
    :func:`from_scale` gives back exactly ``weights``. Raises :class:`WeightsError` otherwise.
    """
    checked = validate_weights(weights, list(weights) if isinstance(weights, Mapping) else ())
    if not _is_int(total) or total < PERCENT:
        raise WeightsError(
            f"a scale's total must be an integer of at least 100, not {total!r}: a smaller "
            "scale cannot tell every percent apart"
        )
    return _apportion(checked, total)


def from_scale(scaled: Mapping[str, int]) -> dict[str, int]:
    """Weights on a proxy's scale (any non-negative integers) as trimtab percents.

    Exactly the inverse of :func:`to_scale` for the weights it produced, whatever the total.
    Weights set by someone else are rounded to the nearest percents that sum to 100 (largest
    remainder; ``{a: 1, b: 1, c: 1}`` gives ``{a: 34, b: 33, c: 33}``), so a backend with a
    tiny share of a large scale may read as 0. Raises :class:`WeightsError` for negative or
    non-integer weights, and when they sum to 0 (no backend takes traffic, which percents
    summing to 100 cannot express).
    """
    if not isinstance(scaled, Mapping) or not scaled:
        raise WeightsError("a route needs at least one backend")
    bad = [f"{k}={v!r}" for k, v in scaled.items() if not _is_int(v) or v < 0]
    if bad:
        raise WeightsError(
            "weights on a proxy's scale must be non-negative integers, not " + ", ".join(bad)
        )
    if sum(scaled.values()) == 0:
        raise WeightsError(
            f"every weight is 0 ({_show(scaled)}): no backend takes traffic, which trimtab's "
            "percent weights cannot express"
        )
    return _apportion(scaled, PERCENT)
